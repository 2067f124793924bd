-- wrk script: POST one fixed body on every connection, print a JSON summary at the end.
-- wrk -t1 -c64 -d5s -s bench/post.lua URL -- <body file> <content type> [<header name> <header value>]...

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.method = "POST"
   wrk.body = file:read("*a")
   file:close()
   wrk.headers["Content-Type"] = args[2]
   for i = 3, #args - 1, 2 do
      wrk.headers[args[i]] = args[i + 1]
   end
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      'WRK_JSON {"duration_us":%d,"requests":%d,"status_errors":%d,"connect_errors":%d,"read_errors":%d,' ..
      '"write_errors":%d,"timeouts":%d,"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p95":%d,"p99":%d}}\n',
      summary.duration, summary.requests, errors.status, errors.connect, errors.read, errors.write, errors.timeout,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
