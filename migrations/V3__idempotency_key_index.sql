-- One note per idempotency key. Partial: keyless notes, all the older ones among them,
-- stay out of it, and keyless inserts pay nothing for it. Its build reads the whole table
-- under a lock that holds writes back meanwhile (reads go on); the wait for that lock is
-- bounded as in V2, the build itself is not. On a table too large for that pause, build
-- the index beforehand, by hand, with CREATE UNIQUE INDEX CONCURRENTLY and this name and
-- definition: this migration then finds it and does nothing (docs/database.md).
SET LOCAL lock_timeout = '1s';

CREATE UNIQUE INDEX IF NOT EXISTS notes_idempotency_key ON notes (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
