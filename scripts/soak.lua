-- Mixed read/write/task load for the soak test (scripts/soak.sh), for wrk:
--   wrk -t2 -c16 -d60s -s scripts/soak.lua http://127.0.0.1:8080 -- NUSERS PREFIX
-- NUSERS: users 1..NUSERS exist (seeded); PREFIX makes this run's emails unique.
-- Every answer's status is counted; done() prints one line:
--   SOAK_JSON {"statuses": {"200": n, ...}, "kinds": {...}, "requests": n, ...}

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local nusers, prefix, counter

function init(args)
  nusers = tonumber(args[1]) or 1000
  prefix = args[2] or "soak"
  counter = 0
  statuses = {}
  kinds = {}
  math.randomseed(7919 * tid + 17)
end

local json_headers = { ["Content-Type"] = "application/json" }

local function count(kind)
  kinds[kind] = (kinds[kind] or 0) + 1
end

-- The mix: mostly reads, a steady stream of writes and tasks. Every created user
-- also enqueues its welcome task, so tasks arrive at (6 % + 2 %) of the request
-- rate: kept below what the scheduler completes with its default concurrency, so
-- the queue stays bounded (a mix above that fills the queue: POST /tasks 503).
function request()
  counter = counter + 1
  local r = math.random(100)
  if r <= 32 then
    count("get_user")
    return wrk.format("GET", "/user/" .. math.random(nusers))
  elseif r <= 44 then
    count("get_user_detail")
    return wrk.format("GET", "/users/" .. math.random(nusers))
  elseif r <= 56 then
    count("list_users_page")
    return wrk.format("GET", "/users?limit=20&after_id=" .. math.random(0, nusers))
  elseif r <= 62 then
    count("add_user")
    local email = string.format("%s-t%d-%d@example.com", prefix, tid, counter)
    local body = string.format('{"name": "soak %d/%d \\u2713", "email": "%s"}', tid, counter, email)
    return wrk.format("POST", "/add-user", json_headers, body)
  elseif r <= 72 then
    count("patch_user")
    local body = string.format('{"name": "renamed %d/%d"}', tid, counter)
    return wrk.format("PATCH", "/users/" .. math.random(nusers), json_headers, body)
  elseif r <= 74 then
    count("post_task")
    return wrk.format("POST", "/tasks", json_headers, '{"kind": "sleep", "seconds": 0.01}')
  elseif r <= 84 then
    count("list_tasks")
    return wrk.format("GET", "/tasks?state=succeeded&limit=10")
  else
    count("healthz")
    return wrk.format("GET", "/healthz")
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local function encode(t)
  local parts = {}
  for k, v in pairs(t) do
    table.insert(parts, string.format('"%s": %d', tostring(k), v))
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
  local total_statuses, total_kinds = {}, {}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("statuses") or {}) do total_statuses[k] = (total_statuses[k] or 0) + v end
    for k, v in pairs(thread:get("kinds") or {}) do total_kinds[k] = (total_kinds[k] or 0) + v end
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK_JSON {"statuses": %s, "kinds": %s, "requests": %d, "duration_us": %d, ' ..
    '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"latency_ms": {"p50": %.3f, "p90": %.3f, "p99": %.3f, "max": %.3f}}\n',
    encode(total_statuses), encode(total_kinds), summary.requests, summary.duration,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
