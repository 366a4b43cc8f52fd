-- Entity hashes' writes of a batch, each hash once per batch: KEYS = the hashes; ARGV[1..3] = marker, batch end, TTL;
-- then per hash: prune-before, sums s, n, n field names, their n values. The first s fields add, the rest raise to
-- their value (last seen). A prune-before > 0 also deletes the hash's fields of read tiles starting before it.
local marker = ARGV[1]
local batchEnd = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local at = 4
for h = 1, #KEYS do
  local key = KEYS[h]
  local pruneBefore, sums, n = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local names = at + 3
  at = names + 2 * n
  if tonumber(redis.call('HGET', key, marker) or '-1') < batchEnd then
    -- Read and written in chunks: one HMGET and one HSET per chunk, not a call per field.
    for c = names, names + n - 1, 2000 do
      local e = math.min(c + 1999, names + n - 1)
      local cur = redis.call('HMGET', key, unpack(ARGV, c, e))
      local kv, k = {}, 0
      for j = c, e do
        local old = tonumber(cur[j - c + 1])
        local v = tonumber(ARGV[j + n])
        if old then v = j - names >= sums and math.max(old, v) or old + v end
        kv[k + 1] = ARGV[j]
        kv[k + 2] = string.format('%d', v)
        k = k + 2
      end
      redis.call('HSET', key, unpack(kv))
    end
    if pruneBefore > 0 then
      for _, f in ipairs(redis.call('HKEYS', key)) do
        local sec, tile = string.match(f, '^%d+%.(%d+)%.%d+:(%-?%d+)$')
        if sec and tonumber(tile) * tonumber(sec) * 1000 < pruneBefore then redis.call('HDEL', key, f) end
      end
    end
    redis.call('HSET', key, marker, batchEnd)
    redis.call('EXPIRE', key, ttl)
  end
end
return 1
