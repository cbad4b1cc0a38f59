-- wrk script: replay a request plan (benchmarks/workload.py's ReadPlan) written to files.
-- Usage: wrk -s replay.lua URL -- METHOD PATHS_FILE THREADS [BODIES_FILE]
-- PATHS_FILE holds one request path per line, BODIES_FILE (optional) one body per line.
-- The threads walk the plan together in order: thread t (0-based) sends requests
-- t, t + THREADS, t + 2 THREADS, ... of the plan; request i has path i and body i of the
-- files, each taken modulo its length. The done() line is parsed by benchmarks/wrk.py.

local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local function read_lines(name)
  local lines = {}
  for line in io.lines(name) do
    lines[#lines + 1] = line
  end
  assert(#lines > 0, name .. " is empty")
  return lines
end

function init(args)
  method = args[1]
  paths = read_lines(args[2])
  stride = tonumber(args[3])
  bodies = args[4] and read_lines(args[4]) or nil
  cursor = thread_index
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local i = cursor
  cursor = cursor + stride
  local body = bodies and bodies[i % #bodies + 1] or nil
  return wrk.format(method, paths[i % #paths + 1], nil, body)
end

-- The same RESULT line as single_event.lua.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d errors=%d status_errors=%d p50_us=%d p95_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)
  ))
end
