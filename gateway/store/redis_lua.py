"""Lua scripts for `RedisStore`: each check is one atomic script, timed by the Redis clock."""

__all__ = ["ACQUIRE_SLOT", "ADMIT", "FINISH", "REFUND", "TAKE"]

# The token buckets' refill (`load`) and store (`save`), shared by TAKE and ADMIT; `now` is
# the Redis clock in seconds, set by the script before; put in where a script says `-- buckets`.
_BUCKETS = """
local function load(key, cap)
  if cap == 0 then return nil end
  local v = redis.call('HMGET', key, 'level', 'ts', 'cap')
  local level, ts = tonumber(v[1]), tonumber(v[2])
  if level == nil or ts == nil or tonumber(v[3]) ~= cap then
    level = cap
    ts = now
  end
  return math.min(cap, level + math.max(0, now - ts) * cap / 60)
end
local function save(key, cap, level)
  if level == nil then return end
  redis.call('HSET', key, 'level', tostring(level), 'ts', tostring(now), 'cap', cap)
  redis.call('EXPIRE', key, 120)
end
"""

# KEYS: request bucket, token bucket. ARGV: rpm (0 = none), tpm (0 = none), tokens.
# Returns {allowed, wait_s, request_level, token_level} (levels -1 where a limit is off).
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
-- buckets
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rl, tl = load(KEYS[1], rpm), load(KEYS[2], tpm)
local wait = 0
if rl then wait = math.max(wait, (1 - rl) * 60 / rpm) end
if tl then wait = math.max(wait, (cost - tl) * 60 / tpm) end
local allowed = 0
if wait <= 0 then
  allowed = 1
  wait = 0
  if rl then rl = rl - 1 end
  if tl then tl = tl - cost end
end
save(KEYS[1], rpm, rl)
save(KEYS[2], tpm, tl)
return {allowed, tostring(wait), tostring(rl or -1), tostring(tl or -1)}
"""

# KEYS: token bucket. ARGV: tpm, tokens to give back.
REFUND = """
local v = redis.call('HMGET', KEYS[1], 'level', 'ts', 'cap')
if v[1] == false or tonumber(v[3]) ~= tonumber(ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap = tonumber(ARGV[1])
local level = math.min(cap, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * cap / 60)
level = math.min(cap, level + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'level', tostring(level), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return 1
"""

# KEYS: slot set. ARGV: limit, slot id, lease ms. Expired leases are dropped first.
ACQUIRE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
local lease = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
if redis.call('PTTL', KEYS[1]) < lease then redis.call('PEXPIRE', KEYS[1], lease) end
return 1
"""

# One round trip per request each way: a concurrency slot and the rate buckets together.
# KEYS: slot set, request bucket, token bucket. ARGV: limit (0 = none), slot id, lease ms,
# rpm (0 = none), tpm (0 = none), tokens. Returns {slot_ok, allowed, wait_s, request_level,
# token_level}; the slot is not kept when the rate limit refuses, the buckets not touched when
# the slot is refused.
ADMIT = """
local t = redis.call('TIME')
local limit = tonumber(ARGV[1])
if limit > 0 then
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[1]) >= limit then return {0, 0, '0', '-1', '-1'} end
  local lease = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], now_ms + lease, ARGV[2])
  if redis.call('PTTL', KEYS[1]) < lease then redis.call('PEXPIRE', KEYS[1], lease) end
end
local rpm, tpm, cost = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if rpm == 0 and tpm == 0 then return {1, 1, '0', '-1', '-1'} end
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
-- buckets
local rl, tl = load(KEYS[2], rpm), load(KEYS[3], tpm)
local wait = 0
if rl then wait = math.max(wait, (1 - rl) * 60 / rpm) end
if tl then wait = math.max(wait, (cost - tl) * 60 / tpm) end
local allowed = 0
if wait <= 0 then
  allowed = 1
  wait = 0
  if rl then rl = rl - 1 end
  if tl then tl = tl - cost end
elseif limit > 0 then
  redis.call('ZREM', KEYS[1], ARGV[2])
end
save(KEYS[2], rpm, rl)
save(KEYS[3], tpm, tl)
return {1, allowed, tostring(wait), tostring(rl or -1), tostring(tl or -1)}
"""

# KEYS: slot set, token bucket. ARGV: slot id ('' = none), tpm (0 = none), tokens to give back.
FINISH = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local cap, back = tonumber(ARGV[2]), tonumber(ARGV[3])
if cap == 0 or back <= 0 then return 1 end
local v = redis.call('HMGET', KEYS[2], 'level', 'ts', 'cap')
if v[1] == false or tonumber(v[3]) ~= cap then return 1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local level = math.min(cap, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * cap / 60)
level = math.min(cap, level + back)
redis.call('HSET', KEYS[2], 'level', tostring(level), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[2], 120)
return 1
"""

TAKE = TAKE.replace("-- buckets\n", _BUCKETS)
ADMIT = ADMIT.replace("-- buckets\n", _BUCKETS)
