-- wrk script: POST a JSON body with HTTP Basic auth.
-- Environment: BENCH_AUTH (base64 of id:secret), BENCH_BODY (JSON).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic " .. os.getenv("BENCH_AUTH")

-- No `response` callback: with one, wrk hands every response's headers
-- and body to Lua, client work that the server's numbers would pay for.
-- wrk counts statuses above 399 itself ("Non-2xx or 3xx responses").
done = function(summary, latency, requests)
  io.write(string.format("non2xx=%d\n", summary.errors.status))
end
