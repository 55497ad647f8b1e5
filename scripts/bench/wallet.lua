-- scripts/bench/wallet.lua: POST /wallets/ with an empty body (a new wallet
-- per request).
--
-- The empty string (not nil) makes wrk send Content-Length: 0, as a client
-- posting an empty body does.

-- report.lua lives next to this file (wrk names the script as it was given).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

wrk.method = "POST"
wrk.body = ""
