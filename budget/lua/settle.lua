-- settle.lua: gate.go's Settle, and the ledger entries appended to the
-- stream KEYS[2] (trimmed to the last ARGV[4] ms). ARGV: rpm tpm off
-- keep_ms count, then est_tokens est_cost sent tokens cost of each
-- settlement, then the ledger entries' JSON.
local rpm, tpm, off = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local keep, count = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_us()
local s = load()
advance(s, rpm, tpm, now, off)
local same = not s.rolled
local last = 5 + 5 * count
for i = 6, last, 5 do
  local est_tok, est_cost = tonumber(ARGV[i]), cost(ARGV[i + 1])
  if same then
    s.tday = math.max(0, s.tday - est_tok)
    s.cday = csub(s.cday, est_cost)
  end
  s.tday = s.tday + tonumber(ARGV[i + 3])
  s.cday = cadd(s.cday, cost(ARGV[i + 4]))
  if ARGV[i + 2] ~= '1' then
    s.rmin = math.max(0, s.rmin - 1)
    s.tmin = math.max(0, s.tmin - est_tok)
  end
end
save(s)
local minid = string.format('%.0f', math.max(0, math.floor(now / 1000) - keep))
for i = last + 1, #ARGV do
  redis.call('XADD', KEYS[2], 'MINID', '~', minid, '*', 'e', ARGV[i])
end
return 1
