-- wrk script: POST an OAuth form with HTTP Basic auth.
-- Environment: BENCH_AUTH (base64 of id:secret), BENCH_FORM (the body).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_FORM")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("BENCH_AUTH")

done = function(summary, latency, requests)
  io.write(string.format("non2xx=%d\n", summary.errors.status))
end
