//! Backend nodes: a few multiplexed, pipelined connections per Redis node.
//!
//! Many clients share each connection: requests are written in the order they arrive and replies
//! are matched to them first-in first-out, as Redis answers in order. Each worker thread has its
//! own connections to every node; a client uses the connection of its worker that its lane picks
//! (its id, unless it moved away from a connection busy with a big reply while it had nothing in
//! flight), so its own commands to one node run in the order it sent them.

mod conn;
mod inbox;
mod stream;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use conn::{Dedicated, NodeSettings, Push};
pub use inbox::{ended as inbox_ended, Arrival, Arrivals, Deliveries, ReplyTo, Ticket};
pub use mirror::{Mirror, Target};
pub use parking::{Parked, Parking};
pub use stream::{Stream, Taken};

pub mod mirror;
mod parking;

use crate::resp::Proto;

/// Why a request sent to a node got no reply. `Display` is the client's error text after `ERR `.
/// A node that cannot be reached is described in the system's words (`Connection refused`,
/// `timed out`), which scripts written for twemproxy's `-ERR Connection refused` match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("{node} unavailable: {reason}")]
    Unavailable { node: Arc<str>, reason: String },
    #[error("{node} timed out: did not answer within {ms} ms")]
    Timeout { node: Arc<str>, ms: u128 },
    /// A big request passed on as its value arrives: the node took none of it for that long.
    #[error("{node} timed out: took none of the request's value for {ms} ms")]
    Stalled { node: Arc<str>, ms: u128 },
    #[error("{node} connection lost: {reason}")]
    Lost { node: Arc<str>, reason: String },
    /// The shard has no node to send the request to (its primary is down, no replica is
    /// readable).
    #[error("shard '{shard}' unavailable: {reason}")]
    ShardDown { shard: Arc<str>, reason: String },
    /// The write was applied on the primary, but fewer replicas than `write_ack` asks for
    /// confirmed it in time.
    #[error("{node}: write not acknowledged by enough replicas ({got} of {want} within {ms} ms); it was applied on the primary and may be lost if the primary fails")]
    NotAcknowledged {
        node: Arc<str>,
        got: i64,
        want: u8,
        ms: u128,
        /// The primary's reply to the write (a lock grant is undone from it).
        applied: Bytes,
    },
}

/// The reply to one request: the raw reply frame, or why there is none.
pub type Reply = Result<Bytes, BackendError>;

/// One request on its way to a node.
pub struct BackendRequest {
    pub bytes: Bytes,
    /// Where the reply goes; `None` when the frames it causes are pushes (SUBSCRIBE).
    pub reply: Option<ReplyTo>,
    /// Replies to discard before the one delivered: `MULTI ... EXEC` sent as one batch
    /// delivers only EXEC's reply.
    pub skip: u32,
    pub wait: Wait,
    /// Replicas that must acknowledge this write before its reply is delivered (0: none).
    pub ack: u8,
    /// What a mirror shard copies from the reply.
    pub copy: Copy,
}

/// What a mirror shard's primary connection does with a request's reply.
#[derive(Default)]
pub enum Copy {
    #[default]
    Nothing,
    /// A write: copied to the replicas when it succeeds.
    Write,
    /// A resync's DUMP script for these keys: RESTOREs go to this replica only.
    Resync(Arc<Target>, Vec<Bytes>),
    /// A copy (or a resync's RESTORE) sent to a mirror replica: it passes a closed gate, since
    /// a former primary closed its gate to fail its clients' requests, not its copies.
    Mirrored,
}

impl BackendRequest {
    pub fn fail(self, error: BackendError) {
        if let Some(reply) = self.reply {
            reply.send(Err(error));
        }
    }
}

/// Whether a node may still be written to as its shard's primary.
///
/// When a failover (or the fleet) replaces a primary, its gate closes: requests sent to it
/// from then on fail without being written, and a reply read after the close, to a request
/// sent before it, is an error instead, since the node is about to become a replica and lose
/// what it wrote meanwhile: such a write gets an error, never an acknowledgement. The gate
/// opens again once the node is seen replicating from the new primary.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    /// Grows at every close; a request carries the count it was sent under, and its reply is
    /// refused when the count has moved since.
    closes: AtomicU64,
}

impl Gate {
    /// Closed first, counted second, and read the other way round ([`Gate::admit`]): a
    /// request that reads the new count also sees the gate closed.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closes.fetch_add(1, Ordering::AcqRel);
    }

    /// The count to send a request under, or `None` when the gate is closed.
    fn admit(&self) -> Option<u64> {
        let closes = self.closes();
        (!self.is_closed()).then_some(closes)
    }

    pub fn open(&self) {
        self.closed.store(false, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn closes(&self) -> u64 {
        self.closes.load(Ordering::Acquire)
    }
}

/// How long a request's reply may take before its connection is declared broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The `[backend] timeout`.
    Default,
    /// A blocking command's own timeout plus the default one.
    For(std::time::Duration),
    /// A blocking command with no timeout: it may wait forever, as on Redis.
    Forever,
}

/// Pieces of a big request an upload connection's queue holds (see [`NodePool::upload`]).
const UPLOAD_QUEUE: usize = 8;

/// How long an upload connection waits, with nothing to do, for its session's next upload:
/// a client loading values one after another sends the next well within it, and a client
/// that moved on does not keep one of the node's `max_dedicated` places.
const UPLOAD_KEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// Health of a node as its connections see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NodeState {
    Connecting = 0,
    Up = 1,
    Down = 2,
}

/// Set beside a connection's [`NodeState`] while it reads a reply of at least
/// [`crate::net::outbox::BIG`] bytes that has not fully arrived: a request sent on it now is
/// answered only after the rest of that reply has passed, so a client with nothing in flight
/// picks another connection (`Session::lane`).
pub const RECEIVING_BIG: u8 = 0x80;

/// Handle to one multiplexed connection (its task reconnects by itself).
#[derive(Clone)]
pub struct NodeConn {
    tx: mpsc::Sender<BackendRequest>,
    state: Arc<AtomicU8>,
    side: Arc<conn::WriteSide>,
}

/// A request a node connection's queue had no room for (see [`NodeConn::send_ticketed`]).
pub struct Full(BackendRequest);

impl NodeConn {
    /// Queues a request; its reply arrives on the returned receiver. Waits only when the
    /// connection's queue is full (backpressure).
    pub async fn send(&self, bytes: Bytes) -> oneshot::Receiver<Reply> {
        self.send_with(bytes, 0, Wait::Default).await
    }

    /// [`send`](Self::send) for a batch whose first `skip` replies are discarded, or a
    /// command that may block.
    pub async fn send_with(&self, bytes: Bytes, skip: u32, wait: Wait) -> oneshot::Receiver<Reply> {
        self.send_acked(bytes, skip, wait, None).await
    }

    /// [`send_with`](Self::send_with) for a write whose reply waits until `ack` replicas have
    /// it (WAIT after the batch it is written in).
    /// `write` is `Some(acks)` for a write: it is copied by a mirror shard, and answered once
    /// `acks` replicas have it.
    pub async fn send_acked(
        &self,
        bytes: Bytes,
        skip: u32,
        wait: Wait,
        write: Option<u8>,
    ) -> oneshot::Receiver<Reply> {
        let (ack, copy) = write_copy(write);
        self.send_request(bytes, skip, wait, ack, copy).await
    }

    /// [`send_acked`](Self::send_acked) for a plain request, answered through its session's
    /// inbox under `ticket` rather than on a channel of its own. Added to the connection's
    /// write side when it takes it (see `conn::write_side`), else queued at once when the queue
    /// has room, as it nearly always has, with no future made for it; else given back, for
    /// [`send_when_room`](Self::send_when_room).
    pub fn send_ticketed(
        &self,
        bytes: Bytes,
        ticket: Ticket,
        write: Option<u8>,
    ) -> Result<(), Full> {
        let (ack, copy) = write_copy(write);
        // Only when nothing sent before waits in the queue, which the request would overtake.
        let (bytes, ticket) = match ack {
            0 => {
                let empty = self.tx.capacity() == self.tx.max_capacity();
                match self.side.offer(bytes, ticket, empty) {
                    Ok(()) => return Ok(()),
                    Err(back) => back,
                }
            }
            _ => (bytes, ticket),
        };
        let request = BackendRequest {
            bytes,
            reply: Some(ReplyTo::Inbox(ticket)),
            skip: 0,
            wait: Wait::Default,
            ack,
            copy,
        };
        self.try_enqueue(request)
    }

    /// Queues a request [`send_ticketed`](Self::send_ticketed) found no room for, once there
    /// is some.
    pub async fn send_when_room(&self, full: Full) {
        let _ = self.tx.send(full.0).await;
    }

    /// A copy to a mirror replica (see [`Copy::Mirrored`]).
    pub async fn send_copy(&self, bytes: Bytes, skip: u32) -> oneshot::Receiver<Reply> {
        self.send_request(bytes, skip, Wait::Default, 0, Copy::Mirrored)
            .await
    }

    /// A resync's batch of DUMPs for `keys`, whose RESTOREs go to `target`.
    pub async fn send_resync(
        &self,
        bytes: Bytes,
        target: Arc<Target>,
        keys: Vec<Bytes>,
    ) -> oneshot::Receiver<Reply> {
        self.send_request(bytes, 0, Wait::Default, 0, Copy::Resync(target, keys))
            .await
    }

    async fn send_request(
        &self,
        bytes: Bytes,
        skip: u32,
        wait: Wait,
        ack: u8,
        copy: Copy,
    ) -> oneshot::Receiver<Reply> {
        let (reply, rx) = oneshot::channel();
        let request = BackendRequest {
            bytes,
            reply: Some(ReplyTo::Channel(reply)),
            skip,
            wait,
            ack,
            copy,
        };
        self.enqueue(request).await;
        rx
    }

    /// Puts a request in the connection's queue, waiting for a permit only when the queue is
    /// full, as it nearly never is. The task only ends when every handle is gone, so a send
    /// error cannot happen while `self` exists; if it did, the request's dropped reply (a
    /// oneshot sender, a ticket) answers with an error.
    async fn enqueue(&self, request: BackendRequest) {
        if let Err(full) = self.try_enqueue(request) {
            self.send_when_room(full).await;
        }
    }

    /// Puts a request in the connection's queue if it has room; else gives it back.
    fn try_enqueue(&self, request: BackendRequest) -> Result<(), Full> {
        match self.tx.try_send(request) {
            Err(mpsc::error::TrySendError::Full(request)) => Err(Full(request)),
            // Sent; or the task has ended, and the dropped reply answers with an error.
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// Queues `bytes`, answered through `ticket` if there is one, once the queue has room,
    /// waiting at most `within` for it; else gives the ticket back. A write answered through a
    /// ticket waits for `ack` replicas, as [`send_acked`](Self::send_acked)'s does.
    pub async fn send_within(
        &self,
        bytes: Bytes,
        ticket: Option<Ticket>,
        ack: u8,
        within: std::time::Duration,
    ) -> Result<(), Option<Ticket>> {
        let permit = match tokio::time::timeout(within, self.tx.reserve()).await {
            Ok(Ok(permit)) => permit,
            // The task has ended: a dropped ticket answers with an error.
            Ok(Err(_)) => return Ok(()),
            Err(_) => return Err(ticket),
        };
        let (ack, copy) = write_copy(ticket.is_some().then_some(ack));
        permit.send(BackendRequest {
            bytes,
            reply: ticket.map(ReplyTo::Inbox),
            skip: 0,
            wait: Wait::Default,
            ack,
            copy,
        });
        Ok(())
    }

    /// Sends a request that no reply answers (its effects arrive as pushes).
    pub async fn send_no_reply(&self, bytes: Bytes) {
        let request = BackendRequest {
            bytes,
            reply: None,
            skip: 0,
            wait: Wait::Default,
            ack: 0,
            copy: Copy::Nothing,
        };
        self.enqueue(request).await;
    }

    /// Hands a request over as is (a parked request, re-sent after a failover).
    pub async fn resend(&self, request: BackendRequest) {
        if let Err(e) = self.tx.send(request).await {
            e.0.fail(BackendError::Unavailable {
                node: Arc::from("node"),
                reason: "its connection is gone".into(),
            });
        }
    }

    /// [`resend`](Self::resend) without waiting: when the queue is full, the request fails.
    pub fn try_resend(&self, request: BackendRequest) {
        if let Err(e) = self.tx.try_send(request) {
            let request = match e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            request.fail(BackendError::Unavailable {
                node: Arc::from("node"),
                reason: "its queue is full".into(),
            });
        }
    }

    pub fn state(&self) -> NodeState {
        match self.state.load(Ordering::Relaxed) & !RECEIVING_BIG {
            1 => NodeState::Up,
            2 => NodeState::Down,
            _ => NodeState::Connecting,
        }
    }

    /// Whether the connection is in the middle of a big reply (see [`RECEIVING_BIG`]).
    pub fn receiving_big(&self) -> bool {
        self.state.load(Ordering::Relaxed) & RECEIVING_BIG != 0
    }
}

/// A request's replica acknowledgements and what a mirror shard copies of it: a write
/// (`Some(acks)`) is copied and waits for `acks` replicas; anything else neither.
fn write_copy(write: Option<u8>) -> (u8, Copy) {
    match write {
        Some(acks) => (acks, Copy::Write),
        None => (0, Copy::Nothing),
    }
}

/// What a node's connections counted: INFO shards and the Prometheus endpoint show it. Each
/// worker counts its own connections' replies apart (as [`crate::telemetry::Telemetry`] does);
/// a reader sums them.
#[derive(Debug, Default)]
pub struct NodeStats {
    counts: crate::net::workers::PerWorker<NodeCounts>,
}

/// One worker's counts of a node's replies, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct NodeCounts {
    requests: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
}

impl NodeStats {
    pub(crate) fn count(&self, failed: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let mine = self.counts.mine();
        mine.requests.fetch_add(1, Relaxed);
        if failed {
            mine.errors.fetch_add(1, Relaxed);
        }
    }

    /// Requests answered or failed (a batch such as MULTI ... EXEC counts once).
    pub fn requests(&self) -> u64 {
        self.counts.sum(|c| &c.requests)
    }

    /// Of [`NodeStats::requests`], those answered with an error reply or not answered
    /// (timeout, connection lost).
    pub fn errors(&self) -> u64 {
        self.counts.sum(|c| &c.errors)
    }
}

/// The connections to one node: a set per client protocol, the RESP3 set opened on first use;
/// and within each, one group of `connections` per worker thread, so a request and its reply
/// stay on the thread of the client that sent it. A mirror shard's nodes have one group, shared
/// by every worker: its copies must follow the one order the primary ran the writes in.
pub struct NodePool {
    settings: NodeSettings,
    resp2: Vec<Vec<NodeConn>>,
    resp3: OnceLock<Vec<Vec<NodeConn>>>,
}

impl NodePool {
    /// Starts the RESP2 connections now, each group on its worker.
    pub fn start(settings: NodeSettings) -> NodePool {
        let resp2 = conn::spawn_groups(&settings, Proto::Resp2);
        NodePool {
            settings,
            resp2,
            resp3: OnceLock::new(),
        }
    }

    pub fn addr(&self) -> &str {
        &self.settings.addr
    }

    fn groups(&self, proto: Proto) -> &[Vec<NodeConn>] {
        match proto {
            Proto::Resp2 => &self.resp2,
            Proto::Resp3 => self
                .resp3
                .get_or_init(|| conn::spawn_groups(&self.settings, Proto::Resp3)),
        }
    }

    /// The connection a client of this worker uses for this node.
    pub fn conn(&self, proto: Proto, client_id: u64) -> &NodeConn {
        let groups = self.groups(proto);
        let group = groups
            .get(crate::net::workers::index())
            .unwrap_or(&groups[0]);
        &group[(client_id % group.len() as u64) as usize]
    }

    /// Connection `index` (counted across the groups) of a protocol's set: where a request
    /// parked by the same connection of another node goes, so each client's requests stay on
    /// one connection, in order, on their worker.
    pub fn conn_at(&self, proto: Proto, index: usize) -> &NodeConn {
        let groups = self.groups(proto);
        let per_group = groups[0].len();
        let group = groups.get(index / per_group).unwrap_or(&groups[0]);
        &group[index % per_group]
    }

    /// Opens a connection for one session alone (a pinned transaction, a blocking command, a
    /// subscriber). It is never reopened: when it breaks, everything sent on it fails. Refused
    /// when `max_dedicated` of them are open to the node.
    pub fn dedicated(&self, proto: Proto, dedicated: Dedicated) -> Result<NodeConn, BackendError> {
        self.reserve_dedicated()?;
        let queue = self.settings.backend.queue_depth;
        Ok(conn::spawn(
            &self.settings,
            proto,
            Some(dedicated),
            queue,
            None,
        ))
    }

    /// Counts one more dedicated connection to the node, unless `max_dedicated` are open.
    fn reserve_dedicated(&self) -> Result<(), BackendError> {
        let max = self.settings.backend.max_dedicated;
        let open = &self.settings.dedicated_open;
        if open.fetch_add(1, Ordering::AcqRel) >= max {
            open.fetch_sub(1, Ordering::AcqRel);
            return Err(BackendError::Unavailable {
                node: self.settings.label.clone(),
                reason: format!(
                    "max number of dedicated connections ({max}, [backend] max_dedicated) reached: too many blocked, watching or subscribed clients"
                ),
            });
        }
        Ok(())
    }

    /// A dedicated connection (counted as one) for one big request passed on in pieces as it
    /// arrives: its queue holds a few pieces, so the sender waits while the node is slow to
    /// take them, and what waits in the proxy stays small. Kept by its session for the next
    /// such request, it closes itself after [`UPLOAD_KEEP`] with nothing to do.
    pub fn upload(&self, proto: Proto, dedicated: Dedicated) -> Result<NodeConn, BackendError> {
        self.reserve_dedicated()?;
        let keep = Some(UPLOAD_KEEP);
        let upload = conn::spawn(&self.settings, proto, Some(dedicated), UPLOAD_QUEUE, keep);
        Ok(upload)
    }

    /// Dedicated connections open to the node now.
    pub fn dedicated_open(&self) -> usize {
        self.settings.dedicated_open.load(Ordering::Acquire)
    }

    /// How errors name the node: `shard 'a' node 127.0.0.1:7001`.
    pub fn label(&self) -> &Arc<str> {
        &self.settings.label
    }

    /// The node's gate (see [`Gate`]).
    pub fn gate(&self) -> &Gate {
        &self.settings.gate
    }

    /// Ends the reconnect backoff of every connection waiting in it: the node answers again,
    /// so requests go to it at once instead of failing until the backoff has passed.
    pub fn wake(&self) {
        self.settings.wake.notify_waiters();
    }

    /// Requests and errors counted on this node's connections.
    pub fn stats(&self) -> &NodeStats {
        &self.settings.stats
    }

    /// The same counters, to hand to the node that replaces this one in a reload.
    pub fn stats_shared(&self) -> Arc<NodeStats> {
        self.settings.stats.clone()
    }

    /// Shared connections open now (both protocols, every worker).
    pub fn open(&self) -> usize {
        let resp3 = self.resp3.get().map(Vec::as_slice).unwrap_or_default();
        self.resp2
            .iter()
            .chain(resp3)
            .flatten()
            .filter(|c| c.state() == NodeState::Up)
            .count()
    }

    /// The node's state: up if any RESP2 connection is up, down if all are down.
    pub fn state(&self) -> NodeState {
        let states = self.resp2.iter().flatten().map(NodeConn::state);
        if states.clone().any(|s| s == NodeState::Up) {
            NodeState::Up
        } else if states.clone().all(|s| s == NodeState::Down) {
            NodeState::Down
        } else {
            NodeState::Connecting
        }
    }
}

#[cfg(test)]
mod tests {
    /// Each worker counts a node's replies apart; INFO and `/metrics` read their sum.
    #[test]
    fn a_nodes_replies_counted_by_several_workers_are_read_as_one_sum() {
        let stats = super::NodeStats::default();
        std::thread::scope(|s| {
            for t in 0..3 {
                let stats = &stats;
                s.spawn(move || {
                    crate::net::workers::count_as(t + 1);
                    (0..50).for_each(|n| stats.count(t == 1 && n < 7))
                });
            }
        });
        stats.count(true);
        assert_eq!((stats.requests(), stats.errors()), (151, 8));
    }
}
