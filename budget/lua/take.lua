-- take.lua: an Update's turn at a budget's state (redis.go), and the state
-- with the server's clock. KEYS: the budget's state (usage.md's text),
-- ledger (a stream), turn (a list), holder and the caller's done. ARGV:
-- me, hold_ms, and 'try' (take the turn if it is free) or 'took' (the
-- caller popped it from the turn list). The turn is free when the list
-- holds it, or when nobody holds it: a budget's first Update, or a holder
-- that died (hold_ms went by); and it is the caller's when it holds it
-- already (this script sent again). Returns {1, TIME's s and µs, the
-- state} with the turn, or {0, ms} while another holds it for up to ms
-- more.
for i, want in ipairs({'string', 'stream', 'list', 'string', 'string'}) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= want and t ~= 'none' then
    return redis.error_reply(KEYS[i] .. ' is a ' .. t .. ', not a ' .. want .. '; gptbatch will not touch it')
  end
end
if ARGV[3] == 'try' and redis.call('GET', KEYS[4]) ~= ARGV[1] and not redis.call('LPOP', KEYS[3])
    and redis.call('EXISTS', KEYS[4]) == 1 then
  return {0, redis.call('PTTL', KEYS[4])}
end
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
return {1, t[1], t[2], redis.call('GET', KEYS[1])}
