-- scripts/bench/withdraw.lua: POST /wallets/UUID/withdraw, scheduled far in
-- the future so that no processor pass ever touches these withdrawals (and
-- the balance is not checked until they are due).
--
-- A fixed request, built once by wrk (see deposit.lua).

-- report.lua lives next to this file (wrk names the script as it was given).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"amount": 1, "scheduled_for": "2099-01-01T00:00:00Z"}'
