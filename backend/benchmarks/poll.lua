-- A conditional GET (issue 22's polling client): the bearer token (TOKEN) and If-None-Match
-- (IF_NONE_MATCH) from the environment; reports latency and bytes read as JSON when done, so the
-- benchmark can tell 304s (a few hundred bytes of headers) from full answers.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
wrk.headers["If-None-Match"] = os.getenv("IF_NONE_MATCH")

done = function(summary, latency, requests)
  io.write(string.format(
    'JSON{"requests": %d, "duration_us": %d, "bytes": %d, "errors": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
      + summary.errors.status,
    latency:percentile(50), latency:percentile(99)))
end
