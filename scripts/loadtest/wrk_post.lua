-- wrk script for `foclip serve`: POST /v1/detect with raw image bodies, cycling through the files
-- listed (one path per line) in the file named by $FOCLIP_WRK_PAYLOADS. Each connection is one
-- closed-loop client. At the end it prints one line, "WRKJSON {...}", with counts by status class
-- and latency percentiles in microseconds (wrk's own histogram), for scripts/loadtest/run.py.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function content_type(path)
  local ext = string.lower(string.match(path, "%.(%w+)$") or "")
  if ext == "png" then return "image/png" end
  if ext == "jpg" or ext == "jpeg" then return "image/jpeg" end
  return "application/octet-stream"
end

function init(args)
  bodies, types = {}, {}
  for path in io.lines(os.getenv("FOCLIP_WRK_PAYLOADS")) do
    local f = assert(io.open(path, "rb"))
    table.insert(bodies, f:read("*all"))
    f:close()
    table.insert(types, content_type(path))
  end
  idx, s2xx, s4xx, s5xx = 0, 0, 0, 0
end

function request()
  idx = idx % #bodies + 1
  return wrk.format("POST", "/v1/detect", {["Content-Type"] = types[idx]}, bodies[idx])
end

function response(status, headers, body)
  if status < 300 then s2xx = s2xx + 1 elseif status < 500 then s4xx = s4xx + 1 else s5xx = s5xx + 1 end
end

function done(summary, latency, requests)
  local a, b, c = 0, 0, 0
  for _, t in ipairs(threads) do
    a, b, c = a + t:get("s2xx"), b + t:get("s4xx"), c + t:get("s5xx")
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "s2xx": %d, "s4xx": %d, "s5xx": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, ' ..
    '"err_connect": %d, "err_read": %d, "err_write": %d, "err_timeout": %d}\n',
    summary.requests, summary.duration, a, b, c,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.timeout))
end
