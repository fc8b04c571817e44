-- A client's Idempotency-Key on POST: a retry with the same key returns the note made
-- the first time instead of a second one. The digest is of the request that made the
-- note (its title and body then), so that a retry is told from another note sent with
-- the same key even after the note was replaced; a key never goes without one.
--
-- Cheap on a large table in use: the columns come without a default (no rewrite) and
-- the checks NOT VALID (no scan: every existing row is NULL), so the exclusive lock is
-- held for moments. The wait for that lock is bounded below DB_QUERY_TIMEOUT_MS: behind
-- a long reader, the migration fails and is tried again, rather than holding every
-- query of the service queued behind it. The index comes in the next migration, so that
-- its build, which reads the table, holds back writes only, not reads.
SET LOCAL lock_timeout = '1s';

ALTER TABLE notes
    ADD COLUMN idempotency_key text,
    ADD COLUMN idempotency_digest bytea;

ALTER TABLE notes
    ADD CONSTRAINT notes_idempotency_key_length
        CHECK (char_length(idempotency_key) BETWEEN 1 AND 128) NOT VALID,
    ADD CONSTRAINT notes_idempotency_key_with_digest
        CHECK ((idempotency_key IS NULL) = (idempotency_digest IS NULL)) NOT VALID;
