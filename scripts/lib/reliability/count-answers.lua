-- wrk -s count-answers.lua URL -- PATH PAUSE_MS: GETs PATH, each connection pausing
-- PAUSE_MS between its requests, counting the answers by status and the 503s without
-- Retry-After (a shed client must be told when to come back). done() prints, for
-- drill_overload.py:
--   answers 200=N 503=N ... retry_after_missing=N errors=N p50_us=N p99_us=N max_us=N
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  path, pause = args[1], tonumber(args[2] or "0")
  statuses, retry_after_missing = {}, 0
end

function request()
  return wrk.format("GET", path)
end

function delay()
  return pause
end

function response(status, headers)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 503 and headers["retry-after"] == nil and headers["Retry-After"] == nil then
    retry_after_missing = retry_after_missing + 1
  end
end

function done(summary, latency)
  local totals, missing, parts = {}, 0, {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
    missing = missing + thread:get("retry_after_missing")
  end
  for status, count in pairs(totals) do
    table.insert(parts, status .. "=" .. count)
  end
  table.sort(parts)
  local e = summary.errors
  io.write(string.format("answers %s retry_after_missing=%d errors=%d p50_us=%d p99_us=%d max_us=%d\n",
    table.concat(parts, " "), missing, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
