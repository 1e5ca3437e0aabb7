-- wrk script: POST /api/token/verify, a different token every request.
-- Environment: BENCH_AUTH (base64 of id:secret), BENCH_TOKENS (a file, one
-- token per line), BENCH_AUDIENCE. Each thread takes every n-th line.
local threads = {}
local counter = 0

setup = function(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

init = function(args)
  tokens = {}
  local n = 0
  local stride = tonumber(os.getenv("BENCH_THREADS") or "2")
  local i = 0
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    if i % stride == id then
      n = n + 1
      tokens[n] = line
    end
    i = i + 1
  end
  next_token = 0
  reused = 0
  failures = 0
  aud = os.getenv("BENCH_AUDIENCE")
  auth = "Basic " .. os.getenv("BENCH_AUTH")
end

request = function()
  next_token = next_token + 1
  if next_token > #tokens then
    next_token = 1
    reused = reused + 1
  end
  local body = '{"token":"' .. tokens[next_token] .. '","audience":"' .. aud .. '"}'
  return wrk.format("POST", "/api/token/verify",
    {["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
end

response = function(status)
  if status ~= 200 then failures = failures + 1 end
end

done = function(summary, latency, requests)
  local wraps = 0
  for _, t in ipairs(threads) do
    wraps = wraps + (t:get("reused") or 0)
  end
  io.write(string.format("non2xx=%d\nreused_passes=%d\n", summary.errors.status, wraps))
end
