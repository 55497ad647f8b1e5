-- scripts/bench/report.lua: the summary of one wrk run as one JSON line.
--
-- Used on its own (`wrk -s report.lua URL`: a plain GET) and loaded by the
-- other scripts of this directory. scripts/bench.sh reads the line starting
-- with BENCH_RESULT instead of scraping wrk's human-readable text, whose
-- units change with the magnitude (us, ms, s; k, M).
--
-- Times are microseconds. wrk counts as status errors only answers >= 400
-- (it has no notion of 1xx/3xx being errors); the API answers 200/201 on
-- success, so that is the same as "not 2xx" here.

-- Every request carries the API key of the stack under test (bench.sh sets
-- BENCH_API_KEY; the servers that need none ignore the header).
local key = os.getenv("BENCH_API_KEY")
if key and key ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. key
end

-- Numbers wrk's threads 1, 2, ... (runs in wrk's main Lua state, once per
-- thread before it starts): a script that keeps per-thread state (keys,
-- generator seeds) reads `thread_number` in its init.
local next_thread = 0

function setup(thread)
   next_thread = next_thread + 1
   thread:set("thread_number", next_thread)
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
      '"status_errors": %d, "timeouts": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max))
end
