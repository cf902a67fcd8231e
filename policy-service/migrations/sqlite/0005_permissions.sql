-- Permissions: direct grants, pattern (regex) grants, and the policy epoch.
--
-- One table of direct grants for every kind and principal, one of pattern grants,
-- rather than the 16 tables of the system we replace (permissions.md §9.1): the
-- kind is a column. A grant belongs to exactly one user or one group, and goes with
-- it when that row is deleted.
--
-- `grants.kind`: `experiment` (resource = experiment id) or `registered_model`
-- (resource = model name). Prompts are registered models: they share these grants.
-- `grant_patterns.kind`: `experiment`, `registered_model` or `prompt` (prompts have
-- pattern grants of their own); `regex` is matched as Python's `re.match` does
-- (anchored at the start only) against the experiment's or model's name, the
-- lowest `priority` first.
CREATE TABLE grants (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL CHECK (kind IN ('experiment', 'registered_model')),
    resource   TEXT    NOT NULL,
    user_id    INTEGER REFERENCES users(id) ON DELETE CASCADE,
    group_id   INTEGER REFERENCES groups(id) ON DELETE CASCADE,
    permission TEXT    NOT NULL
        CHECK (permission IN ('READ', 'USE', 'EDIT', 'MANAGE', 'NO_PERMISSIONS')),
    CHECK ((user_id IS NULL) <> (group_id IS NULL))
);
-- One grant per kind, resource and principal.
CREATE UNIQUE INDEX grants_user_unique ON grants (kind, resource, user_id)
    WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX grants_group_unique ON grants (kind, resource, group_id)
    WHERE group_id IS NOT NULL;
CREATE INDEX grants_resource ON grants (kind, resource);
CREATE INDEX grants_group_id ON grants (group_id);
CREATE INDEX grants_user_id ON grants (user_id);

CREATE TABLE grant_patterns (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL CHECK (kind IN ('experiment', 'registered_model', 'prompt')),
    regex      TEXT    NOT NULL,
    priority   INTEGER NOT NULL,
    user_id    INTEGER REFERENCES users(id) ON DELETE CASCADE,
    group_id   INTEGER REFERENCES groups(id) ON DELETE CASCADE,
    permission TEXT    NOT NULL
        CHECK (permission IN ('READ', 'USE', 'EDIT', 'MANAGE', 'NO_PERMISSIONS')),
    CHECK ((user_id IS NULL) <> (group_id IS NULL))
);
-- One pattern per kind, regex and principal.
CREATE UNIQUE INDEX grant_patterns_user_unique ON grant_patterns (kind, regex, user_id)
    WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX grant_patterns_group_unique ON grant_patterns (kind, regex, group_id)
    WHERE group_id IS NOT NULL;
CREATE INDEX grant_patterns_group_id ON grant_patterns (group_id);

-- The policy epoch: one row, bumped in the same transaction as every change that can
-- alter a decision (grants, resource events, admin status, group membership,
-- deactivation, user deletion). Replicas share it; the filter drops its cached
-- decisions when it moves.
CREATE TABLE policy_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
INSERT INTO policy_epoch (id, epoch) VALUES (1, 1);
