-- wrk script for `foclip serve`: POST /v1/detect with raw image bodies, cycling through the files
-- listed (one path per line) in the file named by $FOCLIP_WRK_PAYLOADS; with FOCLIP_WRK_PROTOCOL=v2,
-- POST /v2/models/foclip/infer with the same files as one-image binary-tensor requests (the JSON
-- header, then the BYTES element: 4-byte little-endian length and the file). Each connection is one
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

local function le32(n)
  return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256, math.floor(n / 16777216) % 256)
end

local function v2_request(image)
  local tensor = le32(#image) .. image
  local head = string.format('{"inputs":[{"name":"IMAGE","datatype":"BYTES","shape":[1],' ..
    '"parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}', #tensor)
  return head .. tensor, {["Content-Type"] = "application/octet-stream",
                          ["Inference-Header-Content-Length"] = tostring(#head)}
end

function init(args)
  bodies, headers = {}, {}
  local v2 = os.getenv("FOCLIP_WRK_PROTOCOL") == "v2"
  path_ = v2 and "/v2/models/foclip/infer" or "/v1/detect"
  for path in io.lines(os.getenv("FOCLIP_WRK_PAYLOADS")) do
    local f = assert(io.open(path, "rb"))
    local data = f:read("*all")
    f:close()
    if v2 then
      local body, hdrs = v2_request(data)
      table.insert(bodies, body)
      table.insert(headers, hdrs)
    else
      table.insert(bodies, data)
      table.insert(headers, {["Content-Type"] = content_type(path)})
    end
  end
  idx, s2xx, s4xx, s5xx = 0, 0, 0, 0
end

function request()
  idx = idx % #bodies + 1
  return wrk.format("POST", path_, headers[idx], bodies[idx])
end

function response(status, headers, body)
  -- v2 answers 200 with the failure in ERROR, the last output: scored only when that element is
  -- empty (its 4-byte length 0 ends the body); counted with the 4xx otherwise, as /v1/detect's 422.
  if status < 300 and path_ ~= "/v1/detect" and string.sub(body, -4) ~= "\0\0\0\0" then status = 422 end
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
