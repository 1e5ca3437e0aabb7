-- wrk script: POST a JSON body with HTTP Basic auth.
-- Environment: BENCH_AUTH (base64 of id:secret), BENCH_BODY (JSON).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic " .. os.getenv("BENCH_AUTH")

local failures = 0
response = function(status, headers, body)
  if status ~= 200 then
    failures = failures + 1
  end
end

done = function(summary, latency, requests)
  -- wrk runs `response` in per-thread states; summary.status counts non-2xx.
  io.write(string.format("non2xx=%d\n", summary.errors.status))
end
