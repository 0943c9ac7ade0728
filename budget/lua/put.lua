-- put.lua: an Update's write, and the end of its turn (take.lua's KEYS).
-- ARGV: the turn's token, hold_ms, the write's number, done_ms, the
-- ledger's oldest ID to keep (ms), the state ('' to leave it), then the
-- ledger entries. Returns 1 (also for a write done already), or 0 with
-- nothing written when the turn is no longer the caller's.
-- Writes after TIME need effects replication before Redis 5.
redis.replicate_commands()
if redis.call('GET', KEYS[4]) ~= ARGV[1] then
  if redis.call('GET', KEYS[5]) == ARGV[3] then
    return 1
  end
  return 0
end
-- All or nothing: the types are checked before anything is written.
for i, want in ipairs({'string', 'stream'}) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= want and t ~= 'none' then
    redis.call('DEL', KEYS[4]) -- the turn is free again
    return redis.error_reply(KEYS[i] .. ' is a ' .. t .. ', not a ' .. want .. '; gptbatch will not write to it')
  end
end
redis.call('SET', KEYS[5], ARGV[3], 'PX', ARGV[4])
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[1], ARGV[6])
end
for j = 7, #ARGV do
  redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[5], '*', 'e', ARGV[j])
end
-- The turn goes to the next in line with the state and the time.
local token = tostring(redis.call('INCR', KEYS[6]))
redis.call('SET', KEYS[4], token, 'PX', ARGV[2])
local t = redis.call('TIME')
local st = redis.call('GET', KEYS[1])
redis.call('RPUSH', KEYS[3], token .. ' ' .. t[1] .. ' ' .. t[2] .. (st and ' 1\n' .. st or ' 0\n'))
return 1
