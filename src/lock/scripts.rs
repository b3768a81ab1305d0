//! The Lua scripts that keep lock state on a shard's primary.
//!
//! Every script gets the same three keys: `KEYS[1]` the lock key, `KEYS[2]` the shard's lock
//! state hash ([`STATE_KEY`](crate::command::lock::STATE_KEY)) and `KEYS[3]` the shard's epoch key. The state
//! of one lock is the hash field named after the lock key:
//!
//! ```text
//! "<he> <hc> <te> <tc> <owner>"
//!   he hc   the high-water mark: the newest token seen for the lock (epoch, counter)
//!   te tc   the token of the current hold (0 0 when none)
//!   owner   the owner of that hold (the lock key's value while it is held)
//! ```
//!
//! A token is handled as its two halves, each far below 2^53, so Lua's numbers (doubles)
//! hold them exactly. A grant's counter is one above the high-water mark's in the same epoch,
//! and 1 in a newer epoch, so a new token is always above every token the lock has seen.
//! The field is never deleted: the mark must outlive the lock key.

/// Shared helpers, prepended to every script.
macro_rules! prelude {
    () => {
        r#"
local function state()
  local s = redis.call('HGET', KEYS[2], KEYS[1])
  if not s then return 0, 0, 0, 0, '' end
  local he, hc, te, tc, o = string.match(s, '^(%d+) (%d+) (%d+) (%d+) (.*)$')
  if not he then return redis.error_reply('ERR corrupt lock state for this key') end
  return tonumber(he), tonumber(hc), tonumber(te), tonumber(tc), o
end
local function save(he, hc, te, tc, o)
  redis.call('HSET', KEYS[2], KEYS[1], string.format('%d %d %d %d ', he, hc, te, tc) .. o)
end
local function holds(owner, te, tc, he, hc, se, sc, o)
  return se == tonumber(te) and sc == tonumber(tc) and sc > 0 and o == owner
    and redis.call('GET', KEYS[1]) == owner
end
"#
    };
}

/// ARGV: owner, ttl ms, the proxy's epoch, `1` when the same owner may refresh its hold.
/// Returns `{1, epoch, counter}` granted, `{2, epoch, counter}` refreshed (same token),
/// `{0, 0, 0}` held by another, `{-1, node epoch or -1}` when the node's epoch is not the
/// proxy's.
pub const GRANT: &str = concat!(
    prelude!(),
    r#"
local e = redis.call('GET', KEYS[3])
if e ~= ARGV[3] then return {-1, tonumber(e) or -1} end
local he, hc, te, tc, o = state()
local cur = redis.call('GET', KEYS[1])
if cur then
  if ARGV[4] == '1' and cur == ARGV[1] and o == ARGV[1] and tc > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {2, te, tc}
  end
  return {0, 0, 0}
end
local ep = tonumber(ARGV[3])
if he > ep then return redis.error_reply('ERR lock state is ahead of the shard epoch') end
local c = 1
if he == ep then c = hc + 1 end
if c >= 1099511627776 then
  return redis.error_reply('ERR the fencing counter of this lock is exhausted until the next epoch')
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
save(ep, c, ep, c, ARGV[1])
return {1, ep, c}
"#
);

/// ARGV: owner, token epoch, token counter, ttl ms. 1 when extended, 0 when not the holder.
pub const EXTEND: &str = concat!(
    prelude!(),
    r#"
local he, hc, se, sc, o = state()
if not holds(ARGV[1], ARGV[2], ARGV[3], he, hc, se, sc, o) then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#
);

/// ARGV: owner, token epoch, token counter. 1 when released, 0 when not the holder. Also
/// takes back a grant that was not replicated: the high-water mark stays, so its token is
/// never issued again.
pub const RELEASE: &str = concat!(
    prelude!(),
    r#"
local he, hc, se, sc, o = state()
if not holds(ARGV[1], ARGV[2], ARGV[3], he, hc, se, sc, o) then return 0 end
redis.call('DEL', KEYS[1])
save(he, hc, 0, 0, '')
return 1
"#
);

/// No ARGV. `{owner, epoch, counter, pttl}` (a token of 0 0 when the key was not set by a
/// grant), or `{}` when the lock is free.
pub const STATUS: &str = concat!(
    prelude!(),
    r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return {} end
local he, hc, se, sc, o = state()
local pttl = redis.call('PTTL', KEYS[1])
if o ~= cur or sc == 0 then se, sc = 0, 0 end
return {cur, se, sc, pttl}
"#
);

/// ARGV: owner. `{epoch, counter}` of that owner's hold, or `{}`.
pub const TOKEN: &str = concat!(
    prelude!(),
    r#"
local he, hc, se, sc, o = state()
if sc > 0 and o == ARGV[1] and redis.call('GET', KEYS[1]) == ARGV[1] then return {se, sc} end
return {}
"#
);

/// ARGV: token epoch, token counter, then the wrapped command (none for FENCE.ADVANCE).
/// Only the lock's newest token passes: one below the high-water mark gets `-STALETOKEN`, one
/// above it was never granted (forged, or from another shard) and gets an error, and in both
/// cases nothing runs. A token is granted only by the grant script, which raises the mark, so
/// the mark is the newest token granted for the lock.
pub const FENCE: &str = concat!(
    prelude!(),
    r#"
local he, hc, se, sc, o = state()
local ne, nc = tonumber(ARGV[1]), tonumber(ARGV[2])
local e = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
if ne > e then
  return redis.error_reply(string.format('ERR token is from epoch %d, but this shard is at epoch %d: it was not issued here', ne, e))
end
-- No record of the lock, and a token from an earlier epoch: the state was lost with data
-- (a grant is replicated before it is answered), so the token cannot be shown current.
if he == 0 and hc == 0 and ne < e then
  return redis.error_reply(string.format('STALETOKEN token from epoch %d, but this shard has no record of the lock since', ne))
end
if ne < he or (ne == he and nc < hc) then
  return redis.error_reply(string.format('STALETOKEN token %.0f is older than %.0f, the newest seen for this lock', ne * 1099511627776 + nc, he * 1099511627776 + hc))
end
if ne > he or nc > hc then
  return redis.error_reply(string.format('ERR token %.0f was never granted for this lock (the newest granted is %.0f)', ne * 1099511627776 + nc, he * 1099511627776 + hc))
end
if #ARGV > 2 then
  return redis.pcall(unpack(ARGV, 3))
end
return 1
"#
);

/// KEYS: the epoch record, the lock state. ARGV: FLUSHDB or FLUSHALL and its arguments. Empties
/// the database and puts shardis' own keys back, in one atomic step, so a flush neither loses
/// the epoch (which would start a new one and freeze lock grants) nor sends lock tokens back.
pub const FLUSH: &str = r#"
local e = redis.call('GET', KEYS[1])
local locks = redis.call('HGETALL', KEYS[2])
redis.call(unpack(ARGV))
if e then redis.call('SET', KEYS[1], e) end
for i = 1, #locks, 1000 do
  redis.call('HSET', KEYS[2], unpack(locks, i, math.min(i + 999, #locks)))
end
return redis.status_reply('OK')
"#;

/// DBSIZE without shardis' own keys (the epoch key and the lock state hash).
pub const DBSIZE: &str =
    "return redis.call('DBSIZE') - redis.call('EXISTS', '__shardis__:epoch', '__shardis__:locks')";

/// RANDOMKEY that never answers one of shardis' own keys: a few random draws, then a scan,
/// which only a shard holding almost nothing else needs.
pub const RANDOMKEY: &str = r#"
local function mine(k) return string.sub(k, 1, 12) == '__shardis__:' end
for i = 1, 16 do
  local k = redis.call('RANDOMKEY')
  if not k then return false end
  if not mine(k) then return k end
end
local cursor = '0'
repeat
  local r = redis.call('SCAN', cursor, 'COUNT', 100)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    if not mine(k) then return k end
  end
until cursor == '0'
return false
"#;

/// A primary's INFO memory, persistence, stats, replication and keyspace, without shardis' own
/// keys in db0's count (the line goes when nothing else is left, as Redis leaves out an empty
/// database).
pub const INFO_FLEET: &str = r#"
local info = redis.call('INFO', 'memory', 'persistence', 'stats', 'replication', 'keyspace')
local n = redis.call('EXISTS', '__shardis__:epoch', '__shardis__:locks')
if n == 0 then return info end
local out = string.gsub(info, 'db0:keys=(%d+)([^\r\n]*)\r\n', function(keys, rest)
  local left = tonumber(keys) - n
  if left <= 0 then return '' end
  return 'db0:keys=' .. left .. rest .. '\r\n'
end)
return out
"#;
