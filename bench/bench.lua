-- wrk script of usersd's benchmark (bench/run.sh).
-- Extends ../shared/bench/bench.lua (the shared harness) with the "mixed" and
-- "start_task" modes; the WRKJSON summary line is the same.
--
--   wrk -s bench.lua URL -- MODE [NUSERS] [RUNTAG] [TOKEN]
-- URL is a target's base, e.g. http://127.0.0.1:18090/usersd
-- MODE: get_user    GET <base>/user/<random 1..NUSERS>
--       users       GET <base>/users
--       add_user    POST <base>/add-user, unique email per run tag + thread + counter
--       mixed       every 10th request POST <base>/add-user (unique email),
--                   the other nine GET <base>/users/<random 1..NUSERS>
--       start_task  GET <base>/start-task
-- TOKEN: sent as "Authorization: Bearer TOKEN" with every request (usersd-auth).
-- done() prints one line "WRKJSON {...}" with the summary.
local threads = {}
local counter = 1

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "get_user"
  nusers = tonumber(args[2] or "1000")
  runtag = args[3] or tostring(os.time())
  base = wrk.path
  if base:sub(-1) == "/" then base = base:sub(1, -2) end
  math.randomseed(os.time() * 1000 + (tid or 0))
  n = 0
  hdrs = { ["Content-Type"] = "application/json" }
  get_hdrs = {}
  if args[4] and args[4] ~= "" then
    hdrs["Authorization"] = "Bearer " .. args[4]
    get_hdrs["Authorization"] = "Bearer " .. args[4]
  end
end

local function add_user()
  local body = string.format('{"name":"bench %d-%d","email":"b-%s-t%d-%d@example.com"}',
                             tid, n, runtag, tid, n)
  return wrk.format("POST", base .. "/add-user", hdrs, body)
end

function request()
  n = n + 1
  if mode == "get_user" then
    return wrk.format("GET", base .. "/user/" .. math.random(1, nusers), get_hdrs)
  elseif mode == "users" then
    return wrk.format("GET", base .. "/users", get_hdrs)
  elseif mode == "add_user" then
    return add_user()
  elseif mode == "mixed" then
    if n % 10 == 0 then return add_user() end
    return wrk.format("GET", base .. "/users/" .. math.random(1, nusers), get_hdrs)
  elseif mode == "start_task" then
    return wrk.format("GET", base .. "/start-task", get_hdrs)
  end
  error("unknown mode " .. tostring(mode))
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f,"bytes":%d,"non2xx3xx":%d,"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000,
    summary.bytes, e.status, e.connect, e.read, e.write, e.timeout))
end
