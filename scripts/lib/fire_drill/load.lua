-- wrk script of the fire drill (scripts/fire-drill): paced API traffic, and one JSON line
-- at the end for scripts/lib/fire_drill/drill.py.
--
--   wrk -t1 -c8 -d600s -s load.lua http://127.0.0.1:PORT -- DELAY_MS
--
-- Each connection waits DELAY_MS between requests, so the load is steady and bounded
-- (about connections * 1000 / (DELAY_MS + latency) requests per second) instead of all the
-- 2 cores can give: the drill must leave room for Prometheus's one-second scrapes, or it
-- would test the machine's saturation rather than the alerts. Three in four requests list
-- notes, one in four creates one: both reach PostgreSQL, both are /api/* (the SLO's routes,
-- and the only ones CHAOS_* faults touch).

local delay_ms = 10
local n = 0
local create = wrk.format("POST", "/api/v1/notes", { ["Content-Type"] = "application/json" },
  '{"title":"fire drill","body":"load from scripts/fire-drill"}')
local list = wrk.format("GET", "/api/v1/notes?limit=10")

function init(args)
  if args[1] then delay_ms = tonumber(args[1]) end
end

function delay()
  return delay_ms
end

function request()
  n = n + 1
  if n % 4 == 0 then return create end
  return list
end

-- Called once, after wrk stops (at -d, or on SIGINT, which is how the drill stops it).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'DRILL_SUMMARY {"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"p99_ms":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(99) / 1000))
end
