-- Distinct-count members of a batch: KEYS = sets; ARGV[1] = TTL, then per set: n, n members. Adding a member twice
-- changes nothing: no marker needed.
local ttl = tonumber(ARGV[1])
local at = 2
for k = 1, #KEYS do
  local n = tonumber(ARGV[at])
  redis.call('SADD', KEYS[k], unpack(ARGV, at + 1, at + n))
  redis.call('EXPIRE', KEYS[k], ttl)
  at = at + 1 + n
end
return 1
