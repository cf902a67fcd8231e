-- A deactivated user cannot sign in; their sessions and access tokens stop working.
-- Their grants are kept, for when they come back.
ALTER TABLE users ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
