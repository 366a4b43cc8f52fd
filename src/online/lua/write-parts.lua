-- A batch's parts from one source partition: KEYS = entity hashes; ARGV = source, batch end, TTL, how many of the
-- first hashes get the TTL (again), then a part (JSON) per hash. A hash whose marker "@<source>" is at or past the batch
-- end already holds it (a replay, or a writer that lost the partition) and is left alone: a part is only ever replaced
-- by a later one.
local source, batchEnd, ttl, expiring = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local marker = '@' .. source
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('HGET', key, marker) or '-1') < batchEnd then
    redis.call('HSET', key, source, ARGV[4 + i], marker, batchEnd)
  end
  if i <= expiring then redis.call('EXPIRE', key, ttl) end
end
return 1
