-- The fire drill's paced API traffic (scripts/fire-drill), and one DRILL_SUMMARY JSON line
-- at the end for drill.py:  wrk -t1 -c8 -d600s -s load.lua http://127.0.0.1:PORT -- DELAY_MS
-- Each connection waits DELAY_MS between requests, so that the 2 cores keep room for the
-- stack's scrapes. Three in four requests list notes, one creates one: both reach
-- PostgreSQL, both are /api/* (the SLO's routes, the only ones CHAOS_* faults touch).

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

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'DRILL_SUMMARY {"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"p99_ms":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(99) / 1000))
end
