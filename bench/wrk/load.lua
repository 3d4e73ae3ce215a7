-- Load script for every configuration (wrk -t1 -c50 -s load.lua URL -- ARGS).
-- ARGS: tokenFile method path offset bodyFile mode [connection]
--   tokenFile  one token a line, or "-" for no Authorization header
--   method     GET | POST
--   path       request path, e.g. /api/orders
--   offset     index of the first token to use (0-based); the cold runs start the measured
--              window past the tokens the warm-up used
--   bodyFile   file whose bytes are the request body, or "-" for none
--   mode       "pool": cycle through the file (a warm pool of distinct tokens, as real
--              clients reuse a token for minutes); "cold": every request takes the next
--              token, never reused; if the file runs out it wraps and counts `wrapped`,
--              which the runner reports as an invalid cold run.
--   connection "close": every request carries `Connection: close`, so each one is a new
--              connection (bench/workers.ts: what accepting a connection costs); default
--              keep-alive.
-- done() prints one line "WRKJSON {...}" that the runner parses.

local reqs = {}
local n = 0
local i = 0
local method, path, body, cold
local headers = {}
wrapped = 0
sent = 0

function init(args)
  local tokenFile = args[1] or "-"
  method = args[2] or "GET"
  path = args[3] or "/"
  i = tonumber(args[4] or "0")
  local bodyFile = args[5] or "-"
  cold = (args[6] == "cold")
  if args[7] == "close" then
    headers["Connection"] = "close"
  end
  if bodyFile ~= "-" then
    local f = assert(io.open(bodyFile, "rb"))
    body = f:read("*a")
    f:close()
    headers["Content-Type"] = "application/octet-stream"
  end
  if tokenFile ~= "-" then
    for line in io.lines(tokenFile) do
      if #line > 0 then
        n = n + 1
        -- pre-format every request once: request() then costs a table read
        headers["Authorization"] = "Bearer " .. line
        reqs[n] = wrk.format(method, path, headers, body)
        -- with a body (1 MB) keep 16 pre-formatted requests, not one per token
        if body and n >= 16 then break end
      end
    end
    headers["Authorization"] = nil
  end
  if n == 0 then
    reqs[1] = wrk.format(method, path, headers, body)
  end
  if i >= n and n > 0 then
    i = i % n
  end
end

function request()
  sent = sent + 1
  if n == 0 then
    return reqs[1]
  end
  i = i + 1
  if i > n then
    i = 1
    if cold then wrapped = wrapped + 1 end
  end
  return reqs[i]
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do
    w = w + (t:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"durationUs":%d,"bytes":%d,"connectErrors":%d,"readErrors":%d,"writeErrors":%d,"statusErrors":%d,"timeouts":%d,"p50Us":%d,"p90Us":%d,"p99Us":%d,"maxUs":%d,"meanUs":%.1f,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, w))
end
