-- Session endpoints (wrk -t1 -cN -s sessions.lua URL -- MODE FILE PATH).
--   login   FILE has "username password" lines; each request logs one of them in (cycled).
--   refresh FILE has one refresh token a line (at least as many as connections). Each
--           request spends the token at the head of the queue; response() takes the new
--           refresh token out of the JSON body and queues it, so no token is presented twice
--           (a second use would be treated as theft and revoke the session). A 4th argument
--           names a file where done() writes the tokens still unspent, for the next run.
-- done() prints "WRKJSON {...}" like load.lua.

local mode, path
local reqs = {}
local n, i = 0, 0
queue = {}
head, tail = 1, 1
local hdrs = { ["Content-Type"] = "application/json" }
missing = 0

function init(args)
  mode = args[1]
  outFile = args[4]  -- global: done() reads it from the thread
  path = args[3]
  for line in io.lines(args[2]) do
    if #line > 0 then
      if mode == "login" then
        local u, p = line:match("^(%S+) (.+)$")
        n = n + 1
        reqs[n] = wrk.format("POST", path, hdrs, '{"username":"' .. u .. '","password":"' .. p .. '"}')
      else
        queue[tail] = line
        tail = tail + 1
      end
    end
  end
end

function request()
  if mode == "login" then
    i = i % n + 1
    return reqs[i]
  end
  local t = queue[head]
  if t == nil then
    missing = missing + 1
    t = "none"
  else
    queue[head] = nil
    head = head + 1
  end
  return wrk.format("POST", path, hdrs, '{"refresh_token":"' .. t .. '"}')
end

function response(status, headers, body)
  if mode ~= "refresh" then return end
  local t = body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if t then
    queue[tail] = t
    tail = tail + 1
  end
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local m = 0
  for _, t in ipairs(threads) do
    m = m + (t:get("missing") or 0)
    -- done() runs in wrk's main Lua state: the thread's globals are read with t:get
    local out = t:get("outFile")
    if out then
      local q, h, tl = t:get("queue"), t:get("head"), t:get("tail")
      local f = assert(io.open(out, "w"))
      for k = h, tl - 1 do
        if q[k] then f:write(q[k], "\n") end
      end
      f:close()
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"durationUs":%d,"bytes":%d,"connectErrors":%d,"readErrors":%d,"writeErrors":%d,"statusErrors":%d,"timeouts":%d,"p50Us":%d,"p90Us":%d,"p99Us":%d,"maxUs":%d,"meanUs":%.1f,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, m))
end
