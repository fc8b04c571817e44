-- pgbench: the statement behind POST /api/v1/notes (src/notes/store.rs), as farol sends
-- it: one clock reading for both times, the whole row returned. farol sends a UUIDv7 it
-- made; pgbench has no clock, so the server builds an id in the same layout (the clock's
-- milliseconds in 48 bits, the version digit 7, random bits): in the shared table,
-- pgbench's inserts land at the end of the primary key's index, as farol's do. Building
-- it costs the server a little more than farol's ready-made id.
\set r random(0, 1099511627775)
INSERT INTO notes (id, title, body, created_at, updated_at)
SELECT (lpad(to_hex((extract(epoch FROM moment) * 1000)::int8), 12, '0') || '7' || lpad(to_hex(:r::int8), 19, '0'))::uuid,
       'benchmark note', 'written by scripts/bench to measure the write path', moment, moment
FROM clock_timestamp() AS moment
RETURNING id, title, body, created_at, updated_at;
