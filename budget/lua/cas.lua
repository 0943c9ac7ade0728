-- cas.lua: the write of Update, only if nobody wrote since it read.
-- ARGV: the version read ('' for none), keep_ms (how long the stream KEYS[2]
-- keeps entries), the number of field/value pairs and the pairs, the number
-- of fields to delete and their names, then the ledger entries' JSON.
local ver = redis.call('HGET', KEYS[1], 'ver')
if (ver or '') ~= ARGV[1] then
  return 0
end
local keep, npairs = tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 4
if npairs > 0 then
  local kv = {}
  for j = i, i + 2 * npairs - 1 do
    kv[#kv + 1] = ARGV[j]
  end
  redis.call('HSET', KEYS[1], unpack(kv))
end
i = i + 2 * npairs
local ndel = tonumber(ARGV[i])
for j = i + 1, i + ndel do
  redis.call('HDEL', KEYS[1], ARGV[j])
end
i = i + ndel + 1
redis.call('HINCRBY', KEYS[1], 'ver', 1)
local t = redis.call('TIME')
local minid = string.format('%.0f', math.max(0, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - keep))
for j = i, #ARGV do
  redis.call('XADD', KEYS[2], 'MINID', '~', minid, '*', 'e', ARGV[j])
end
return 1
