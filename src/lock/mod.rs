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

mod run;
pub mod scripts;

pub use run::dispatch;
