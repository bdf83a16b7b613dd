-- One row per OAuth login attempt: single use, valid for 10 minutes. The
-- state itself is only in the user's cookie and the provider's redirect; the
-- table keeps its SHA-256 and the PKCE verifier.
CREATE TABLE oauth_states (
    state_hash    BYTEA PRIMARY KEY,
    pkce_verifier TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    used_at       TIMESTAMPTZ
);
CREATE INDEX oauth_states_created_at_idx ON oauth_states (created_at);
