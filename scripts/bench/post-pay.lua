-- scripts/bench/post-pay.lua: the mock bank's own throughput, POST /pay as
-- the processor calls it, with a new Idempotency-Key on every request (a
-- replayed key would take the bank's cheaper "already paid" path).
--
--   wrk -s post-pay.lua http://127.0.0.1:BANKPORT/pay -- PREFIX
--
-- Keys are PREFIX-THREAD-COUNTER: PREFIX tells runs apart (the warm-up and
-- the measured run share one ledger), THREAD tells wrk's threads apart
-- (each has its own Lua state, hence its own counter).

-- report.lua lives next to this file (wrk names the script as it was given).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

local prefix = "bench"
local counter = 0

-- Runs in the thread's own state; thread_number was set there by setup.
function init(args)
   prefix = (args[1] or "bench") .. "-" .. tostring(thread_number or 0)
end

function request()
   counter = counter + 1
   local key = prefix .. "-" .. counter
   return wrk.format("POST", nil,
      { ["Content-Type"] = "application/json", ["Idempotency-Key"] = key },
      '{"reference": "' .. key .. '", "wallet": "00000000-0000-4000-8000-000000000000", "amount": 1}')
end
