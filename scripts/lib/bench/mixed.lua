-- wrk: the soak's mixed load, per connection in a fixed cycle of 10 requests:
-- 6 reads of one note, 2 writes, 2 list pages. The note id comes as the first argument.
local id
local step = 0

function init(args)
  id = args[1]
end

function request()
  step = (step % 10) + 1
  if step <= 6 then
    return wrk.format("GET", "/api/v1/notes/" .. id)
  elseif step <= 8 then
    return wrk.format("POST", "/api/v1/notes", { ["Content-Type"] = "application/json" },
      '{"title":"soak","body":"mixed load from scripts/bench --soak"}')
  else
    return wrk.format("GET", "/api/v1/notes?limit=20")
  end
end
