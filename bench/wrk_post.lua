-- wrk script for bench/serving.py: POST one fixed body, print a JSON summary line.
--
-- Environment:
--   BODY_FILE     file whose bytes are the request body (required; may be binary)
--   CONTENT_TYPE  Content-Type header (default application/json)
--   EXTRA_HEADER  optional "Name: value" header, e.g. "Inference-Header-Content-Length: 123"
--
-- done() prints one line: {"requests":..,"duration_us":..,"bytes":..,"err_connect":..,
-- "err_read":..,"err_write":..,"err_status":..,"err_timeout":..,"lat_mean_us":..,
-- "p50_us":..,"p90_us":..,"p99_us":..,"p999_us":..,"lat_max_us":..}

local path = os.getenv("BODY_FILE")
assert(path and path ~= "", "BODY_FILE is not set")
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"

local extra = os.getenv("EXTRA_HEADER")
if extra and extra ~= "" then
  local name, value = extra:match("^%s*([^:]+):%s*(.-)%s*$")
  assert(name, "EXTRA_HEADER must look like 'Name: value'")
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean_us":%.1f,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
