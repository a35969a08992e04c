-- POST a new user per request (unique names per thread and request), or log one user in (LOGIN=1).
local counter = 0
local thread_id = 0
local threads = {}
local prefix = os.getenv("PREFIX") or "bench"

setup = function(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

request = function()
  counter = counter + 1
  if os.getenv("LOGIN") then
    local body = "username=" .. os.getenv("LOGIN_EMAIL") .. "&password=" .. os.getenv("LOGIN_PASSWORD")
    return wrk.format("POST", "/api/users/login/token/",
      {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
  end
  local name = string.format("%s%dt%dn%d", prefix, os.time() % 100000, thread_id, counter)
  local body = string.format(
    '{"new_user": {"email": "%s@example.com", "username": "%s", "password": "benchmark-pass"}}', name, name)
  return wrk.format("POST", "/api/users/", {["Content-Type"] = "application/json"}, body)
end

local ok, busy, other = 0, 0, 0
response = function(status, headers, body)
  if status == 201 or status == 200 then ok = ok + 1
  elseif status == 503 then busy = busy + 1
  else other = other + 1 end
end

done = function(summary, latency, requests)
  local ok_total, busy_total, other_total = 0, 0, 0
  for _, thread in ipairs(threads) do
    ok_total = ok_total + thread:get("ok")
    busy_total = busy_total + thread:get("busy")
    other_total = other_total + thread:get("other")
  end
  io.write(string.format(
    'JSON{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, '
      .. '"ok": %d, "busy": %d, "other": %d}\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, ok_total, busy_total, other_total))
end
