-- scripts/bench/deposit-spread.lua: POST /wallets/UUID/deposit with a new
-- Idempotency-Key on every request (as deposit-keyed.lua), each to a wallet
-- picked at random from a list, as many clients paying into many wallets do.
-- Deposits to one wallet take turns on that wallet's row lock (PostgreSQL);
-- spread over many, they can run at once.
--
--   wrk -s deposit-spread.lua http://127.0.0.1:PORT -- PREFIX WALLETS_FILE
--
-- WALLETS_FILE holds one wallet UUID per line. Keys are
-- PREFIX-THREAD-COUNTER (see deposit-keyed.lua). Each thread draws its
-- wallets from a generator seeded with its number, so every run (and every
-- server) gets the same sequence of wallets: two servers compared see the
-- same collisions, a few among 32 requests in flight over many wallets.

-- report.lua lives next to this file (wrk names the script as it was given).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

local prefix = "spread"
local counter = 0
local headers = {}
local paths = {}

-- Runs in the thread's own state; thread_number was set there by setup.
function init(args)
   local file = args[2]
   if not file then
      error("deposit-spread.lua: give a key prefix and the file of wallet UUIDs: wrk ... -- PREFIX FILE")
   end
   for line in io.lines(file) do
      local uuid = line:match("^%s*([0-9a-fA-F-]+)%s*$")
      if uuid then
         paths[#paths + 1] = "/wallets/" .. uuid .. "/deposit"
      end
   end
   if #paths == 0 then
      error("deposit-spread.lua: no wallet UUID in " .. file)
   end
   prefix = args[1] .. "-" .. tostring(thread_number or 0)
   math.randomseed(7919 * (thread_number or 0) + 1)
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
   return wrk.format("POST", paths[math.random(#paths)], headers, '{"amount": 1}')
end
