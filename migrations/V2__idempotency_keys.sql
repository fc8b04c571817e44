-- A client's Idempotency-Key on POST: a retry with the same key returns the note made
-- the first time instead of a second one. Notes created without a key (NULL) are not in
-- the index, so that keyless inserts pay nothing for it.
ALTER TABLE notes ADD COLUMN idempotency_key text
    CHECK (char_length(idempotency_key) BETWEEN 1 AND 128);

CREATE UNIQUE INDEX notes_idempotency_key ON notes (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
