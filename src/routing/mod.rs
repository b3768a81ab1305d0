//! Where a key lives: hash tags, hash functions and the ring of shards.
//!
//! A key's shard depends only on the key and the configured shards (names, weights, order),
//! never on node health: failover happens inside a shard, so a sick node never moves a key.

mod hash;
mod ring;
mod tag;

pub use hash::HashFn;
pub use ring::{Distribution, Ring, RingMember};
pub use tag::HashTag;

/// Everything needed to map a key to a shard index. Immutable; swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Router {
    hash: HashFn,
    tag: Option<HashTag>,
    ring: Ring,
}

impl Router {
    pub fn new(
        hash: HashFn,
        distribution: Distribution,
        tag: Option<HashTag>,
        members: &[RingMember],
    ) -> Router {
        Router {
            hash,
            tag,
            ring: Ring::new(distribution, members),
        }
    }

    /// The index (in configuration order) of the shard that owns `key`.
    #[inline]
    pub fn shard_of(&self, key: &[u8]) -> usize {
        let hashed = match &self.tag {
            Some(tag) => tag.hashed_part(key),
            None => key,
        };
        self.ring.lookup(self.hash.hash(hashed))
    }

    pub fn shard_count(&self) -> usize {
        self.ring.member_count()
    }

    /// The shard of every key a glob-style pattern can form, when the pattern fixes it: a
    /// non-empty hash tag with no wildcard (`*`, `?`, `[`, `\\`) before it closes, as Redis
    /// Cluster's rule for SORT patterns. With one shard, every pattern's.
    pub fn pattern_shard(&self, pattern: &[u8]) -> Option<usize> {
        if self.shard_count() == 1 {
            return Some(0);
        }
        let tag = self.tag.as_ref()?;
        let end = tag.closed_at(pattern)?;
        let wild = |b: &u8| matches!(b, b'*' | b'?' | b'[' | b'\\');
        if pattern[..end].iter().any(wild) {
            return None;
        }
        Some(self.shard_of(&pattern[..=end]))
    }
}

#[cfg(test)]
mod tests;
