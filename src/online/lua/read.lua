-- Groups of reads, each the same field names of several hashes: ARGV = group count, then per group its hash
-- count, name count and names; KEYS = every group's hashes in order. Answers one string, the values hash by hash,
-- name by name, joined by "," ("" when absent): one reply to parse, not thousands.
local out, n = {}, 0
local k, i = 1, 2
for g = 1, tonumber(ARGV[1]) do
  local nKeys, nNames = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  for j = 1, nKeys do
    local v = redis.call('HMGET', KEYS[k], unpack(ARGV, i + 2, i + 1 + nNames))
    for x = 1, nNames do out[n + x] = v[x] or '' end
    n = n + nNames
    k = k + 1
  end
  i = i + 2 + nNames
end
return table.concat(out, ',')
