-- sync.lua: gate.go's Sync, or pace.go's Refused. The back-off is given as
-- a duration from the server's now, so a host's skewed clock can neither
-- stretch nor cut it. ARGV from A: mode ('sync' or 'refused'), the limit
-- refused ('r' requests, 't' tokens, '' unsaid), pause_us ('' for none;
-- may be negative), used_requests used_tokens (negative: unknown).
-- Returns {newly, seen...}: the limit this refusal newly paced, or ''.
local mode, lim, pause = ARGV[A], ARGV[A + 1], ARGV[A + 2]
local ureq, utok = tonumber(ARGV[A + 3]), tonumber(ARGV[A + 4])
local now = now_us()
local s = load()
local l = limits(s)
advance(s, l, now)
local till = nil
if pause ~= '' then
  till = now + tonumber(pause)
end
local newly = ''
if mode == 'refused' then
  -- The server refused while the bucket, which mirrors its own, had a
  -- second's worth of room: it enforces the limit per second.
  local function roomy(level, limit)
    return limit > 0 and level <= limit - math.max(1, limit / 60)
  end
  if lim == 'r' and roomy(s.rmin, l.rpm) then
    if not paced(s.rpaced, now) then
      newly = PACED_REQUESTS
    end
    s.rpaced = now + PACE_LAPSE
  elseif lim == 't' and roomy(s.tmin, l.tpm) then
    if not paced(s.tpaced, now) then
      newly = PACED_TOKENS
    end
    s.tpaced = now + PACE_LAPSE
  end
  if till and paced(s.rpaced, now) then
    s.rnext = later(s.rnext, till)
  end
  if till and paced(s.tpaced, now) then
    s.tnext = later(s.tnext, till)
  end
end
if till and till > s.paused then
  s.paused = till
end
if ureq > s.rmin then
  s.rmin = ureq
end
if utok > s.tmin then
  s.tmin = utok
end
save(s)
return {newly, unpack(seen(s))}
