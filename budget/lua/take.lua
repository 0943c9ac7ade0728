-- take.lua: an Update's turn at a budget's state, with the state and the
-- server's clock. KEYS: state, ledger (a stream), turn (a list), holder
-- (the turn's token, expiring), the caller's done, seq. ARGV: hold_ms.
-- The turn is free when the list holds it (put.lua hands it over there),
-- or nobody holds it (a first Update, or a holder that died). Returns
-- "token s µs 1|0\nstate" (TIME, whether the state exists), as put.lua
-- hands it over, or while another holds it, for how many ms more.
for i, want in ipairs({'string', 'stream', 'list', 'string', 'string', 'string'}) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= want and t ~= 'none' then
    return redis.error_reply(KEYS[i] .. ' is a ' .. t .. ', not a ' .. want .. '; gptbatch will not touch it')
  end
end
local token
local handed = redis.call('LPOP', KEYS[3])
if handed then
  token = string.match(handed, '^(%S+)')
elseif redis.call('EXISTS', KEYS[4]) == 1 then
  return redis.call('PTTL', KEYS[4])
else
  token = tostring(redis.call('INCR', KEYS[6]))
end
redis.call('SET', KEYS[4], token, 'PX', ARGV[1])
local t = redis.call('TIME')
local st = redis.call('GET', KEYS[1])
return token .. ' ' .. t[1] .. ' ' .. t[2] .. (st and ' 1\n' .. st or ' 0\n')
