-- Events (a transactional outbox) and their webhook deliveries. An event row
-- is written in the same transaction as the change it reports; deliveries
-- and the JetStream sink read it from here, at least once.

-- Receivers of signed webhooks. `secret` is `whsec_` + base64 of 32 random
-- bytes; it signs every attempt and is never shown again after creation.
CREATE TABLE webhook_endpoints (
    id          BIGSERIAL   PRIMARY KEY,
    url         TEXT        NOT NULL CHECK (url ~ '^https?://'),
    events      TEXT[]      NOT NULL CHECK (
                    cardinality(events) > 0
                    AND events <@ ARRAY['order.created', 'order.status_changed', 'reservation.created',
                                        'reservation.confirmed', 'reservation.released',
                                        'reservation.expired', 'product.sold_out',
                                        'product.back_in_stock', 'ping']),
    description TEXT,
    secret      TEXT        NOT NULL CHECK (secret LIKE 'whsec\_%'),
    is_active   BOOLEAN     NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
SELECT diesel_manage_updated_at('webhook_endpoints');

-- Ids are UUIDv7: their order is the order in which they were written, so
-- pruning walks the primary key.
CREATE TABLE events (
    id          UUID        PRIMARY KEY,
    type        TEXT        NOT NULL CHECK (type IN (
                    'order.created', 'order.status_changed', 'reservation.created',
                    'reservation.confirmed', 'reservation.released', 'reservation.expired',
                    'product.sold_out', 'product.back_in_stock', 'ping')),
    -- The resource as the API shows it, kept verbatim.
    data        JSON        NOT NULL,
    -- The transaction's timestamp: the body's `timestamp`.
    created_at  TIMESTAMPTZ NOT NULL,
    -- Still to be published to NATS JetStream (set when a sink was
    -- configured as the event was written).
    unpublished BOOLEAN     NOT NULL DEFAULT FALSE
);
-- The sink takes the unpublished ones in order.
CREATE INDEX events_unpublished_idx ON events (id) WHERE unpublished;

-- One event still to deliver to one endpoint: the endpoints active and
-- subscribed to the event's type when it was written (or the one a ping
-- names). A delivered one is deleted (its attempts remain); one given up
-- stays as `failed` until its event is pruned.
CREATE TABLE webhook_deliveries (
    event_id        UUID        NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id     BIGINT      NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status          VARCHAR(10) NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'failed')),
    -- Attempts started (a claim counts one before the request is sent).
    attempts        INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When the next attempt is due.
    next_attempt_at TIMESTAMPTZ NOT NULL,
    -- The instance attempting it now keeps the others off until then (not
    -- indexed, so a claim is a heap-only update).
    leased_until    TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (event_id, endpoint_id)
) WITH (fillfactor = 70);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';

-- Every attempt, as the deliveries list shows it.
CREATE TABLE webhook_attempts (
    event_id    UUID        NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id BIGINT      NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    attempt     INTEGER     NOT NULL CHECK (attempt > 0),
    -- NULL when no response came (network error, timeout, refused target).
    status_code SMALLINT,
    error       TEXT,
    duration_ms INTEGER     NOT NULL CHECK (duration_ms >= 0),
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (event_id, endpoint_id, attempt)
);
CREATE INDEX webhook_attempts_endpoint_idx ON webhook_attempts (endpoint_id, created_at DESC);
