-- The IdP grant behind a session (OIDC_USE_REFRESH_TOKEN): the user's subject at
-- the IdP and the refresh token, sealed with a key derived from SECRET_KEY.
-- Renewal refreshes it and signs the user in again only if the gate still admits.
ALTER TABLE sessions ADD COLUMN idp_subject TEXT;
ALTER TABLE sessions ADD COLUMN idp_refresh_token TEXT;
