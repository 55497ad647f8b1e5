-- scripts/bench/deposit-keyed.lua: POST /wallets/UUID/deposit with a new
-- Idempotency-Key on every request, as a client that retries safely sends
-- them: each request stores its answer under its key, besides the deposit.
--
--   wrk -s deposit-keyed.lua http://127.0.0.1:PORT/wallets/UUID/deposit -- PREFIX
--
-- Keys are PREFIX-THREAD-COUNTER: PREFIX tells runs apart (warm-up, rounds),
-- THREAD tells wrk's threads apart (each has its own Lua state, hence its
-- own counter). A request built per call costs the load generator some CPU
-- (Lua per request), the same for every server it is pointed at.

-- report.lua lives next to this file (wrk names the script as it was given).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

local prefix = "deposit"
local counter = 0
local headers = {}

-- Runs in the thread's own state; thread_number was set there by setup.
function init(args)
   prefix = (args[1] or "deposit") .. "-" .. tostring(thread_number or 0)
   -- wrk.format uses the table it is given instead of wrk.headers: copy them
   -- (Host, and the API key report.lua added).
   for name, value in pairs(wrk.headers) do
      headers[name] = value
   end
   headers["Content-Type"] = "application/json"
end

function request()
   counter = counter + 1
   headers["Idempotency-Key"] = prefix .. "-" .. counter
   return wrk.format("POST", nil, headers, '{"amount": 1}')
end
