-- settle.lua: gate.go's Settle, and the ledger entries appended to the
-- stream KEYS[2] (trimmed to the last keep_ms). ARGV from A: keep_ms count,
-- then est_tokens est_cost sent day_only tokens cost day of each
-- settlement, then the ledger entries' JSON. Returns seen.
local keep, count = tonumber(ARGV[A]), tonumber(ARGV[A + 1])
local now = now_us()
local s = load()
local same = not advance(s, limits(s), now)
local first = A + 2
local last = first + 7 * count - 1
for i = first, last, 7 do
  local est_tok, est_cost = tonumber(ARGV[i]), cost(ARGV[i + 1])
  -- The estimate goes back from the day it was counted in, if it is
  -- still the counters' day; without a day, from this update's day.
  local day = ARGV[i + 6]
  if (day == '' and same) or (day ~= '' and day == s.date) then
    s.tday = math.max(0, s.tday - est_tok)
    s.cday = csub(s.cday, est_cost)
  end
  s.tday = s.tday + tonumber(ARGV[i + 4])
  s.cday = cadd(s.cday, cost(ARGV[i + 5]))
  -- A request never sent gives its minute charge back; one of ReserveDay
  -- never had one.
  if ARGV[i + 2] ~= '1' and ARGV[i + 3] ~= '1' then
    s.rmin = math.max(0, s.rmin - 1)
    s.tmin = math.max(0, s.tmin - est_tok)
  end
end
save(s)
local minid = string.format('%.0f', math.max(0, math.floor(now / 1000) - keep))
for i = last + 1, #ARGV do
  redis.call('XADD', KEYS[2], 'MINID', '~', minid, '*', 'e', ARGV[i])
end
return seen(s)
