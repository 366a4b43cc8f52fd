-- How many distinct members the sets KEYS hold together: a distinct count over a window's tile sets.
if #KEYS == 0 then return 0 end
return #redis.call('SUNION', unpack(KEYS))