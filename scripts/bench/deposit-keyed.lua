-- scripts/bench/deposit-keyed.lua: POST /wallets/UUID/deposit with a new
-- Idempotency-Key on every request, as a client that retries safely sends
-- them: each request stores its answer under its key, besides the deposit.
--
--   wrk -s deposit-keyed.lua http://127.0.0.1:PORT/wallets/UUID/deposit -- PREFIX
--   wrk -s deposit-keyed.lua http://127.0.0.1:PORT -- PREFIX WALLETS_FILE
--
-- The first form deposits into the one wallet of the URL. The second picks,
-- for each request, a wallet at random from WALLETS_FILE (one UUID per line),
-- as many clients paying into many wallets do: deposits to one wallet take
-- turns on that wallet's row lock (PostgreSQL), spread over many they can run
-- at once. Each thread draws from a generator seeded with its number, so
-- every run (and every server) gets the same sequence of wallets.
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
-- The deposit paths to pick from; empty: the URL's own path.
local paths = {}

-- Runs in the thread's own state; thread_number was set there by setup.
function init(args)
   prefix = (args[1] or "deposit") .. "-" .. tostring(thread_number or 0)
   local file = args[2]
   if file then
      for line in io.lines(file) do
         local uuid = line:match("^%s*([0-9a-fA-F-]+)%s*$")
         if uuid then
            paths[#paths + 1] = "/wallets/" .. uuid .. "/deposit"
         end
      end
      if #paths == 0 then
         error("deposit-keyed.lua: no wallet UUID in " .. file)
      end
      math.randomseed(7919 * (thread_number or 0) + 1)
   end
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
   local path = nil
   if #paths > 0 then
      path = paths[math.random(#paths)]
   end
   return wrk.format("POST", path, headers, '{"amount": 1}')
end
