-- pgbench: the statement behind POST /api/v1/notes (src/notes/store.rs), as farol sends
-- it: one clock reading for both times, the whole row returned. farol sends a UUIDv7 it
-- made; here the server makes a random one (pgbench has no clock to make a v7 from): at
-- the bench's table size the primary key's index stays in memory either way.
INSERT INTO notes (id, title, body, created_at, updated_at)
SELECT gen_random_uuid(), 'benchmark note', 'written by scripts/bench to measure the write path', moment, moment
FROM clock_timestamp() AS moment
RETURNING id, title, body, created_at, updated_at;
