//! The `[[shards]]` entries: each shard's nodes, its share of the ring, and its replication
//! settings, the ones it leaves out taken from `[replication]`.

use super::check::invalid;
use super::raw::{RawSentinel, RawShard};
use super::replication::{parse_mode, parse_read_from, parse_write_ack, ShardDefaults};
use super::{ConfigError, ReadFrom, ReplicationMode, WriteAck};

/// One `[[shards]]` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// Identity on the ring (default: the primary's `host:port`).
    pub name: String,
    pub primary: String,
    pub replicas: Vec<String>,
    pub weight: u32,
    pub replication: ReplicationMode,
    /// Redis mode: point replicas at the primary at start (else only check and report).
    pub manage_replication: bool,
    pub write_ack: WriteAck,
    pub read_from: ReadFrom,
    pub sentinel: Option<SentinelConfig>,
}

impl ShardConfig {
    /// The shard's nodes: the configured primary, then its replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }
}

/// A shard whose nodes Redis Sentinel names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    pub master: String,
    pub addresses: Vec<String>,
}

/// Every shard, in file order; at least one, and no two with the same name or a node in
/// common.
pub(super) fn validate(
    raw: Vec<RawShard>,
    defaults: &ShardDefaults,
) -> Result<Vec<ShardConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid(
            "shards",
            "at least one [[shards]] entry is required",
        ));
    }
    let shards = raw
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.validate(i, defaults))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, s) in shards.iter().enumerate() {
        if let Some(j) = shards[..i].iter().position(|o| o.name == s.name) {
            return Err(invalid(
                format!("shards[{i}].name"),
                format!("{:?} is already the name of shards[{j}]", s.name),
            ));
        }
        for node in s.nodes() {
            let clash = shards[..i]
                .iter()
                .position(|o| o.primary == *node || o.replicas.contains(node));
            if let Some(j) = clash {
                return Err(invalid(
                    format!("shards[{i}]"),
                    format!("node {node} is already in shards[{j}]"),
                ));
            }
        }
    }
    Ok(shards)
}

impl RawShard {
    /// `shards[i]` on its own.
    fn validate(self, i: usize, defaults: &ShardDefaults) -> Result<ShardConfig, ConfigError> {
        let key = |field: &str| format!("shards[{i}].{field}");
        check_addr(&key("primary"), &self.primary)?;
        for (j, r) in self.replicas.iter().enumerate() {
            check_addr(&key(&format!("replicas[{j}]")), r)?;
            if *r == self.primary {
                return Err(invalid(
                    key(&format!("replicas[{j}]")),
                    "same as the primary",
                ));
            }
        }
        if self.weight == 0 {
            return Err(invalid(key("weight"), "must be at least 1"));
        }
        let name = self.name.unwrap_or_else(|| self.primary.clone());
        if name.is_empty() {
            return Err(invalid(key("name"), "must not be empty"));
        }
        let replication = match &self.replication {
            Some(m) => parse_mode(&key("replication"), m)?,
            None => defaults.mode,
        };
        let write_ack = match &self.write_ack {
            Some(a) => parse_write_ack(&key("write_ack"), a)?,
            None => defaults.write_ack,
        };
        if let WriteAck::Replicas(n) = write_ack {
            if self.sentinel.is_none() && usize::from(n) > self.replicas.len() {
                return Err(invalid(
                    key("write_ack"),
                    format!(
                        "asks for {n} replicas but the shard has {}",
                        self.replicas.len()
                    ),
                ));
            }
        }
        let read_from = match &self.read_from {
            Some(r) => parse_read_from(&key("read_from"), r)?,
            None => defaults.read_from,
        };
        let sentinel = match self.sentinel {
            Some(sentinel) => Some(sentinel.validate(&key, replication)?),
            None => None,
        };
        Ok(ShardConfig {
            name,
            primary: self.primary,
            replicas: self.replicas,
            weight: self.weight,
            replication,
            manage_replication: self
                .manage_replication
                .unwrap_or(defaults.manage_replication),
            write_ack,
            read_from,
            sentinel,
        })
    }
}

impl RawSentinel {
    /// A shard's `sentinel`; `key` names its keys (`shards[i].<field>`).
    fn validate(
        self,
        key: &impl Fn(&str) -> String,
        replication: ReplicationMode,
    ) -> Result<SentinelConfig, ConfigError> {
        if self.master.is_empty() {
            return Err(invalid(key("sentinel.master"), "must not be empty"));
        }
        if self.addresses.is_empty() {
            return Err(invalid(key("sentinel.addresses"), "give at least one"));
        }
        for (j, a) in self.addresses.iter().enumerate() {
            check_addr(&key(&format!("sentinel.addresses[{j}]")), a)?;
        }
        if replication == ReplicationMode::Mirror {
            return Err(invalid(
                key("sentinel"),
                "Sentinel shards use Redis replication, not mirror",
            ));
        }
        Ok(SentinelConfig {
            master: self.master,
            addresses: self.addresses,
        })
    }
}

/// A node address is `host:port` with a non-empty host and a port in 1..=65535.
fn check_addr(key: &str, addr: &str) -> Result<(), ConfigError> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(invalid(key, format!("{addr:?} is not host:port")))
    }
}
