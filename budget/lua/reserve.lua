-- reserve.lua: gate.go's Reserve, or day.go's ReserveDay. ARGV from A:
-- slack_ns, mode ('minute' or 'day'), then tokens and cost of each estimate.
-- Returns {n, wait_ns, why, seen...} (see seen).
local slack, day_only = tonumber(ARGV[A]), ARGV[A + 1] == 'day'
local now = now_us()
local s = load()
local l = limits(s)
-- What a caller saw had the state not changed: the Go code reads it so.
local raw = seen(s)
local first = A + 2

local function reply(n, wait, why, sn)
  return {n, string.format('%.0f', wait), why, unpack(sn)}
end

if day_only then
  -- ReserveDay: the day limits only, and nothing on the minute buckets.
  advance(s, l, now)
  local dl = {rpm = 0, tpm = 0, tpd = l.tpd, cost = l.cost}
  local n, wait, why = 0, 0, ''
  for i = first, #ARGV, 2 do
    local tok, c = tonumber(ARGV[i]), cost(ARGV[i + 1])
    wait, why = room(s, dl, 0, tok, c, now)
    if wait > 0 then
      break
    end
    s.tday = s.tday + tok
    s.cday = cadd(s.cday, c)
    n = n + 1
  end
  save(s)
  return reply(n, wait, why, seen(s))
end

local old_updated, old_m, old_d = s.updated, s.mreach, s.dreach
advance(s, l, now)
-- A clamped updated must be written: else every later script clamps it
-- again and the buckets never drain.
local clamped = s.updated ~= old_updated and old_updated > now
if s.paused > now then
  if clamped then
    save(s)
    raw = seen(s)
  end
  return reply(0, (s.paused - now) * 1000, BACK_OFF, raw)
end

local n, wait, why, minute, day = 0, 0, '', false, false
for i = first, #ARGV, 2 do
  local tok, c = tonumber(ARGV[i]), cost(ARGV[i + 1])
  wait, why, minute, day = room(s, l, slack, tok, c, now)
  if wait > 0 then
    break
  end
  charge_pace(s, l, tok, now)
  s.rmin = s.rmin + 1
  s.tmin = s.tmin + tok
  s.tday = s.tday + tok
  s.cday = cadd(s.cday, c)
  n = n + 1
end
if n == 0 and not clamped and minute == old_m and day == old_d then
  return reply(0, wait, why, raw)
end
s.mreach, s.dreach = minute, day
save(s)
return reply(n, wait, why, seen(s))
