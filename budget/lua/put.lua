-- put.lua: an Update's write, and the end of its turn (take.lua's KEYS).
-- ARGV: me, hold_ms, the write's number, done_ms (how long the done key
-- keeps it), the ledger's oldest ID to keep (ms), the state ('' to leave
-- it), then the ledger entries. Returns 1 (also when this write was done
-- already: the script sent again), or 0 with nothing written when the turn
-- is no longer the caller's (held past hold_ms).
if redis.call('GET', KEYS[4]) ~= ARGV[1] then
  if redis.call('GET', KEYS[5]) == ARGV[3] then
    return 1
  end
  return 0
end
-- The turn goes back: the next in line has hold_ms to take it.
redis.call('SET', KEYS[4], '', 'PX', ARGV[2])
redis.call('SET', KEYS[5], ARGV[3], 'PX', ARGV[4])
redis.call('RPUSH', KEYS[3], 1)
-- All or nothing: the types are checked before anything is written.
for i, want in ipairs({'string', 'stream'}) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= want and t ~= 'none' then
    return redis.error_reply(KEYS[i] .. ' is a ' .. t .. ', not a ' .. want .. '; gptbatch will not write to it')
  end
end
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[1], ARGV[6])
end
for j = 7, #ARGV do
  redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[5], '*', 'e', ARGV[j])
end
return 1
