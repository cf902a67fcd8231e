-- Personal access tokens: used as the HTTP Basic password by MLflow clients.
-- Only a SHA-256 of each token is kept; `prefix` (in clear, unique) finds the row,
-- so one hash is compared per check. Revoking deletes the row.
CREATE TABLE access_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    prefix       TEXT    NOT NULL UNIQUE,
    token_hash   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX access_tokens_user_id ON access_tokens (user_id);
