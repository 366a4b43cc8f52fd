-- Every part of each entity hash: KEYS = the hashes. Answers one JSON string, per hash the array of its parts
-- (values starting "{"; the "@<source>" markers are numbers): one reply to parse, not a value per part.
local out = {}
for i, key in ipairs(KEYS) do
  local parts = {}
  for _, v in ipairs(redis.call('HVALS', key)) do
    if string.byte(v, 1) == 123 then parts[#parts + 1] = v end
  end
  out[i] = '[' .. table.concat(parts, ',') .. ']'
end
return '[' .. table.concat(out, ',') .. ']'
