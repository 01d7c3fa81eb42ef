-- wrk script for the api_ingest_* scenarios of scripts/bench: POSTs the JSON body in
-- $WRK_BODY with the bearer token in $WRK_TOKEN (optional) to the URL given to wrk,
-- and prints one line `WRK_RESULT {json}` when done: requests, duration, socket
-- errors, responses with status >= 400 (wrk's "Non-2xx or 3xx responses"; no 3xx can
-- come from this route), and latency percentiles in microseconds.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("WRK_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
