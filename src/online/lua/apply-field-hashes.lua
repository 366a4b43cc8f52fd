-- One field-hash prefix's writes of a batch, once per batch per hash: KEYS = its hashes for read tiles ARGV[5],
-- ARGV[5] + 1, …; ARGV[6..] = segments (entity id, first read tile, count, value), expanded here (4 arguments per
-- segment, not 2 per field). ARGV[4] = '1': raise to the value (last seen), else add it. The hashes share a hash
-- tag, `{<entity>|<stored prefix>}`: one Cluster slot per series.
local marker = ARGV[1]
local batchEnd = tonumber(ARGV[2])
local isMax = ARGV[4] == '1'
local base = tonumber(ARGV[5]) - 1
local ids, values, counts = {}, {}, {}
for k = 1, #KEYS do ids[k], values[k], counts[k] = {}, {}, 0 end
for i = 6, #ARGV, 4 do
  local id, first, v = ARGV[i], tonumber(ARGV[i + 1]) - base, tonumber(ARGV[i + 3])
  for k = first, first + tonumber(ARGV[i + 2]) - 1 do
    local n = counts[k] + 1
    ids[k][n] = id
    values[k][n] = v
    counts[k] = n
  end
end
for k = 1, #KEYS do
  local n = counts[k]
  if n > 0 and tonumber(redis.call('HGET', KEYS[k], marker) or '-1') < batchEnd then
    -- Read and written in chunks: one HMGET and one HSET per chunk, not a call per id.
    for c = 1, n, 2000 do
      local e = math.min(c + 1999, n)
      local cur = redis.call('HMGET', KEYS[k], unpack(ids[k], c, e))
      local kv, j = {}, 0
      for x = c, e do
        local old = tonumber(cur[x - c + 1])
        local v = values[k][x]
        if old then v = isMax and math.max(old, v) or old + v end
        kv[j + 1] = ids[k][x]
        kv[j + 2] = string.format('%d', v)
        j = j + 2
      end
      redis.call('HSET', KEYS[k], unpack(kv))
    end
    redis.call('HSET', KEYS[k], marker, batchEnd)
    redis.call('EXPIRE', KEYS[k], tonumber(ARGV[3]))
  end
end
return 1
