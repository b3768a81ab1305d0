//! Mirror mode: which copies of the primary's writes are whole, and rebuilding those that
//! are not.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis_protocol::resp2::types::OwnedFrame;

use super::super::link::{self, Link};
use super::super::{Node, View};
use super::Monitor;
use crate::backend::mirror::{Sync, DUMP_SCRIPT};
use crate::backend::{Mirror, Target};
use crate::config::BackendSettings;
use crate::resp::{encode, Proto};

impl Monitor {
    /// Mirror mode: a replica is readable while in sync; one that is down turns stale, and a
    /// stale one that is up gets resynced.
    pub(super) fn judge_mirrors(&mut self, mirror: &Arc<Mirror>, view: &View, source_ok: bool) {
        self.resyncs.retain(|_, task| !task.is_finished());
        for node in &view.replicas {
            let Some(target) = mirror.target(&node.addr) else {
                continue;
            };
            node.health
                .offset
                .store(target.applied() as i64, Ordering::Relaxed);
            if !node.health.is_up() {
                target.mark_stale(&self.shard.name, "down");
            } else if source_ok
                && target.state() == Sync::Stale
                && !self.resyncs.contains_key(&node.addr)
            {
                let task = tokio::spawn(resync(
                    self.shard.name.clone(),
                    mirror.clone(),
                    target.clone(),
                    view.primary.clone(),
                    self.config.backend.clone(),
                ));
                self.resyncs.insert(node.addr.clone(), task);
            }
            let readable = node.health.is_up() && target.state() == Sync::InSync;
            node.health.readable.store(readable, Ordering::Relaxed);
        }
    }
}

/// Mirror mode: rebuilds a stale replica from the primary. It is emptied, then every key is
/// DUMPed on the primary's data connection (so the RESTOREs are ordered with the writes
/// copied meanwhile, which it gets again from now on), and it is in sync once all of that is
/// confirmed.
async fn resync(
    shard: Arc<str>,
    mirror: Arc<Mirror>,
    target: Arc<Target>,
    primary: Arc<Node>,
    backend: BackendSettings,
) {
    tracing::warn!(shard = %shard, node = %target.addr, "mirror replica resync started");
    match resync_steps(&mirror, &target, &primary, &backend).await {
        Ok(keys) => {
            tracing::warn!(shard = %shard, node = %target.addr, keys, "mirror replica in sync")
        }
        Err(e) => {
            target.mark_stale(&shard, &format!("resync failed: {e}"));
        }
    }
}

async fn resync_steps(
    mirror: &Mirror,
    target: &Arc<Target>,
    primary: &Node,
    backend: &BackendSettings,
) -> Result<usize, String> {
    target.set_state(Sync::Resyncing);
    let mut flush = bytes::BytesMut::new();
    encode::command(&mut flush, [&b"FLUSHALL"[..]].into_iter());
    mirror.push_to(target, flush.freeze());
    let timeout = backend.timeout;
    let mut link = Link::open(&primary.addr, timeout, backend).await?;
    let conn = primary.pool.conn(Proto::Resp2, 0).clone();
    let mut cursor = b"0".to_vec();
    let mut copied = 0;
    loop {
        let reply = link::ok(link.call(&[b"SCAN", &cursor, b"COUNT", b"200"]).await?)?;
        let OwnedFrame::Array(parts) = reply else {
            return Err("SCAN: not an array".into());
        };
        let [OwnedFrame::BulkString(next), OwnedFrame::Array(keys)] = &parts[..] else {
            return Err("SCAN: unexpected reply".into());
        };
        let keys: Vec<bytes::Bytes> = keys
            .iter()
            .filter_map(|k| match k {
                OwnedFrame::BulkString(k) => Some(bytes::Bytes::from(k.clone())),
                _ => None,
            })
            .collect();
        if !keys.is_empty() {
            copied += keys.len();
            let count = keys.len().to_string();
            let mut request = bytes::BytesMut::new();
            let args: Vec<&[u8]> = [&b"EVAL"[..], DUMP_SCRIPT, count.as_bytes()]
                .into_iter()
                .chain(keys.iter().map(|k| &k[..]))
                .collect();
            encode::command(&mut request, args.into_iter());
            let rx = conn
                .send_resync(request.freeze(), target.clone(), keys)
                .await;
            match rx.await {
                Ok(Ok(frame)) if !crate::resp::reply::is_error(&frame) => {}
                Ok(Ok(frame)) => {
                    return Err(String::from_utf8_lossy(&frame).trim_end().to_string())
                }
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("the primary connection went away".into()),
            }
        }
        if target.state() == Sync::Stale {
            return Err("a copy failed meanwhile".into());
        }
        if next.as_slice() == b"0" {
            break;
        }
        cursor = next.clone();
    }
    match mirror.barrier(target).await {
        Ok(Ok(_)) if target.finish_resync() => Ok(copied),
        _ => Err("a copy failed".into()),
    }
}
