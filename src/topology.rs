//! Shards and their nodes, as the data path sees them: an immutable snapshot.
//!
//! A [`Topology`] is built from a [`Config`] and swapped whole (arc-swap) when the shard layout
//! changes; sessions load the current one per batch and never take a lock on the hot path.

use std::sync::Arc;

use crate::backend::{NodePool, NodeSettings, NodeState};
use crate::config::Config;
use crate::routing::Router;

/// One shard: its place on the ring and its nodes.
pub struct Shard {
    pub name: String,
    pub primary: NodePool,
    /// Accepted and validated now; served by the replication work.
    pub replicas: Vec<String>,
}

pub struct Topology {
    pub router: Router,
    pub shards: Vec<Shard>,
}

impl Topology {
    /// Builds the ring and starts connecting to every primary. Needs a tokio runtime.
    pub fn start(config: &Config) -> Topology {
        let router = config.router();
        let shards = config
            .shards
            .iter()
            .map(|s| Shard {
                name: s.name.clone(),
                primary: NodePool::start(NodeSettings {
                    addr: s.primary.clone(),
                    label: Arc::from(format!("shard '{}' node {}", s.name, s.primary)),
                    backend: config.backend,
                }),
                replicas: s.replicas.clone(),
            })
            .collect();
        Topology { router, shards }
    }

    /// A shard to send a keyless command to: the first whose primary is up, else the first.
    pub fn any_shard(&self) -> usize {
        self.shards
            .iter()
            .position(|s| s.primary.state() == NodeState::Up)
            .unwrap_or(0)
    }
}
