-- The parts one source partition wrote: KEYS = entity hashes, ARGV[1] = the source. Answers one JSON array string,
-- a part (JSON) or null per hash.
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, ARGV[1]) or 'null' end
return '[' .. table.concat(out, ',') .. ']'
