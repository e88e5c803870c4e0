-- Count responses by status, across wrk's threads: prints "status 200: N, other: M" at the end
-- (wrk itself only reports "Non-2xx or 3xx responses").
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, other = 0, 0
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local good, bad = 0, 0
  for _, t in ipairs(threads) do
    good = good + t:get("ok")
    bad = bad + t:get("other")
  end
  io.write(string.format("status 200: %d, other: %d\n", good, bad))
end
