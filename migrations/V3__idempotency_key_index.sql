-- One note per idempotency key. Partial: keyless notes, all the older ones among them,
-- stay out of it, and keyless inserts pay nothing for it. The build reads the table once
-- under a lock that holds writes back meanwhile (reads go on); its wait for that lock is
-- bounded as in V2.
SET LOCAL lock_timeout = '1s';

CREATE UNIQUE INDEX notes_idempotency_key ON notes (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
