//! Fenced locks: leases on keys whose fencing tokens only grow, checked where the data is.
//!
//! A lock is an ordinary Redis key holding its owner, with a TTL (so stock clients and the
//! Redis docs' recipes keep working), plus state the proxy keeps beside it on the same shard
//! (see [`scripts`]). Every step is one Lua script on the shard's primary, so a check and the
//! write it guards are one atomic step.
//!
//! A token is `epoch << 40 | counter`: the shard's epoch, which grows on every failover and is
//! durable, over a per-lock counter. So every token issued after a failover is above every
//! token issued before it, even when the new primary lost the last increments. Three more
//! rules close the gaps a failover leaves:
//! - a grant is answered only once the shard's healthy replicas have it (WAIT); one that is
//!   not replicated in time is undone;
//! - a grant runs only on a node that records the proxy's epoch for the shard (so a request
//!   parked during a failover cannot mint an old-epoch token on the new primary);
//! - after a failover the shard grants nothing for the longest lease plus a margin, so every
//!   lease the old primary gave has ended before the new one gives any.

mod plan;
mod run;
pub mod scripts;

use bytes::Bytes;

pub use plan::{plan, plan_set, reserved_key, COMMANDS};
pub use run::{dispatch, LockStats};

/// Keys whose names start with this belong to shardis; clients can neither name nor see them.
pub const RESERVED: &[u8] = b"__shardis__:";
/// Per shard: one hash holding the state of every lock on the shard.
pub const STATE_KEY: &[u8] = b"__shardis__:locks";
/// Per shard: the epoch the primary serves under (replicated with the data). Lock grants run
/// only where it equals the proxy's epoch for the shard.
pub const EPOCH_KEY: &[u8] = b"__shardis__:epoch";

/// Whether `key` is one of shardis' own.
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED)
}

/// Low bits of a token: the per-lock counter.
const COUNTER_BITS: u32 = 40;

/// The highest epoch a token can carry.
pub const MAX_EPOCH: u64 = (1 << (63 - COUNTER_BITS)) - 1;

/// The highest epoch shardis takes from a node's record without having followed the shard up
/// to near it: half of what a token can carry. An honest fleet never gets near it (a failover a
/// second for seven weeks); a forged record above it is refused, and one at most this high
/// still leaves the shard as many epochs again.
pub const MAX_RECORDED_EPOCH: u64 = 1 << (62 - COUNTER_BITS);

/// A fencing token: the shard's epoch in the high bits, a per-lock counter in the low ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FenceToken(u64);

impl FenceToken {
    /// The token for `counter` (at least 1, below 2^40) in `epoch` (below 2^23, so the token
    /// is a positive signed 64-bit integer, as Redis integers are).
    pub fn new(epoch: u64, counter: u64) -> Option<FenceToken> {
        let ok = epoch < 1 << (63 - COUNTER_BITS) && (1..1 << COUNTER_BITS).contains(&counter);
        ok.then_some(FenceToken(epoch << COUNTER_BITS | counter))
    }

    /// A token as a client sends it: a positive decimal integer.
    pub fn parse(arg: &[u8]) -> Option<FenceToken> {
        let n = u64::try_from(crate::resp::parse_i64(arg)?).ok()?;
        FenceToken::new(n >> COUNTER_BITS, n & ((1 << COUNTER_BITS) - 1))
    }

    pub fn epoch(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    pub fn counter(self) -> u64 {
        self.0 & ((1 << COUNTER_BITS) - 1)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// A lock command, parsed and routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockCommand {
    pub key: Bytes,
    pub shard: usize,
    pub op: LockOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOp {
    /// LOCK.ACQUIRE, or `SET key owner NX PX ttl` under the lock prefix (`set_form`).
    Acquire {
        owner: Bytes,
        ttl_ms: u64,
        set_form: bool,
    },
    Extend {
        owner: Bytes,
        token: FenceToken,
        ttl_ms: u64,
    },
    Release {
        owner: Bytes,
        token: FenceToken,
    },
    Status,
    Token {
        owner: Bytes,
    },
    /// FENCED key token command... ; FENCE.ADVANCE when `command` is empty.
    Fence {
        token: FenceToken,
        command: Vec<Bytes>,
    },
}

impl LockOp {
    /// Whether it changes the lock's state (and so is a write for WAIT and `write_ack`).
    pub fn writes(&self) -> bool {
        !matches!(self, LockOp::Status | LockOp::Token { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_order_by_epoch_then_counter() {
        let a = FenceToken::new(1, (1 << 40) - 1).unwrap();
        let b = FenceToken::new(2, 1).unwrap();
        assert!(a < b);
        assert_eq!(b.get(), (2 << 40) + 1);
        assert_eq!((b.epoch(), b.counter()), (2, 1));
        assert_eq!(FenceToken::parse(b"2199023255553"), Some(b));
        assert_eq!(FenceToken::new(0, 0), None);
        assert_eq!(FenceToken::new(0, 1 << 40), None);
        assert_eq!(FenceToken::new(1 << 23, 1), None);
        assert_eq!(
            FenceToken::new((1 << 23) - 1, 1).map(|t| t.get() < i64::MAX as u64),
            Some(true)
        );
        for bad in [&b"0"[..], b"-5", b"x", b"", b"1099511627776"] {
            assert_eq!(FenceToken::parse(bad), None, "{bad:?}");
        }
        assert!(FenceToken::new(MAX_EPOCH, 1).is_some());
        assert_eq!(MAX_RECORDED_EPOCH * 2, MAX_EPOCH + 1);
    }
}
