-- common.lua: the part every script shares. It is the Go code of
-- budget/gate.go (advance, drain, bucketWait, room) on the server's clock,
-- operation for operation, so that both decide alike to the last bit.
--
-- KEYS[1] is the budget's state, a hash:
--   tmin, rmin   the minute buckets' levels (%.17g, so they read back exact)
--   tday         tokens within the day
--   cday         dollars within the day, integer picodollars
--   mreach, dreach  minute_token_limit_reached, day_token_limit_reached (0/1)
--   updated      when the buckets were last drained, µs of the server's TIME
--   paused       nobody sends before this, µs; 0 = not paused
--   day_ends     the instant the day ends, µs; 0 = no day yet
--   day_off      the UTC offset (s) of the zone whose midnight day_ends is
--   ver          counts writes, for the compare-and-swap of Update
-- Redis's Lua has only doubles: times in µs and token counts are exact
-- integers below 2^53, and dollars are kept as two numbers (see cost).

-- Writes after TIME need effects replication before Redis 5 (a no-op since).
redis.replicate_commands()

local US = 1000000
local DAY = 86400 * US

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

local function cstr(c)
  if c[1] > 0 then
    return string.format('%.0f%06d', c[1], c[2])
  end
  return string.format('%d', c[2])
end

local function num(v)
  return tonumber(v) or 0
end

local function load()
  local v = redis.call('HMGET', KEYS[1], 'tmin', 'rmin', 'tday', 'cday', 'mreach', 'dreach',
    'updated', 'paused', 'day_ends', 'day_off')
  return {
    tmin = num(v[1]), rmin = num(v[2]), tday = num(v[3]), cday = cost(v[4] or '0'),
    mreach = v[5] == '1', dreach = v[6] == '1',
    updated = num(v[7]), paused = num(v[8]), day_ends = num(v[9]), day_off = num(v[10]),
  }
end

local function flag(b)
  if b then return '1' end
  return '0'
end

local function save(s)
  redis.call('HSET', KEYS[1],
    'tmin', string.format('%.17g', s.tmin), 'rmin', string.format('%.17g', s.rmin),
    'tday', string.format('%.0f', s.tday), 'cday', cstr(s.cday),
    'mreach', flag(s.mreach), 'dreach', flag(s.dreach),
    'updated', string.format('%.0f', s.updated), 'paused', string.format('%.0f', s.paused),
    'day_ends', string.format('%.0f', s.day_ends), 'day_off', string.format('%.0f', s.day_off))
  redis.call('HINCRBY', KEYS[1], 'ver', 1)
end

-- secs is time.Duration.Seconds of d µs: whole seconds plus the rest.
local function secs(d)
  local sec = math.floor(d / US)
  local nsec = (d - sec * US) * 1000
  return sec + nsec / 1e9
end

-- next_midnight is the first midnight after t (µs) at UTC offset off (s).
local function next_midnight(t, off)
  local o = off * US
  return (math.floor((t + o) / DAY) + 1) * DAY - o
end

local function drain(level, limit, s)
  if limit <= 0 then
    return 0
  end
  return math.max(0, level - limit / 60 * s)
end

-- advance is gate.go's advance. The day ends at day_ends for every host,
-- whatever its zone; the host that starts a day sets when it ends (its own
-- next midnight, off). The buckets' time never moves back.
local function advance(s, rpm, tpm, now, off)
  if s.day_ends == 0 or now >= s.day_ends then
    s.day_ends, s.day_off = next_midnight(now, off), off
    s.tday, s.cday, s.dreach = 0, {0, 0}, false
    s.rolled = true
  end
  if s.updated == 0 then
    s.updated = now
  elseif now > s.updated then
    local el = secs(now - s.updated)
    s.tmin = drain(s.tmin, tpm, el)
    s.rmin = drain(s.rmin, rpm, el)
    s.updated = now
  end
  if s.paused ~= 0 and now >= s.paused then
    s.paused = 0
  end
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

-- The reasons, as gate.go spells them.
local MINUTE_REQUESTS, MINUTE_TOKENS = 'minute request limit', 'minute token limit'
local DAY_TOKENS, DAY_COST, BACK_OFF = 'day token limit', 'daily cost limit', 'server back-off'
