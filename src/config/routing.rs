//! The `[routing]` section: which shard a key belongs to. Checked into the parts of
//! [`Config`](super::Config) that [`Config::router`](super::Config::router) builds its
//! [`Router`](crate::routing::Router) from.

use super::check::invalid;
use super::raw::RawRouting;
use super::ConfigError;
use crate::routing::{Distribution, HashFn, HashTag};

impl RawRouting {
    /// The hash, the distribution, and the hash tag (`""` for none).
    pub(super) fn validate(&self) -> Result<(HashFn, Distribution, Option<HashTag>), ConfigError> {
        let hash = HashFn::parse(&self.hash).ok_or_else(|| {
            invalid(
                "routing.hash",
                format!("{:?}: expected xxh3, fnv1a_64 or md5", self.hash),
            )
        })?;
        let distribution = Distribution::parse(&self.distribution).ok_or_else(|| {
            invalid(
                "routing.distribution",
                format!("{:?}: expected ketama or modula", self.distribution),
            )
        })?;
        let hash_tag = match self.hash_tag.as_str() {
            "" => None,
            spec => Some(HashTag::parse(spec).ok_or_else(|| {
                invalid(
                    "routing.hash_tag",
                    format!("{spec:?}: expected two ASCII characters, or \"\" for none"),
                )
            })?),
        };
        Ok((hash, distribution, hash_tag))
    }
}
