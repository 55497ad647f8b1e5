-- scripts/bench/deposit.lua: POST /wallets/UUID/deposit, the same small
-- deposit on every request (the URL names the wallet).
--
-- No Idempotency-Key: it is optional, and a fixed body lets wrk build the
-- request once instead of calling Lua per request, which would cost the
-- load generator CPU that the server shares on this machine.

-- report.lua lives next to this file (wrk names the script as it was given).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"amount": 1}'
