-- reserve.lua: gate.go's Reserve. ARGV: rpm tpm tpd daily_cost slack_ns
-- off, then tokens and cost of each estimate. Returns {n, wait_ns, why}.
local rpm, tpm, tpd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local daily = cost(ARGV[4])
local cost_on = cgt(daily, {0, 0})
local slack, off = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_us()
local s = load()
if s.paused > now then
  return {0, string.format('%.0f', (s.paused - now) * 1000), BACK_OFF}
end
local old_m, old_d = s.mreach, s.dreach
advance(s, rpm, tpm, now, off)

-- room is gate.go's room.
local function room(tok, c)
  local wait, why, minute, day = 0, '', false, false
  local function hold(w, r)
    if w > wait then
      wait, why = w, r
    end
  end
  if tpd > 0 and s.tday + tok > tpd then
    day = true
    hold((s.day_ends - now) * 1000, DAY_TOKENS)
  end
  if cost_on and cgt(cadd(s.cday, c), daily) then
    hold((s.day_ends - now) * 1000, DAY_COST)
  end
  if tpm > 0 then
    local w = bucket_wait(s.tmin, tok, tpm, slack)
    minute = w > 0
    hold(w, MINUTE_TOKENS)
  end
  if rpm > 0 then
    hold(bucket_wait(s.rmin, 1, rpm, slack), MINUTE_REQUESTS)
  end
  return wait, why, minute, day
end

local n, wait, why, minute, day = 0, 0, '', false, false
for i = 7, #ARGV, 2 do
  local tok, c = tonumber(ARGV[i]), cost(ARGV[i + 1])
  wait, why, minute, day = room(tok, c)
  if wait > 0 then
    break
  end
  s.rmin = s.rmin + 1
  s.tmin = s.tmin + tok
  s.tday = s.tday + tok
  s.cday = cadd(s.cday, c)
  n = n + 1
end
if n > 0 or minute ~= old_m or day ~= old_d then
  s.mreach, s.dreach = minute, day
  save(s)
end
return {n, string.format('%.0f', wait), why}
