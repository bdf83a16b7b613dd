CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    email         VARCHAR(255) NOT NULL UNIQUE,
    -- NULL for accounts created through OAuth that never set a password.
    password_hash VARCHAR(255),
    name          VARCHAR(100) NOT NULL,
    role          VARCHAR(20)  NOT NULL DEFAULT 'user'
                  CHECK (role IN ('user', 'admin', 'super_admin')),
    is_active     BOOLEAN      NOT NULL DEFAULT TRUE,
    google_id     VARCHAR(255),
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    -- Emails are stored normalised (trimmed, lower-cased); with this check the
    -- plain UNIQUE above is case-insensitive, and lookups by email use it.
    CONSTRAINT users_email_lowercase CHECK (email = lower(email))
);
CREATE UNIQUE INDEX users_google_id_key ON users (google_id) WHERE google_id IS NOT NULL;
-- Keyset pagination and "newest first" listings.
CREATE INDEX users_created_at_id_idx ON users (created_at DESC, id DESC);
-- Counting super admins when demoting or deleting one.
CREATE INDEX users_role_active_idx ON users (role) WHERE is_active;
SELECT diesel_manage_updated_at('users');

CREATE TABLE refresh_tokens (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Every token issued from one login shares a family; reuse of a spent
    -- token revokes the whole family.
    family_id   UUID        NOT NULL,
    -- SHA-256 of the opaque token; the token itself is never stored.
    token_hash  BYTEA       NOT NULL UNIQUE,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_family_id_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);
