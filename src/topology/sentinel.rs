//! Sentinel mode: Redis Sentinel names a shard's primary and replicas, and its config epoch is
//! the shard's epoch. shardis never promotes on its own here, so several proxies in front of
//! one fleet always agree with each other: Sentinel's quorum has already decided.
//!
//! The watcher subscribes to `+switch-master` on one sentinel and asks it (SENTINEL MASTER,
//! SENTINEL REPLICAS) on every event and every health interval, so a missed event costs one
//! interval. A sentinel that fails is left for the next one in the list.

use std::sync::Arc;

use redis_protocol::resp2::types::OwnedFrame;
use tokio::task::AbortHandle;

use super::link::{self, Link};
use super::state::ShardState;
use super::{Shard, StateFile, View};
use crate::config::{Config, SentinelConfig};

pub fn spawn(shard: Arc<Shard>, config: Config, state: Arc<StateFile>) -> AbortHandle {
    tokio::spawn(watch(shard, config, state)).abort_handle()
}

/// Time allowed for Sentinel's leader election and promotion, past down-after-milliseconds.
const SENTINEL_ELECTION_MS: u64 = 3_000;

/// What Sentinel says about a master.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    primary: String,
    replicas: Vec<String>,
    epoch: u64,
    down_after_ms: u64,
}

async fn watch(shard: Arc<Shard>, config: Config, state: Arc<StateFile>) {
    let sentinel = shard.config.sentinel.clone().expect("a sentinel shard");
    let timeout = config.backend.timeout;
    let mut next = 0;
    loop {
        let addr = &sentinel.addresses[next % sentinel.addresses.len()];
        next += 1;
        if let Err(e) = follow(&shard, &config, &state, &sentinel, addr).await {
            tracing::warn!(shard = %shard.name, sentinel = %addr, "{e}");
        }
        tokio::time::sleep(config.health.interval.min(timeout)).await;
    }
}

/// Follows one sentinel until it fails.
async fn follow(
    shard: &Arc<Shard>,
    config: &Config,
    state: &StateFile,
    sentinel: &SentinelConfig,
    addr: &str,
) -> Result<(), String> {
    let timeout = config.backend.timeout;
    let mut ask = Link::connect(addr, timeout).await?;
    let mut events = Link::connect(addr, timeout).await?;
    events.send(&[b"SUBSCRIBE", b"+switch-master"]).await?;
    loop {
        let answer = query(&mut ask, &sentinel.master).await?;
        apply(shard, config, state, answer).await;
        // Wait for an event about this master, or one interval.
        let wait = tokio::time::sleep(config.health.interval);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                frame = events.read() => {
                    if is_switch_of(&frame?, &sentinel.master) {
                        break;
                    }
                }
                _ = &mut wait => break,
            }
        }
    }
}

/// `message +switch-master "<master> <old ip> <old port> <new ip> <new port>"`.
fn is_switch_of(frame: &OwnedFrame, master: &str) -> bool {
    let OwnedFrame::Array(items) = frame else {
        return false;
    };
    match items.as_slice() {
        [kind, _, payload] => {
            link::text(kind).as_deref() == Some("message")
                && link::text(payload).is_some_and(|p| p.split(' ').next() == Some(master))
        }
        _ => false,
    }
}

async fn query(link: &mut Link, master: &str) -> Result<Answer, String> {
    let m = link::ok(
        link.call(&[b"SENTINEL", b"MASTER", master.as_bytes()])
            .await?,
    )?;
    let fields = link::pairs(&m);
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let (Some(ip), Some(port)) = (get("ip"), get("port")) else {
        return Err(format!("SENTINEL MASTER {master}: no ip/port in the reply"));
    };
    let epoch = get("config-epoch")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let down_after_ms = get("down-after-milliseconds")
        .and_then(|e| e.parse().ok())
        .unwrap_or(30_000);
    let r = link::ok(
        link.call(&[b"SENTINEL", b"REPLICAS", master.as_bytes()])
            .await?,
    )?;
    let OwnedFrame::Array(list) = r else {
        return Err("SENTINEL REPLICAS: not an array".into());
    };
    let mut replicas: Vec<String> = list
        .iter()
        .filter_map(|entry| {
            let f = link::pairs(entry);
            let get = |k: &str| f.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
            Some(format!("{}:{}", get("ip")?, get("port")?))
        })
        .collect();
    let primary = format!("{ip}:{port}");
    replicas.retain(|r| *r != primary);
    replicas.sort();
    Ok(Answer {
        primary,
        replicas,
        epoch,
        down_after_ms,
    })
}

/// Installs what Sentinel said, if it differs from the current view.
async fn apply(shard: &Arc<Shard>, config: &Config, state: &StateFile, answer: Answer) {
    // Sentinel notices a dead primary after down-after-milliseconds, then elects a leader and
    // promotes, which takes a few seconds more: requests stay parked that long.
    shard.park_extra_ms.store(
        answer.down_after_ms + SENTINEL_ELECTION_MS,
        std::sync::atomic::Ordering::Relaxed,
    );
    let view = shard.view();
    let mut current: Vec<String> = view.replicas.iter().map(|n| n.addr.clone()).collect();
    current.sort();
    if view.primary.addr == answer.primary
        && view.epoch == answer.epoch
        && current == answer.replicas
    {
        return;
    }
    if answer.epoch < view.epoch {
        tracing::warn!(
            shard = %shard.name,
            "ignoring a sentinel that reports epoch {} (we are at {})",
            answer.epoch,
            view.epoch
        );
        return;
    }
    let switched = view.primary.addr != answer.primary;
    // A new epoch freezes lock grants; the same one (new replicas only) keeps any freeze.
    let result = if answer.epoch > view.epoch {
        shard.begin_epoch(
            state,
            answer.epoch,
            &answer.primary,
            config.policy.locks.freeze(),
        )
    } else {
        let record = ShardState {
            epoch: answer.epoch,
            primary: answer.primary.clone(),
            locks_frozen_until_ms: state
                .get(&shard.name)
                .map_or(0, |s| s.locks_frozen_until_ms),
        };
        state.set(&shard.name, record)
    };
    if let Err(e) = result {
        tracing::error!(shard = %shard.name, "{e}");
    }
    let primary = shard.node(&answer.primary, &config.backend);
    primary.health.set_up(true);
    if answer.epoch > view.epoch {
        // Before the parked requests: a lock grant parked under the old epoch must find the
        // new one recorded on the new primary and be refused.
        if let Err(e) = shard.record_epoch(&primary, answer.epoch).await {
            tracing::warn!(shard = %shard.name, "cannot record the epoch on the primary: {e}");
            // A parked lock grant would find the old epoch there: fail them instead.
            for p in shard.parking.take() {
                p.request.fail(crate::backend::BackendError::ShardDown {
                    shard: shard.name.clone(),
                    reason: "the new primary did not take the new epoch record".into(),
                });
            }
        }
    }
    let replicas = answer
        .replicas
        .iter()
        .map(|a| shard.node(a, &config.backend))
        .collect();
    // Parked requests go to the new primary before anything routed by the new view.
    shard
        .parking
        .accept_from(Some(Arc::from(primary.addr.as_str())));
    if switched {
        for p in shard.parking.take() {
            primary.pool.conn_at(p.proto, p.index).try_resend(p.request);
        }
    }
    shard.view.store(Arc::new(View {
        epoch: answer.epoch,
        primary: primary.clone(),
        replicas,
    }));
    if switched {
        shard
            .failovers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            shard = %shard.name,
            from = %view.primary.addr,
            to = %answer.primary,
            epoch = answer.epoch,
            "primary switched by Sentinel"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> OwnedFrame {
        OwnedFrame::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn switch_events_are_matched_by_master_name() {
        let event = |payload: &str| {
            OwnedFrame::Array(vec![bulk("message"), bulk("+switch-master"), bulk(payload)])
        };
        assert!(is_switch_of(&event("m 127.0.0.1 1 127.0.0.1 2"), "m"));
        assert!(!is_switch_of(&event("mm 127.0.0.1 1 127.0.0.1 2"), "m"));
        let confirm = OwnedFrame::Array(vec![
            bulk("subscribe"),
            bulk("+switch-master"),
            OwnedFrame::Integer(1),
        ]);
        assert!(!is_switch_of(&confirm, "m"));
    }
}
