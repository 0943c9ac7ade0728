-- sync.lua: gate.go's Sync, with the pause given as a duration from the
-- server's now, so a host's skewed clock cannot stretch or cut it.
-- ARGV: rpm tpm off pause_us used_requests used_tokens (negative: unknown).
local rpm, tpm, off = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local pause, ureq, utok = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_us()
local s = load()
advance(s, rpm, tpm, now, off)
if pause > 0 and now + pause > s.paused then
  s.paused = now + pause
end
if ureq > s.rmin then
  s.rmin = ureq
end
if utok > s.tmin then
  s.tmin = utok
end
save(s)
return 1
