//! Mirror replication: shardis itself copies each successful write of a shard's primary to the
//! shard's replicas, for nodes that cannot use REPLICAOF.
//!
//! A write is copied when its reply arrives from the primary, so copies go out in the order the
//! primary executed them on each connection (a mirror shard uses one connection per protocol to
//! its primary). Each replica has a queue and a worker that pipelines the copies to it and
//! counts what it confirmed. A replica that fails a copy, falls too far behind or goes down is
//! *stale*: it gets nothing and serves no reads until resynced. A resync empties it, then
//! copies every key with DUMP/RESTORE, the DUMPs sent on the primary's own data connection so
//! they are ordered with the writes being copied meanwhile.
//!
//! With `write_ack = replicas:N` a write's reply waits until N in-sync replicas confirmed its
//! copy; when they cannot, the client gets an error naming the shortfall.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::sync::{mpsc, oneshot};

use super::{BackendError, NodeConn, Reply, ReplyTo};
use crate::resp::{encode, reply};

/// Copies queued for one replica before it is declared stale.
const MAX_BACKLOG: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Sync {
    InSync = 0,
    Stale = 1,
    Resyncing = 2,
}

/// One shard's mirror: which node is the source and where copies go.
pub struct Mirror {
    shard: Arc<str>,
    /// How long a write waits for its copies' confirmations (`ack_timeout`).
    ack_timeout: std::time::Duration,
    source: Mutex<Option<Arc<str>>>,
    targets: Mutex<Vec<Arc<Target>>>,
    seq: AtomicU64,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("shard", &self.shard)
            .finish()
    }
}

/// One replica receiving copies.
pub struct Target {
    pub addr: String,
    /// Taken away when the target is removed, which ends its worker.
    tx: Mutex<Option<mpsc::UnboundedSender<Item>>>,
    state: AtomicU8,
    backlog: AtomicUsize,
    /// Sequence number of the last copy it confirmed: "the most data" at a failover.
    applied: AtomicU64,
}

struct Item {
    bytes: Bytes,
    /// Replies to discard before the one that confirms it (a MULTI ... EXEC batch).
    skip: u32,
    seq: u64,
    ack: Option<Arc<AckGroup>>,
}

/// A write's reply, delivered once enough replicas confirmed its copy.
struct AckGroup {
    want: usize,
    /// Replicas the copy went to that count.
    total: usize,
    ok: AtomicUsize,
    failed: AtomicUsize,
    reply: Mutex<Option<(ReplyTo, Bytes)>>,
    node: Arc<str>,
    want_n: u8,
    ms: u128,
}

impl AckGroup {
    fn confirm(&self) {
        if self.ok.fetch_add(1, Ordering::AcqRel) + 1 == self.want {
            if let Some((tx, frame)) = self.take() {
                tx.send(Ok(frame));
            }
        }
    }

    fn fail(&self) {
        let failed = self.failed.fetch_add(1, Ordering::AcqRel) + 1;
        if self.total.saturating_sub(failed) < self.want {
            self.shortfall();
        }
    }

    fn shortfall(&self) {
        if let Some((tx, applied)) = self.take() {
            tx.send(Err(BackendError::NotAcknowledged {
                node: self.node.clone(),
                got: self.ok.load(Ordering::Acquire) as i64,
                want: self.want_n,
                ms: self.ms,
                applied,
            }));
        }
    }

    fn take(&self) -> Option<(ReplyTo, Bytes)> {
        self.reply.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Mirror {
    pub fn new(shard: Arc<str>, ack_timeout: std::time::Duration) -> Mirror {
        Mirror {
            shard,
            ack_timeout,
            source: Mutex::new(None),
            targets: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
        }
    }

    /// Copies are taken from this node's replies only (the current primary).
    pub fn set_source(&self, addr: &str) {
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(addr));
    }

    pub fn is_source(&self, addr: &str) -> bool {
        self.source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(addr)
    }

    /// Starts copying to `addr` (through `conn`); it begins stale, so it is resynced first.
    pub fn add_target(&self, addr: &str, conn: NodeConn) -> Arc<Target> {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = targets.iter().find(|t| t.addr == addr) {
            return t.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let target = Arc::new(Target {
            addr: addr.to_string(),
            tx: Mutex::new(Some(tx)),
            state: AtomicU8::new(Sync::Stale as u8),
            backlog: AtomicUsize::new(0),
            applied: AtomicU64::new(0),
        });
        tokio::spawn(worker(self.shard.clone(), target.clone(), conn, rx));
        targets.push(target.clone());
        target
    }

    /// Stops copying to `addr` (it became the primary).
    pub fn remove_target(&self, addr: &str) {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        for t in targets.iter().filter(|t| t.addr == addr) {
            t.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        targets.retain(|t| t.addr != addr);
    }

    /// Replicas that get every copy now (in sync).
    pub fn in_sync(&self) -> usize {
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets.iter().filter(|t| t.state() == Sync::InSync).count()
    }

    pub fn target(&self, addr: &str) -> Option<Arc<Target>> {
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets.iter().find(|t| t.addr == addr).cloned()
    }

    /// Copies a write the source answered with `frame`. With `reply`, the reply is delivered
    /// once `want` in-sync replicas confirmed the copy.
    pub fn publish(
        &self,
        request: &Bytes,
        skip: u32,
        frame: Bytes,
        reply: Option<(ReplyTo, u8)>,
        node: &Arc<str>,
    ) {
        let (bytes, skip) = match effect(request, &frame) {
            Some(b) => (b, 0),
            None => (request.clone(), skip),
        };
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        // Taken under the lock, so every target sees sequence numbers in order.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let in_sync = targets.iter().filter(|t| t.state() == Sync::InSync).count();
        let ack = match reply {
            Some((tx, want)) => {
                let group = Arc::new(AckGroup {
                    want: usize::from(want),
                    total: in_sync,
                    ok: AtomicUsize::new(0),
                    failed: AtomicUsize::new(0),
                    reply: Mutex::new(Some((tx, frame))),
                    node: node.clone(),
                    want_n: want,
                    ms: self.ack_timeout.as_millis(),
                });
                if in_sync < usize::from(want) {
                    group.shortfall();
                } else {
                    let late = group.clone();
                    let after = self.ack_timeout;
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        late.shortfall();
                    });
                }
                Some(group)
            }
            None => None,
        };
        for t in targets.iter() {
            let state = t.state();
            if state == Sync::Stale {
                continue;
            }
            let ack = ack.clone().filter(|_| state == Sync::InSync);
            t.push(&self.shard, bytes.clone(), skip, seq, ack);
        }
    }

    /// Queues one command for one target only (a resync's FLUSHALL and RESTOREs).
    pub fn push_to(&self, target: &Target, bytes: Bytes) {
        target.push(&self.shard, bytes, 0, 0, None);
    }

    /// Resolves once every copy queued to `target` so far is confirmed (or failed).
    pub fn barrier(&self, target: &Target) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let group = Arc::new(AckGroup {
            want: 1,
            total: 1,
            ok: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            reply: Mutex::new(Some((ReplyTo::Channel(tx), Bytes::from_static(encode::OK)))),
            node: Arc::from(target.addr.as_str()),
            want_n: 1,
            ms: 0,
        });
        let mut ping = BytesMut::new();
        encode::command(&mut ping, [&b"PING"[..]].into_iter());
        target.push(&self.shard, ping.freeze(), 0, 0, Some(group));
        rx
    }
}

impl Target {
    pub fn state(&self) -> Sync {
        match self.state.load(Ordering::Acquire) {
            0 => Sync::InSync,
            2 => Sync::Resyncing,
            _ => Sync::Stale,
        }
    }

    pub fn set_state(&self, state: Sync) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Ends a resync: in sync, unless a copy failed meanwhile (then it stays stale).
    pub fn finish_resync(&self) -> bool {
        self.state
            .compare_exchange(
                Sync::Resyncing as u8,
                Sync::InSync as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    fn push(&self, shard: &str, bytes: Bytes, skip: u32, seq: u64, ack: Option<Arc<AckGroup>>) {
        if self.backlog.fetch_add(1, Ordering::Relaxed) >= MAX_BACKLOG {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            self.stale(shard, "too far behind");
            if let Some(a) = ack {
                a.fail();
            }
            return;
        }
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let sent = match tx.as_ref() {
            Some(tx) => tx.send(Item {
                bytes,
                skip,
                seq,
                ack,
            }),
            None => return,
        };
        if let Err(e) = sent {
            if let Some(a) = e.0.ack {
                a.fail();
            }
        }
    }

    /// Stops copies to it until a resync (it missed some, or is down).
    pub fn mark_stale(&self, shard: &str, why: &str) {
        self.stale(shard, why);
    }

    fn stale(&self, shard: &str, why: &str) {
        if self.state.swap(Sync::Stale as u8, Ordering::AcqRel) != Sync::Stale as u8 {
            tracing::warn!(shard, node = %self.addr, "mirror replica stale: {why}");
        }
    }
}

/// Sends one replica its copies, pipelined; a second task collects the replies in order.
async fn worker(
    shard: Arc<str>,
    target: Arc<Target>,
    conn: NodeConn,
    mut rx: mpsc::UnboundedReceiver<Item>,
) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(oneshot::Receiver<Reply>, Item)>();
    let collector = {
        let target = target.clone();
        let shard = shard.clone();
        tokio::spawn(async move {
            while let Some((rx, item)) = done_rx.recv().await {
                target.backlog.fetch_sub(1, Ordering::Relaxed);
                let good = match rx.await {
                    Ok(Ok(frame)) if !reply::is_error(&frame) => true,
                    Ok(Ok(frame)) => {
                        let text = String::from_utf8_lossy(&frame).trim_end().to_string();
                        target.stale(&shard, &format!("a copy was refused: {text}"));
                        false
                    }
                    Ok(Err(e)) => {
                        target.stale(&shard, &e.to_string());
                        false
                    }
                    Err(_) => false,
                };
                if good && target.state() != Sync::Stale {
                    if item.seq > 0 {
                        target.applied.store(item.seq, Ordering::Relaxed);
                    }
                    if let Some(a) = item.ack {
                        a.confirm();
                    }
                } else if let Some(a) = item.ack {
                    a.fail();
                }
            }
        })
    };
    while let Some(item) = rx.recv().await {
        if target.state() == Sync::Stale && item.seq > 0 {
            target.backlog.fetch_sub(1, Ordering::Relaxed);
            if let Some(a) = item.ack {
                a.fail();
            }
            continue;
        }
        let reply = conn.send_copy(item.bytes.clone(), item.skip).await;
        if done_tx.send((reply, item)).is_err() {
            break;
        }
    }
    collector.abort();
}

/// What to copy for a write whose effect is not the command itself: SPOP picks members at
/// random (copied as SREM of those it popped), XADD with `*` picks an id (copied with it).
fn effect(request: &Bytes, frame: &Bytes) -> Option<Bytes> {
    let name = command_name(request)?;
    if name.eq_ignore_ascii_case(b"SPOP") {
        let args = args(request)?;
        let popped = match decode(frame).ok()??.0 {
            OwnedFrame::Array(items) => items,
            OwnedFrame::BulkString(b) => vec![OwnedFrame::BulkString(b)],
            _ => Vec::new(),
        };
        let mut parts: Vec<Vec<u8>> = vec![b"SREM".to_vec(), args.get(1)?.clone()];
        for m in popped {
            if let OwnedFrame::BulkString(b) = m {
                parts.push(b);
            }
        }
        if parts.len() == 2 {
            // Nothing popped: nothing to copy, but something must keep the order; PING does.
            parts = vec![b"PING".to_vec()];
        }
        return Some(command(&parts));
    }
    if name.eq_ignore_ascii_case(b"XADD") {
        let mut args = args(request)?;
        let id = match decode(frame).ok()??.0 {
            OwnedFrame::BulkString(b) => b,
            _ => return None,
        };
        let star = args.iter().position(|a| a == b"*")?;
        args[star] = id;
        return Some(command(&args));
    }
    None
}

fn command(parts: &[Vec<u8>]) -> Bytes {
    let mut out = BytesMut::new();
    encode::command(&mut out, parts.iter().map(|p| &p[..]));
    out.freeze()
}

fn command_name(request: &Bytes) -> Option<Vec<u8>> {
    // Cheap check before decoding: the name is the first bulk string.
    args(request).and_then(|a| a.into_iter().next())
}

fn args(request: &Bytes) -> Option<Vec<Vec<u8>>> {
    match decode(request).ok()??.0 {
        OwnedFrame::Array(items) => items
            .into_iter()
            .map(|i| match i {
                OwnedFrame::BulkString(b) => Some(b),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// RESTORE commands rebuilding `keys` from a resync script's reply (`[pttl, dump, ...]`),
/// one per key still there.
pub fn restores(keys: &[Bytes], frame: &Bytes) -> Vec<Bytes> {
    let Some(Some((OwnedFrame::Array(items), _))) = decode(frame).ok() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(keys.len());
    for (key, pair) in keys.iter().zip(items.chunks(2)) {
        let [OwnedFrame::Integer(pttl), OwnedFrame::BulkString(dump)] = pair else {
            continue; // gone meanwhile (its DEL is copied anyway)
        };
        let ttl = if *pttl > 0 {
            pttl.to_string()
        } else {
            "0".into()
        };
        let parts: [&[u8]; 5] = [b"RESTORE", key, ttl.as_bytes(), dump, b"REPLACE"];
        let mut one = BytesMut::new();
        encode::command(&mut one, parts.into_iter());
        out.push(one.freeze());
    }
    out
}

/// The Lua script a resync runs on the primary for a batch of keys.
pub const DUMP_SCRIPT: &[u8] = b"local r = {} for i, k in ipairs(KEYS) do r[#r+1] = redis.call('PTTL', k) r[#r+1] = redis.call('DUMP', k) or false end return r";

#[cfg(test)]
mod tests {
    use super::*;

    fn req(parts: &[&[u8]]) -> Bytes {
        let mut out = BytesMut::new();
        encode::command(&mut out, parts.iter().copied());
        out.freeze()
    }

    #[test]
    fn spop_is_copied_as_srem_of_what_it_popped() {
        let copy = effect(
            &req(&[b"SPOP", b"s", b"2"]),
            &Bytes::from_static(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
        )
        .unwrap();
        assert_eq!(copy, req(&[b"SREM", b"s", b"a", b"b"]));
        let one = effect(&req(&[b"spop", b"s"]), &Bytes::from_static(b"$1\r\nz\r\n")).unwrap();
        assert_eq!(one, req(&[b"SREM", b"s", b"z"]));
    }

    #[test]
    fn xadd_star_is_copied_with_the_chosen_id() {
        let copy = effect(
            &req(&[b"XADD", b"x", b"*", b"f", b"v"]),
            &Bytes::from_static(b"$3\r\n1-0\r\n"),
        )
        .unwrap();
        assert_eq!(copy, req(&[b"XADD", b"x", b"1-0", b"f", b"v"]));
        assert!(effect(&req(&[b"SET", b"k", b"v"]), &Bytes::from_static(b"+OK\r\n")).is_none());
    }

    #[test]
    fn restores_skip_keys_gone_meanwhile() {
        let frame = Bytes::from_static(b"*4\r\n:-1\r\n$3\r\nabc\r\n:-2\r\n$-1\r\n");
        let keys = [Bytes::from_static(b"k1"), Bytes::from_static(b"k2")];
        let out = restores(&keys, &frame);
        assert_eq!(
            out,
            vec![req(&[b"RESTORE", b"k1", b"0", b"abc", b"REPLACE"])]
        );
    }
}
