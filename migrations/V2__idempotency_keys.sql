-- A client's Idempotency-Key on POST: a retry with the same key returns the note made
-- the first time instead of a second one. The digest is of the request that made the
-- note (its title and body then), so that a retry is told from another note sent with
-- the same key even after the note was replaced.
--
-- Made to be cheap on a large table that is in use: a lock wait bounded (the migration
-- fails and is tried again, rather than queueing every query behind it); the columns
-- added without a default (no rewrite); the length check NOT VALID (no scan: every
-- existing row is NULL); the index partial, so that keyless notes, all of the existing
-- ones, stay out of it and keyless inserts pay nothing for it. Its build still reads
-- the table once, under a lock that holds writes back meanwhile.
SET LOCAL lock_timeout = '5s';

ALTER TABLE notes
    ADD COLUMN idempotency_key text,
    ADD COLUMN idempotency_digest bytea;

ALTER TABLE notes ADD CONSTRAINT notes_idempotency_key_length
    CHECK (char_length(idempotency_key) BETWEEN 1 AND 128) NOT VALID;

CREATE UNIQUE INDEX notes_idempotency_key ON notes (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
