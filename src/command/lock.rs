//! The lock commands (LOCK.*, FENCE.ADVANCE, FENCED, and SET NX PX under the lock prefix):
//! their names, how they are parsed and routed, and the fencing token they carry. Carrying
//! them out on a shard is [`crate::lock`]'s job; why tokens never go backwards is told there.

mod plan;

use bytes::Bytes;

pub use plan::{plan, plan_set, reserved_key, COMMANDS};

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
mod tests;
