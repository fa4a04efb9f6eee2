-- 0001_init.sql -- readings and dead letters.
--
-- One row per (sensor, type, instant): the primary key is what makes a
-- reading that arrives twice (MQTT at-least-once, sensor retries) land once.

CREATE TABLE readings (
    sensor_id   text             NOT NULL,
    type        text             NOT NULL,
    ts          timestamptz      NOT NULL,
    value       double precision NOT NULL,  -- canonical unit (column unit)
    unit        text             NOT NULL,
    raw_value   double precision NOT NULL,  -- as the sensor sent it
    raw_unit    text             NOT NULL,
    tags        jsonb,
    received_at timestamptz      NOT NULL,  -- ingestion's clock
    ingested_by text             NOT NULL,  -- ingestion instance
    stored_at   timestamptz      NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (sensor_id, type, ts)
);

-- Readings arrive roughly in time order, so a BRIN index on ts stays tiny
-- and still serves time-range scans.
CREATE INDEX readings_ts_brin ON readings USING brin (ts);

-- Messages storage could not store: kept whole so they can be replayed.
CREATE TABLE dead_letters (
    id        bigserial   PRIMARY KEY,
    stored_at timestamptz NOT NULL DEFAULT now(),
    topic     text,
    reason    text,
    payload   bytea
);
