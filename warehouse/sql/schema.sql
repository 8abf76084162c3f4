-- The warehouse's tables. Idempotent: run at every connect.
-- raw: as parsed, plus where it came from (file hash, file, record number, line).
-- staging: typed, deduplicated, classified, resolved to a client (rebuilt by each run).
-- ops: the pipeline's own bookkeeping (manifest, run log, data-quality results, quarantine).
-- marts: views over the published parquet marts.
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS ops;
CREATE SCHEMA IF NOT EXISTS marts;

CREATE TABLE IF NOT EXISTS ops.ingested_file (
    file_hash        VARCHAR PRIMARY KEY,  -- sha256 of the content: the manifest key
    path             VARCHAR NOT NULL,     -- relative to the inbox
    kind             VARCHAR NOT NULL,     -- bank | crm
    reader           VARCHAR NOT NULL,
    size_bytes       BIGINT NOT NULL,
    records_in       BIGINT NOT NULL,      -- records the reader produced (raw + quarantined)
    rows_raw         BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    run_id           VARCHAR NOT NULL,
    ingest_seq       BIGINT NOT NULL,      -- order of ingestion: earlier files win on duplicates
    ingested_at      TIMESTAMP NOT NULL
);

-- added after the first release: warehouses created before get the column here
ALTER TABLE ops.ingested_file ADD COLUMN IF NOT EXISTS encoding VARCHAR;  -- text encoding the reader used
-- true once the file passed the raw gate; every run gates the files without it (a failed file fails again)
ALTER TABLE ops.ingested_file ADD COLUMN IF NOT EXISTS raw_gate_passed BOOLEAN;

CREATE TABLE IF NOT EXISTS raw.bank_transaction (
    file_hash            VARCHAR NOT NULL,
    source_file          VARCHAR NOT NULL,
    record_number        INTEGER NOT NULL,
    source_line          INTEGER,
    reader               VARCHAR NOT NULL,
    own_account          VARCHAR NOT NULL,
    booking_date         DATE NOT NULL,
    value_date           DATE,
    amount               DECIMAL(23, 5) NOT NULL,  -- signed: + in, - out; exact, never float
    currency             VARCHAR NOT NULL,
    counterparty_name    VARCHAR,
    counterparty_tax_id  VARCHAR,
    counterparty_account VARCHAR,
    counterparty_bic     VARCHAR,
    purpose              VARCHAR,
    bank_reference       VARCHAR,
    end_to_end_id        VARCHAR,
    status               VARCHAR NOT NULL,  -- BOOK | PDNG | INFO
    is_reversal          BOOLEAN NOT NULL
);

CREATE TABLE IF NOT EXISTS raw.statement_balance (
    file_hash      VARCHAR NOT NULL,
    source_file    VARCHAR NOT NULL,
    record_number  INTEGER NOT NULL,
    own_account    VARCHAR NOT NULL,
    statement_id   VARCHAR,
    balance_date   DATE NOT NULL,
    opening        DECIMAL(23, 5),
    closing        DECIMAL(23, 5),
    currency       VARCHAR NOT NULL,
    entries_total  DECIMAL(38, 5) NOT NULL  -- a sum of entries: wider than one amount (db.ensure_schema widens older ones)
);

CREATE TABLE IF NOT EXISTS ops.quarantine (
    file_hash     VARCHAR NOT NULL,
    source_file   VARCHAR NOT NULL,
    record_number INTEGER NOT NULL,
    source_line   INTEGER,
    reason        VARCHAR NOT NULL,
    raw_record    VARCHAR,
    run_id        VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS ops.run_log (
    run_id            VARCHAR PRIMARY KEY,
    command           VARCHAR NOT NULL,
    as_of             DATE NOT NULL,
    started_at        TIMESTAMP NOT NULL,
    finished_at       TIMESTAMP,
    duration_s        DOUBLE,
    status            VARCHAR NOT NULL,   -- running | published | gate_failed | failed | killed
    input_files       VARCHAR,            -- JSON: [{path, sha256, reader, rows_raw, rows_quarantined}]
    files_new         INTEGER,
    rows_raw          BIGINT,
    rows_quarantined  BIGINT,
    rows_staged       BIGINT,
    duplicates        BIGINT,
    rows_marts        VARCHAR,            -- JSON: {mart: rows}
    gates             VARCHAR,            -- JSON: {gate: passed|failed}
    published_version VARCHAR,
    error             VARCHAR
);

CREATE TABLE IF NOT EXISTS ops.dq_results (
    run_id       VARCHAR NOT NULL,
    gate         VARCHAR NOT NULL,        -- raw | staged | marts
    dataset      VARCHAR NOT NULL,
    check_name   VARCHAR NOT NULL,
    column_name  VARCHAR,
    success      BOOLEAN NOT NULL,
    observed     VARCHAR,
    checked_at   TIMESTAMP NOT NULL
);
