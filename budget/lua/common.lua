-- common.lua: the part every script shares. It is the Go code of
-- budget/gate.go and budget/pace.go (advance, advanceDay, drain,
-- bucketWait, room, paceWait, chargePace, lapsePace, Limits.Ceil) on the
-- server's clock, operation for operation, so that both decide alike to the
-- last bit.
--
-- KEYS[1] is the budget's state, a hash:
--   tmin, rmin   the minute buckets' levels (%.17g, so they read back exact)
--   tday         tokens within the day
--   cday         dollars within the day, integer picodollars
--   mreach, dreach  minute_token_limit_reached, day_token_limit_reached (0/1)
--   updated      when the buckets were last drained, µs of the server's TIME
--   paused       nobody sends before this, µs; 0 = not paused
--   day_ends     the instant the day ends, µs; 0 = no day yet
--   date         the day the day counters belong to, YYYY-MM-DD
--   rpaced, tpaced  the request/token limit is paced per second until this, µs; 0 = not
--   rnext, tnext    when paced, the earliest the next request/tokens may go, ns
--   lrpm, ltpm, ltpd, lcost  limits stored with the budget (lcost picodollars); 0 = none
--   ver          counts writes, for the compare-and-swap of Update
-- Redis's Lua has only doubles: times in µs and token counts are exact
-- integers below 2^53; dollars and the pace's ns are kept as two numbers
-- (see cost and slot).
--
-- Every script's ARGV starts with the gate's own limits and the days around
-- the host's now in the gate's zone (dayArgs in redis.go):
--   rpm tpm tpd daily_cost  off  n  start  end_1 date_1 ... end_n date_n
-- day i runs from end_{i-1} (start for i = 1) to end_i; off is the UTC
-- offset (s) to fall back on when the server's now is outside them all.
-- A script's own arguments start at ARGV[A].

-- Writes after TIME need effects replication before Redis 5 (a no-op since).
redis.replicate_commands()

local US = 1000000
local DAY = 86400 * US
local MAX_FUTURE = US            -- gate.go maxFuture
local MAX_DAY = 26 * 3600 * US   -- gate.go maxDay
local PACE_LAPSE = 60 * US       -- pace.go PaceLapse
local PACE_SHARE = 0.98          -- pace.go PaceShare

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * US + tonumber(t[2])
end

-- A cost is {hi, lo}: hi micro-dollars and lo picodollars below one, so that
-- every int64 of picodollars is exact.
local function cost(s)
  s = s or '0'
  if #s > 6 then
    return {tonumber(string.sub(s, 1, -7)), tonumber(string.sub(s, -6))}
  end
  return {0, tonumber(s)}
end

local function cadd(a, b)
  local lo = a[2] + b[2]
  return {a[1] + b[1] + math.floor(lo / US), lo % US}
end

-- csub is max(0, a-b).
local function csub(a, b)
  local hi, lo = a[1] - b[1], a[2] - b[2]
  if lo < 0 then
    hi, lo = hi - 1, lo + US
  end
  if hi < 0 then
    return {0, 0}
  end
  return {hi, lo}
end

local function cgt(a, b)
  return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2])
end

local function con(a)
  return cgt(a, {0, 0})
end

local function cstr(c)
  if c[1] > 0 then
    return string.format('%.0f%06d', c[1], c[2])
  end
  return string.format('%d', c[2])
end

-- A slot is a time in ns as {us, ns}: µs and the ns below one, so that the
-- pace's intervals in ns add up exact. {0, 0} is no time.
local function slot(s)
  s = s or '0'
  if #s > 3 then
    return {tonumber(string.sub(s, 1, -4)), tonumber(string.sub(s, -3))}
  end
  return {0, tonumber(s)}
end

local function sstr(t)
  if t[1] > 0 then
    return string.format('%.0f%03d', t[1], t[2])
  end
  return string.format('%d', t[2])
end

-- after says whether slot t is after now (µs).
local function after(t, now)
  return t[1] > now or (t[1] == now and t[2] > 0)
end

-- later is pace.go's later(t, at) for a slot t and a time at in µs.
local function later(t, at)
  if after(t, at) then
    return t
  end
  return {at, 0}
end

-- add_ns is t plus ns (a whole number below 2^53).
local function add_ns(t, ns)
  local us = math.floor(ns / 1000)
  local rest = ns - us * 1000
  -- ns/1000 may round up or down to a whole number; rest says which.
  if rest < 0 then
    us, rest = us - 1, rest + 1000
  elseif rest >= 1000 then
    us, rest = us + 1, rest - 1000
  end
  local lo = t[2] + rest
  if lo >= 1000 then
    return {t[1] + us + 1, lo - 1000}
  end
  return {t[1] + us, lo}
end

local function num(v)
  return tonumber(v) or 0
end

local function load()
  local v = redis.call('HMGET', KEYS[1], 'tmin', 'rmin', 'tday', 'cday', 'mreach', 'dreach',
    'updated', 'paused', 'day_ends', 'date', 'rpaced', 'rnext', 'tpaced', 'tnext',
    'lrpm', 'ltpm', 'ltpd', 'lcost')
  return {
    tmin = num(v[1]), rmin = num(v[2]), tday = num(v[3]), cday = cost(v[4] or '0'),
    mreach = v[5] == '1', dreach = v[6] == '1',
    updated = num(v[7]), paused = num(v[8]), day_ends = num(v[9]), date = v[10] or '',
    rpaced = num(v[11]), rnext = slot(v[12] or '0'), tpaced = num(v[13]), tnext = slot(v[14] or '0'),
    stored = {rpm = num(v[15]), tpm = num(v[16]), tpd = num(v[17]), cost = cost(v[18] or '0')},
  }
end

local function flag(b)
  if b then return '1' end
  return '0'
end

-- save writes what the scripts change; the stored limits they only read.
local function save(s)
  redis.call('HSET', KEYS[1],
    'tmin', string.format('%.17g', s.tmin), 'rmin', string.format('%.17g', s.rmin),
    'tday', string.format('%.0f', s.tday), 'cday', cstr(s.cday),
    'mreach', flag(s.mreach), 'dreach', flag(s.dreach),
    'updated', string.format('%.0f', s.updated), 'paused', string.format('%.0f', s.paused),
    'day_ends', string.format('%.0f', s.day_ends), 'date', s.date,
    'rpaced', string.format('%.0f', s.rpaced), 'rnext', sstr(s.rnext),
    'tpaced', string.format('%.0f', s.tpaced), 'tnext', sstr(s.tnext))
  redis.call('HINCRBY', KEYS[1], 'ver', 1)
end

-- seen is what Gate.Seen records of s: the day's use and the stored limits.
local function seen(s)
  return {s.date, string.format('%.0f', s.tday), cstr(s.cday),
    string.format('%.0f', s.stored.rpm), string.format('%.0f', s.stored.tpm),
    string.format('%.0f', s.stored.tpd), cstr(s.stored.cost)}
end

-- The gate's own limits and the days around the host's now.
local own = {rpm = tonumber(ARGV[1]), tpm = tonumber(ARGV[2]), tpd = tonumber(ARGV[3]), cost = cost(ARGV[4])}
local day_off = tonumber(ARGV[5])
local ndays = tonumber(ARGV[6])
local day_start = tonumber(ARGV[7])
local A = 8 + 2 * ndays

-- limits is Limits.Ceil: own under the stored ceilings, a limit that is off
-- (0) in either being the other's.
local function limits(s)
  local function low(a, b)
    if a <= 0 then return b end
    if b <= 0 then return a end
    return math.min(a, b)
  end
  local c = s.stored.cost
  if not con(own.cost) then
  elseif not con(c) or cgt(c, own.cost) then
    c = own.cost
  end
  return {rpm = low(own.rpm, s.stored.rpm), tpm = low(own.tpm, s.stored.tpm),
    tpd = low(own.tpd, s.stored.tpd), cost = c}
end

-- civil is the date of a day counted from 1970-01-01 (days_from_civil's
-- inverse, H. Hinnant).
local function civil(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then
    y = y + 1
  end
  return string.format('%04d-%02d-%02d', y, m, d)
end

-- day_of is the end and the date of the day now is in, in the gate's zone:
-- from the days the host worked out, or, for a host clock days off the
-- server's, at the fixed offset off.
local function day_of(now)
  if now >= day_start then
    for i = 0, ndays - 1 do
      local e = tonumber(ARGV[8 + 2 * i])
      if now < e then
        return e, ARGV[9 + 2 * i]
      end
    end
  end
  local o = day_off * US
  local d = math.floor((now + o) / DAY)
  return (d + 1) * DAY - o, civil(d)
end

-- advance_day is gate.go's advanceDay: the day ends at day_ends for every
-- host, whatever its zone; the host that starts a day sets when it ends.
local function advance_day(s, now)
  local next_end, today = day_of(now)
  if s.day_ends == 0 then
    if s.date == today then
      s.day_ends = next_end
      return false
    end
  elseif now < s.day_ends then
    if s.day_ends - now > MAX_DAY then
      s.day_ends = next_end
    end
    return false
  end
  s.date, s.day_ends = today, next_end
  s.tday, s.cday, s.dreach = 0, {0, 0}, false
  return true
end

-- secs is time.Duration.Seconds of d µs: whole seconds plus the rest.
local function secs(d)
  local sec = math.floor(d / US)
  local nsec = (d - sec * US) * 1000
  return sec + nsec / 1e9
end

local function drain(level, limit, s)
  if limit <= 0 then
    return 0
  end
  return math.max(0, level - limit / 60 * s)
end

local function paced(u, now)
  return u ~= 0 and now < u
end

-- lapse_pace is pace.go's lapsePace.
local function lapse_pace(s, now)
  if s.rpaced ~= 0 and now >= s.rpaced then
    s.rpaced, s.rnext = 0, {0, 0}
  end
  if s.tpaced ~= 0 and now >= s.tpaced then
    s.tpaced, s.tnext = 0, {0, 0}
  end
end

-- advance is gate.go's advance; it returns whether a new day started.
local function advance(s, l, now)
  local rolled = advance_day(s, now)
  if s.updated > now + MAX_FUTURE then
    s.updated = now
  end
  if s.updated == 0 then
    s.updated = now
  elseif now > s.updated then
    local el = secs(now - s.updated)
    s.tmin = drain(s.tmin, l.tpm, el)
    s.rmin = drain(s.rmin, l.rpm, el)
    s.updated = now
  end
  if s.paused ~= 0 and now >= s.paused then
    s.paused = 0
  end
  lapse_pace(s, now)
  return rolled
end

-- bucket_wait is gate.go's bucketWait, in ns.
local function bucket_wait(level, need, limit, slack_ns)
  local rate = limit / 60
  local sec = math.floor(slack_ns / 1e9)
  local capacity = limit - math.floor(rate * (sec + (slack_ns - sec * 1e9) / 1e9))
  if level <= 0 or need > capacity then
    capacity = limit
  end
  local over = level + need - capacity
  if over <= 1e-6 + limit * 1e-12 then
    return 0
  end
  return math.ceil(over / rate * 1e9)
end

-- interval is pace.go's paceInterval, in ns.
local function interval(units, limit)
  return math.floor(units * 60000000000 / (limit * PACE_SHARE))
end

-- The reasons, as gate.go and pace.go spell them.
local MINUTE_REQUESTS, MINUTE_TOKENS = 'minute request limit', 'minute token limit'
local DAY_TOKENS, DAY_COST, BACK_OFF = 'day token limit', 'daily cost limit', 'server back-off'
local PACED_REQUESTS, PACED_TOKENS = 'request limit, paced per second', 'token limit, paced per second'

-- room is gate.go's room, with pace.go's paceWait: the wait in ns, the
-- reason, and whether the minute and the day token limits hold tok.
local function room(s, l, slack, tok, c, now)
  local wait, why, minute, day = 0, '', false, false
  local function hold(w, r)
    if w > wait then
      wait, why = w, r
    end
  end
  if l.tpd > 0 and s.tday + tok > l.tpd then
    day = true
    hold((s.day_ends - now) * 1000, DAY_TOKENS)
  end
  if con(l.cost) and cgt(cadd(s.cday, c), l.cost) then
    hold((s.day_ends - now) * 1000, DAY_COST)
  end
  if l.tpm > 0 then
    local w = bucket_wait(s.tmin, tok, l.tpm, slack)
    minute = w > 0
    hold(w, MINUTE_TOKENS)
  end
  if l.rpm > 0 then
    hold(bucket_wait(s.rmin, 1, l.rpm, slack), MINUTE_REQUESTS)
  end
  if l.rpm > 0 and paced(s.rpaced, now) and after(s.rnext, now) then
    hold((s.rnext[1] - now) * 1000 + s.rnext[2], PACED_REQUESTS)
  end
  if l.tpm > 0 and paced(s.tpaced, now) and after(s.tnext, now) then
    hold((s.tnext[1] - now) * 1000 + s.tnext[2], PACED_TOKENS)
  end
  return wait, why, minute, day
end

-- charge_pace is pace.go's chargePace.
local function charge_pace(s, l, tok, now)
  if l.rpm > 0 and paced(s.rpaced, now) then
    s.rnext = add_ns(later(s.rnext, now), interval(1, l.rpm))
  end
  if l.tpm > 0 and paced(s.tpaced, now) then
    s.tnext = add_ns(later(s.tnext, now), interval(tok, l.tpm))
  end
end
