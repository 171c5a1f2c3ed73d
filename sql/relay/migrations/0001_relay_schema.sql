-- The relay's database: the original service's six tables in schema `relay` of the source
-- Postgres. Applied once by `funnel relay serve` / `funnel run relay` (relay.schema_migrations).
-- Secrets (sGTM api_secret, custom headers, platform tokens) are stored only as Fernet tokens
-- (ENCRYPTION_KEY); CDC carries these columns as they are, so no topic holds a plain secret.

CREATE TABLE relay.storefronts (
    id          serial PRIMARY KEY,
    code        varchar(50)  NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9][a-z0-9_-]*$'),
    name        varchar(200) NOT NULL,
    is_active   boolean      NOT NULL DEFAULT true,
    created_at  timestamptz  NOT NULL DEFAULT now(),
    updated_at  timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE relay.storefront_sgtm_config (
    id                       serial PRIMARY KEY,
    storefront_id            integer      NOT NULL UNIQUE REFERENCES relay.storefronts(id) ON DELETE CASCADE,
    sgtm_url                 varchar(500) NOT NULL,
    client_type              varchar(10)  NOT NULL CHECK (client_type IN ('ga4', 'custom')),
    measurement_id           varchar(50),
    api_secret_encrypted     text,
    custom_endpoint_path     varchar(200) NOT NULL DEFAULT '/collect',
    custom_headers_encrypted text,
    is_active                boolean      NOT NULL DEFAULT true,
    created_at               timestamptz  NOT NULL DEFAULT now(),
    updated_at               timestamptz  NOT NULL DEFAULT now(),
    CHECK (client_type <> 'ga4' OR (measurement_id IS NOT NULL AND api_secret_encrypted IS NOT NULL))
);

CREATE TABLE relay.ad_analytics_platforms (
    id          serial PRIMARY KEY,
    code        varchar(50)  NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9_]+$'),
    name        varchar(100) NOT NULL,
    is_active   boolean      NOT NULL DEFAULT true,
    created_at  timestamptz  NOT NULL DEFAULT now(),
    updated_at  timestamptz  NOT NULL DEFAULT now()
);

INSERT INTO relay.ad_analytics_platforms (code, name) VALUES
    ('sgtm', 'Server-side Google Tag Manager'),
    ('meta_capi', 'Meta Conversions API'),
    ('ga4', 'Google Analytics 4 Measurement Protocol'),
    ('tiktok', 'TikTok Events API'),
    ('snapchat', 'Snapchat Conversions API'),
    ('pinterest', 'Pinterest Conversions API')
ON CONFLICT (code) DO NOTHING;

-- One credential per storefront and platform. `config` holds the non-secret settings (pixel id,
-- ad account, measurement id, test code, api_base_url); `secret_encrypted` the Fernet token of
-- the access token / api_secret.
CREATE TABLE relay.platform_credentials (
    id                serial PRIMARY KEY,
    storefront_id     integer     NOT NULL REFERENCES relay.storefronts(id) ON DELETE CASCADE,
    platform_id       integer     NOT NULL REFERENCES relay.ad_analytics_platforms(id) ON DELETE RESTRICT,
    config            text        NOT NULL DEFAULT '{}',
    secret_encrypted  text        NOT NULL,
    is_active         boolean     NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (storefront_id, platform_id)
);

-- The inbox: the API inserts here (source_system 'oms'), and so may the OMS directly
-- ('oms_direct', with storefront_id or storefront_code). CDC of this table is the one path to
-- relay.event.received.v1; only inserts are routed, so status updates never re-trigger delivery.
CREATE TABLE relay.marketing_events (
    id               bigserial    PRIMARY KEY,
    event_id         varchar(100) NOT NULL,
    storefront_id    integer      REFERENCES relay.storefronts(id),
    storefront_code  varchar(50),
    event_type       varchar(50)  NOT NULL,
    event_payload    text         NOT NULL,
    source_system    varchar(50)  NOT NULL,
    status           varchar(20)  NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed', 'skipped')),
    status_detail    text,
    event_time       timestamptz,
    created_at       timestamptz  NOT NULL DEFAULT now(),
    updated_at       timestamptz  NOT NULL DEFAULT now(),
    CHECK (storefront_id IS NOT NULL OR storefront_code IS NOT NULL)
);

-- A row names its storefront by id or by code; fill in the other so that one event has one
-- identity (storefront code, event type, event id) whichever way it arrived.
CREATE FUNCTION relay.resolve_storefront() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.storefront_id IS NULL THEN
        SELECT id INTO NEW.storefront_id FROM relay.storefronts WHERE code = NEW.storefront_code;
    ELSIF NEW.storefront_code IS NULL THEN
        SELECT code INTO NEW.storefront_code FROM relay.storefronts WHERE id = NEW.storefront_id;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER marketing_events_resolve_storefront BEFORE INSERT ON relay.marketing_events
    FOR EACH ROW EXECUTE FUNCTION relay.resolve_storefront();

-- The same event posted twice, or posted and written directly, is one row.
CREATE UNIQUE INDEX marketing_events_identity ON relay.marketing_events (storefront_code, event_type, event_id);
CREATE INDEX marketing_events_status ON relay.marketing_events (status) WHERE status = 'pending';

-- Every delivery attempt (and every skip), written by the delivery workers beside
-- relay.attempt.v1; attempt_id makes the write idempotent. Secrets are redacted before a row is
-- made. No foreign key: the audit must never stop delivery (an inbox row deleted by hand).
CREATE TABLE relay.event_attempts (
    id                  bigserial    PRIMARY KEY,
    attempt_id          varchar(200) NOT NULL UNIQUE,
    marketing_event_id  bigint       NOT NULL,
    destination         varchar(100) NOT NULL,
    attempt_number      integer      NOT NULL,
    replay              integer      NOT NULL DEFAULT 0,
    status              varchar(20)  NOT NULL CHECK (status IN ('delivered', 'retrying', 'failed', 'skipped')),
    status_code         integer,
    latency_ms          integer,
    response_excerpt    text,
    error_class         varchar(40),
    skipped_level       varchar(40),
    attempted_at        timestamptz  NOT NULL
);
CREATE INDEX event_attempts_event ON relay.event_attempts (marketing_event_id);
