-- The model registry: versions, training runs, the samples each run used, promotions and the latest pointer.
-- Written in the SQL common to PostgreSQL and SQLite (the embedded default), so one schema serves both.
CREATE TABLE model_versions (
    number          INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL CHECK (state IN ('reserved', 'registered', 'abandoned')),
    run_id          TEXT NOT NULL,
    base_version    INTEGER,
    model_uri       TEXT,
    metadata_uri    TEXT,
    map50           DOUBLE PRECISION,
    map50_95        DOUBLE PRECISION,
    precision_      DOUBLE PRECISION,
    recall          DOUBLE PRECISION,
    per_class       TEXT,
    confusion       TEXT,
    params          TEXT,
    data            TEXT,
    data_cutoff     TIMESTAMPTZ,
    promoted        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      TIMESTAMPTZ NOT NULL,
    registered_at   TIMESTAMPTZ
);

CREATE TABLE training_runs (
    id              TEXT PRIMARY KEY,
    status          TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    mode            TEXT NOT NULL,
    reason          TEXT,
    message         TEXT,
    data_cutoff     TIMESTAMPTZ,
    model_version   INTEGER,
    report          TEXT,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ
);
CREATE INDEX training_runs_cutoff ON training_runs (mode, status, data_cutoff);

CREATE TABLE training_samples (
    run_id          TEXT NOT NULL,
    sample_id       TEXT NOT NULL,
    split           TEXT NOT NULL,
    replayed        BOOLEAN NOT NULL,
    classes         TEXT NOT NULL,
    PRIMARY KEY (run_id, sample_id)
);

CREATE TABLE promotions (
    id              INTEGER PRIMARY KEY,
    version         INTEGER NOT NULL,
    previous        INTEGER,
    run_id          TEXT,
    actor           TEXT NOT NULL,
    reason          TEXT NOT NULL,
    promoted_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE latest_model (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    version         INTEGER,
    updated_at      TIMESTAMPTZ
);
INSERT INTO latest_model (id, version, updated_at) VALUES (1, NULL, NULL);
