-- wrk script: POST one feedback event per request, each with a unique event_id.
-- Usage: wrk -s single_event.lua URL -- PREFIX USERS ITEMS
-- Event ids are PREFIX-THREAD-COUNTER; the types cycle through the suite's mix
-- (70 % implicit, 30 % explicit). The done() line is parsed by benchmarks/wrk.py.

-- 20 slots in the proportions of benchmarks/workload.py's MIXED:
-- view 7, impression 4, click 3 (implicit); like 4, rating 2 (explicit).
local TYPES = {
  '"view"', '"impression"', '"view"', '"like"', '"click"',
  '"view"', '"impression"', '"rating","value":4', '"view"', '"like"',
  '"click"', '"view"', '"impression"', '"like"', '"view"',
  '"click"', '"rating","value":2', '"impression"', '"view"', '"like"',
}

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

function init(args)
  prefix = args[1] or "wrk"
  users = tonumber(args[2]) or 1000
  items = tonumber(args[3]) or 1000
  counter = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"event_id":"%s-%d-%d","user_id":"user-%d","item_id":"item-%d","type":%s}',
    prefix, thread_id, counter,
    (counter * 7919 + thread_id) % users, (counter * 104729) % items,
    TYPES[counter % #TYPES + 1]
  )
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d errors=%d status_errors=%d p50_us=%d p95_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)
  ))
end
