//! One multiplexed connection to a Redis node, run by its own task.
//!
//! The task owns the socket. It writes queued requests in batches, frames the replies and hands
//! each to the request at the head of its FIFO. It never blocks on one side while the other has
//! work: reading and writing are driven by socket readiness in one `select!`.
//!
//! Failure handling, which keeps "a dead or slow node never hangs a client":
//! - connect fails or times out: every request queued meanwhile, and every new one until the
//!   backoff delay has passed, is answered `Unavailable` at once; then it reconnects.
//! - the oldest request waits longer than the timeout: the node is slow or gone, and since a
//!   pipelined connection cannot skip a reply, the whole connection is failed and reopened.
//! - EOF, a reset or unframeable bytes: every in-flight request is failed, then reconnect.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::mirror::{self, Mirror, Target};
use super::stream::Feed;
use super::{
    BackendError, BackendRequest, Copy, Deliveries, NodeConn, NodeState, Parking, ReplyTo, Wait,
    RECEIVING_BIG,
};
use crate::config::BackendSettings;
use crate::net::outbox;
use crate::net::socket::{Reader, Socket, Watermark};
use crate::resp::{encode, reply, Proto, ReplyFramer};

mod write_side;

pub(super) use write_side::WriteSide;
use write_side::{WriteState, WRITE_AHEAD};

/// A node connection: plain TCP, or the socket of a TLS bridge.
enum Connected {
    Tcp(TcpStream),
    Tls(tokio::net::UnixStream),
}

/// How to reach and treat one node.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// `host:port`.
    pub addr: String,
    /// How errors name this node: `shard 'a' node 127.0.0.1:7001`.
    pub label: Arc<str>,
    pub backend: BackendSettings,
    /// Woken when a connection fails: the shard's monitor checks the node at once.
    pub alarm: Option<Arc<tokio::sync::Notify>>,
    /// Where requests wait while the node, as the shard's primary, cannot be reached.
    pub parking: Option<Arc<Parking>>,
    /// How long a write waits for its replica acknowledgements (`write_ack`).
    pub ack_timeout: Duration,
    /// A mirror shard's copier: successful writes read on this node, while it is the
    /// primary, are copied to the replicas (and acknowledged by them instead of WAIT).
    pub mirror: Option<Arc<Mirror>>,
    /// Shared by every connection to the node.
    pub stats: Arc<super::NodeStats>,
    /// Closed while the node, replaced as primary, must take no more writes.
    pub gate: Arc<super::Gate>,
    /// Notified when the node answers again after being down: ends the reconnect backoff.
    pub wake: Arc<tokio::sync::Notify>,
    /// Dedicated connections open to the node (counted up by the pool, down when their task
    /// ends).
    pub dedicated_open: Arc<std::sync::atomic::AtomicUsize>,
}

/// Why a connection to a replaced primary failed what it had in flight.
const DEPOSED: &str = "it was replaced as the shard's primary while the request was in flight; it may or may not have run there, and the node is made a replica";

/// A connection that lived this long was working; losing it resets the backoff.
const STABLE: Duration = Duration::from_secs(1);

/// The most room made at once for a value announced by its length: Redis's own limit on a
/// bulk string (`proto-max-bulk-len`'s default). A bigger one grows the buffer as it comes.
const ROOM_MAX: usize = 512 << 20;

/// The most room made at once for a reply passed on as it arrives: each read's bytes leave as
/// soon as they came, so a bigger buffer would only hold more of the value at a time.
const STREAM_ROOM: usize = 1 << 20;

/// Requests taken off the queue per batch before writing.
const BATCH: usize = 256;

/// A protocol's shared connections to a node: `connections` per worker, each group spawned on
/// its worker, numbered across the groups. A mirror shard has one group, on worker 0.
pub(super) fn spawn_groups(settings: &NodeSettings, proto: Proto) -> Vec<Vec<NodeConn>> {
    let groups = match settings.mirror {
        Some(_) => 1,
        None => crate::net::workers::count(),
    };
    let per_group = settings.backend.connections;
    (0..groups)
        .map(|worker| {
            (0..per_group)
                .map(|i| {
                    let index = worker * per_group + i;
                    let queue = settings.backend.queue_depth;
                    spawn_at(settings, proto, None, index, Some(worker), queue, None)
                })
                .collect()
        })
        .collect()
}

/// Starts one connection task. Shared connections (`dedicated: None`) reconnect by themselves;
/// a dedicated one lives for one session and is never reopened, since the server-side state it
/// carries (WATCH, subscriptions) would not survive a reconnect. It runs on the session's worker.
/// `queue`: the requests its channel holds before senders wait. `keep`: how long a dedicated
/// connection with nothing to do stays open (`None`: as long as its session holds it).
pub(super) fn spawn(
    settings: &NodeSettings,
    proto: Proto,
    dedicated: Option<Dedicated>,
    queue: usize,
    keep: Option<Duration>,
) -> NodeConn {
    spawn_at(settings, proto, dedicated, 0, None, queue, keep)
}

/// `worker`: where the task runs; `None` for the caller's runtime.
fn spawn_at(
    settings: &NodeSettings,
    proto: Proto,
    dedicated: Option<Dedicated>,
    index: usize,
    worker: Option<usize>,
    queue: usize,
    keep: Option<Duration>,
) -> NodeConn {
    let (task, conn) = task(settings, proto, dedicated, index, queue, keep);
    match worker {
        Some(worker) => drop(crate::net::workers::spawn_on(worker, task.run())),
        None => drop(tokio::spawn(task.run())),
    }
    conn
}

/// A connection task, not yet running, and the handle requests reach it through.
fn task(
    settings: &NodeSettings,
    proto: Proto,
    dedicated: Option<Dedicated>,
    index: usize,
    queue: usize,
    keep: Option<Duration>,
) -> (ConnTask, NodeConn) {
    let (tx, rx) = mpsc::channel(queue);
    let state = Arc::new(AtomicU8::new(NodeState::Connecting as u8));
    let dedicated_is_some = dedicated.is_some();
    let side = Arc::new(WriteSide::new(
        !dedicated_is_some && settings.mirror.is_none(),
        settings.gate.clone(),
        settings.stats.clone(),
        settings.label.clone(),
        settings.backend.timeout,
    ));
    let task = ConnTask {
        side: side.clone(),
        settings: settings.clone(),
        proto,
        rx,
        state: state.clone(),
        dedicated,
        index,
        counted: dedicated_is_some,
        keep,
    };
    (task, NodeConn { tx, state, side })
}

/// What a dedicated connection does with frames that answer no request.
pub struct Dedicated {
    /// Where push frames (and, for a subscriber, every frame) go, tagged with this number.
    pub push: mpsc::UnboundedSender<Push>,
    pub tag: usize,
    /// A RESP2 subscriber connection: every frame it reads is a subscription event, none
    /// answers a request (so requests sent on it carry no reply channel).
    pub subscriber: bool,
}

/// A frame a dedicated connection read that answers no request, or the end of the connection.
#[derive(Debug)]
pub enum Push {
    Frame { tag: usize, frame: bytes::Bytes },
    Lost { tag: usize, reason: String },
}

struct ConnTask {
    /// The write buffer and the waiters, which sessions add plain requests to themselves.
    side: Arc<WriteSide>,
    settings: NodeSettings,
    proto: Proto,
    rx: mpsc::Receiver<BackendRequest>,
    state: Arc<AtomicU8>,
    dedicated: Option<Dedicated>,
    /// Position in its node's connection set, counted across the workers' groups.
    index: usize,
    /// A dedicated connection still counted under `max_dedicated`.
    counted: bool,
    /// How long it stays open with nothing to do (an upload's, kept for the next one).
    keep: Option<Duration>,
}

/// What a mirror shard does with a reply.
enum Tap {
    None,
    /// Copy the request (kept here, with the replies to skip: a MULTI ... EXEC batch) once it
    /// succeeded.
    Write(bytes::Bytes, u32),
    Resync(Arc<Target>, Vec<bytes::Bytes>),
}

/// An EXEC that did not run (a WATCHed key changed): nothing to copy.
fn aborted(request: &[u8], frame: &[u8]) -> bool {
    let null = frame.starts_with(b"*-1") || frame.starts_with(b"_");
    let multi = b"*1\r\n$5\r\nmulti";
    null && request
        .get(..multi.len())
        .is_some_and(|r| r.eq_ignore_ascii_case(multi))
}

/// A write's reply kept until the WAIT after its batch says enough replicas have it.
struct Held {
    reply: ReplyTo,
    frame: bytes::Bytes,
    ack: u8,
    /// The node's gate closes when its request was written.
    gate: u64,
}

/// The reply at the front, passed on as it arrives (see `backend::stream`).
struct Streaming {
    feed: Feed,
    /// As the request's: a reply still arriving after it breaks the connection.
    deadline: Option<Instant>,
}

/// Why a connection stopped being usable.
enum Broken {
    /// The oldest request waited longer than the timeout.
    Timeout,
    Lost(String),
}

/// When a request's reply is overdue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Past this instant.
    At(Instant),
    /// `backend.timeout` after it is first written, which sets [`Due::At`] (see
    /// [`WriteState::flush`]): one read of the clock for each write to the node, rather than
    /// one for each request a session adds.
    AfterWrite,
    /// Never: a command that may block as long as it likes (BLPOP with timeout 0).
    Never,
}

impl Due {
    /// The instant, once there is one.
    fn at(self) -> Option<Instant> {
        match self {
            Due::At(at) => Some(at),
            Due::AfterWrite | Due::Never => None,
        }
    }
}

/// Who is waiting for the next reply on the connection.
enum Waiter {
    Client {
        reply: ReplyTo,
        /// When, without a reply, the connection is declared broken.
        due: Due,
        /// Replies to discard before the one delivered (`MULTI`, `QUEUED`... of a batch).
        skip: u32,
        /// Replicas that must acknowledge it before the reply is delivered.
        ack: u8,
        tap: Tap,
        /// The node's gate closes when it was written: if the gate has closed since (the node
        /// was replaced as primary), its reply is not delivered as a success.
        gate: u64,
    },
    /// The WAIT closing a batch of writes that need replica acknowledgements.
    Ack {
        /// Set when it becomes the oldest waiter.
        deadline: Option<Instant>,
        want: u8,
    },
    /// AUTH or HELLO 3, sent first on a new connection; answered within `backend.timeout`.
    Handshake { deadline: Instant },
}

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.uncount();
        // A task that ends without closing its write side (it panicked, and its runtime
        // dropped it) leaves the sessions no socket to add requests to: they go to the
        // channel, which ended with the task. The waiters it held are dropped, which answers
        // each as the end of the connection task.
        let pending = self.side.lock().close();
        drop(pending);
    }
}

impl ConnTask {
    /// A dedicated connection stops counting under `max_dedicated` once, when its socket is
    /// gone (a session may hold the dead handle a while) or its task ends.
    fn uncount(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.settings.dedicated_open.fetch_sub(1, Ordering::AcqRel);
        }
    }

    async fn run(mut self) {
        let mut backoff = self.settings.backend.reconnect_backoff;
        loop {
            self.set_state(NodeState::Connecting);
            let failure = match self.connect().await {
                Ok(stream) => {
                    self.set_state(NodeState::Up);
                    let since = Instant::now();
                    let served = match stream {
                        Connected::Tcp(s) => self.serve(s).await,
                        Connected::Tls(s) => self.serve(s).await,
                    };
                    match served {
                        // Every handle is gone: the proxy no longer uses this node.
                        None => return,
                        Some(lost) => {
                            if self.dedicated.is_some() {
                                tracing::debug!(node = %self.settings.label, "dedicated: {lost}");
                            } else {
                                tracing::warn!(node = %self.settings.label, "{lost}");
                            }
                            // A connection that had been working is reopened at once. One that
                            // broke right away (a node that accepts and closes, a refused
                            // HELLO 3) backs off like a refused connect, or this would spin.
                            if since.elapsed() >= STABLE && self.dedicated.is_none() {
                                backoff = self.settings.backend.reconnect_backoff;
                                continue;
                            }
                            lost
                        }
                    }
                }
                Err(reason) => {
                    tracing::warn!(node = %self.settings.label, "connect failed: {reason}");
                    reason
                }
            };
            self.set_state(NodeState::Down);
            if let Some(alarm) = &self.settings.alarm {
                alarm.notify_one();
            }
            self.uncount();
            if let Some(dedicated) = &self.dedicated {
                let _ = dedicated.push.send(Push::Lost {
                    tag: dedicated.tag,
                    reason: failure.clone(),
                });
                // Never reopened: answer everything sent from now on with the failure (its
                // "connection lost: " is what the error says already).
                let reason = failure
                    .strip_prefix("connection lost: ")
                    .unwrap_or(&failure);
                while let Some(req) = self.rx.recv().await {
                    req.fail(BackendError::Lost {
                        node: self.settings.label.clone(),
                        reason: reason.to_string(),
                    });
                }
                return;
            }
            let retry = tokio::time::sleep(backoff);
            tokio::pin!(retry);
            backoff = (backoff * 2).min(self.settings.backend.reconnect_backoff_max);
            // Fail fast until it is time to retry, or until the monitor hears the node again.
            let wake = self.settings.wake.clone();
            let woken = wake.notified();
            tokio::pin!(woken);
            loop {
                tokio::select! {
                    _ = &mut woken => {
                        backoff = self.settings.backend.reconnect_backoff;
                        break;
                    }
                    req = self.rx.recv() => match req {
                        Some(req) => {
                            let req = match &self.settings.parking {
                                Some(p) => p.park(&self.settings.addr, req, self.proto, self.index),
                                None => Some(req),
                            };
                            if let Some(req) = req {
                                self.settings.stats.count(true);
                                req.fail(BackendError::Unavailable {
                                    node: self.settings.label.clone(),
                                    reason: failure.clone(),
                                });
                            }
                        }
                        None => return,
                    },
                    _ = &mut retry => break,
                }
            }
        }
    }

    /// Also clears [`RECEIVING_BIG`]: a connection that is opened or lost receives nothing.
    fn set_state(&self, state: NodeState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    fn mark_receiving_big(&self, big: bool) {
        if big {
            self.state.fetch_or(RECEIVING_BIG, Ordering::Relaxed);
        } else {
            self.state.fetch_and(!RECEIVING_BIG, Ordering::Relaxed);
        }
    }

    async fn connect(&self) -> Result<Connected, String> {
        let backend = &self.settings.backend;
        let connecting = crate::net::fds::connect(&self.settings.addr);
        let stream = match tokio::time::timeout(backend.connect_timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "connect timed out after {} ms",
                    backend.connect_timeout.as_millis()
                ))
            }
        };
        let _ = stream.set_nodelay(true);
        match (&backend.tls_ca, backend.tls) {
            (Some(ca), true) => crate::net::tls::connect(
                stream,
                &self.settings.addr,
                ca,
                backend.tls_server_name.as_deref(),
                backend.connect_timeout,
            )
            .await
            .map(Connected::Tls),
            _ => Ok(Connected::Tcp(stream)),
        }
    }

    /// Runs one connection until it fails (`Some(reason)`) or the proxy drops the node (`None`).
    async fn serve<S: Socket + Sync>(&mut self, stream: S) -> Option<String> {
        // The socket is shared with the sessions that write to it (see `write_side`).
        let stream = Arc::new(stream);
        let side = self.side.clone();
        // Write replies waiting for the WAIT after their batch.
        let mut held: VecDeque<Held> = VecDeque::new();
        let mut rbuf = BytesMut::new();
        let mut reader = Reader::default();
        let mut deliveries = Deliveries::default();
        // Give back what a big value made the read buffer grow to.
        let mut rmark = Watermark::default();
        let mut framer = ReplyFramer::new(reply::DEFAULT_MAX_DEPTH);
        {
            let mut l = side.lock();
            if let Some(auth) = self.settings.backend.auth_args() {
                encode::command(l.wbuf.buf(), auth.into_iter());
                l.pending.push_back(Waiter::Handshake {
                    deadline: Instant::now() + self.settings.backend.timeout,
                });
            }
            if self.proto == Proto::Resp3 {
                encode::command(l.wbuf.buf(), [&b"HELLO"[..], b"3"].into_iter());
                l.pending.push_back(Waiter::Handshake {
                    deadline: Instant::now() + self.settings.backend.timeout,
                });
            }
            // Requests this connection parked while its node was unreachable go first, so each
            // client's requests keep their order.
            if let Some(parking) = &self.settings.parking {
                let parked = parking.take_for(&self.settings.addr, self.proto, self.index);
                let now = Instant::now();
                let mut ack = 0;
                for req in parked {
                    ack = ack.max(self.enqueue(req, now, &mut l));
                }
                self.close_batch(ack, &mut l);
            }
            // From here on sessions may add requests of their own.
            l.out = Some(stream.clone());
        }
        let timeout = self.settings.backend.timeout;
        let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(5)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut open = true;
        let mut receiving_big = false;
        let mut streaming: Option<Streaming> = None;
        // Runs out once the connection has had nothing to do for `keep`.
        let mut unused = self.keep.map(|keep| Box::pin(tokio::time::sleep(keep)));
        // The last piece written is part of a request whose end has not come (an upload's
        // head or value): the client may be slow to send the rest, and the connection waits.
        let mut partial = false;
        // A batch of requests taken off the queue.
        let mut intake: Vec<BackendRequest> = Vec::with_capacity(BATCH);
        // Replies came since the last tick: the timer keeps running, so that requests the
        // sessions add meanwhile are timed without waking the task for each.
        let mut busy = false;

        let broken: Broken = loop {
            let (idle, ticking, writing, room) = {
                let mut l = side.lock();
                if !l.wbuf.is_empty() {
                    if let Err(e) = l.flush() {
                        break Broken::Lost(e.to_string());
                    }
                }
                // A dedicated connection whose session is gone closes at once: Redis then
                // drops what the session left behind (a BLPOP still blocked would otherwise
                // take the next pushed element for no one).
                let idle = l.pending.is_empty()
                    && l.wbuf.is_empty()
                    && held.is_empty()
                    && streaming.is_none();
                if !open && (idle || self.abandoned(&l.pending, &held)) {
                    l.close();
                    return None;
                }
                let ticking = !l.pending.is_empty() || streaming.is_some() || busy;
                l.ticking = ticking;
                (
                    idle,
                    ticking,
                    !l.wbuf.is_empty(),
                    l.wbuf.len() < WRITE_AHEAD,
                )
            };
            if let (Some(unused), Some(keep)) = (unused.as_mut(), self.keep) {
                if !idle {
                    unused.as_mut().reset(Instant::now() + keep);
                }
            }
            tokio::select! {
                biased;
                ready = std::future::poll_fn(|cx| stream.poll_read_ready(cx)) => {
                    if let Err(e) = ready {
                        break Broken::Lost(e.to_string());
                    }
                    match reader.try_read(&*stream, &mut rbuf) {
                        Ok(0) => break Broken::Lost("closed by the node".into()),
                        Ok(_) => {
                            busy = true;
                            // A big value on its way. Passed on as it arrives (`streamable`): room
                            // for a good read at a time. Gathered: room for all of it at once,
                            // rather than a copy of what came so far each time the buffer doubles.
                            let (mut wants, streamable) = {
                                let mut l = side.lock();
                                let delivered = self.deliver(
                                    &mut rbuf,
                                    &mut framer,
                                    &mut l.pending,
                                    &mut held,
                                    &mut streaming,
                                    &mut deliveries,
                                );
                                if let Err(e) = delivered {
                                    break Broken::Lost(e);
                                }
                                let wants = framer.wants();
                                let streamable = wants > 0
                                    && (streaming.is_some() || self.streamable(&rbuf, &l.pending));
                                (wants, streamable)
                            };
                            rmark.check(&mut rbuf);
                            if wants > 0 {
                                wants = match streamable {
                                    true => wants.min(STREAM_ROOM),
                                    false => wants.min(ROOM_MAX),
                                };
                                if wants > rbuf.capacity() {
                                    rbuf.reserve(wants - rbuf.len());
                                }
                            }
                            // Shown to the sessions choosing a connection, before they run.
                            let big = streaming.is_some() || rbuf.len() >= outbox::BIG;
                            if big != receiving_big {
                                receiving_big = big;
                                self.mark_receiving_big(big);
                            }
                            // What is left is part of a reply: when it is a big one, the other
                            // connections and clients of this worker get a turn between its
                            // reads, rather than waiting for all of it to arrive.
                            if big {
                                tokio::task::yield_now().await;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => break Broken::Lost(e.to_string()),
                    }
                }
                ready = std::future::poll_fn(|cx| stream.poll_write_ready(cx)), if writing => {
                    if let Err(e) = ready {
                        break Broken::Lost(e.to_string());
                    }
                }
                // Taken off the queue many at a time: the queue's room is given back once per
                // batch, where taking them one by one gave it back, under a lock, each time.
                got = self.rx.recv_many(&mut intake, BATCH), if open && room => {
                    if got == 0 {
                        // Every handle is gone.
                        open = false;
                        continue;
                    }
                    let now = Instant::now();
                    // Onto the write side at once, before anything a session adds after them.
                    let mut ack = self.take_in(&mut intake, now, &mut partial);
                    // Let the other sessions that are ready run first, so their requests join
                    // this write: one system call for many clients, as twemproxy's event loop
                    // batches. Not while requests come one at a time (one client, without
                    // pipelining): there the wait gathers nothing and costs a look at the
                    // event loop per request. A write of more than one turns it back on.
                    if !side.lock().alone {
                        tokio::task::yield_now().await;
                        if !self.rx.is_empty() {
                            // Not empty: this takes what is there without waiting.
                            self.rx.recv_many(&mut intake, BATCH).await;
                            ack = ack.max(self.take_in(&mut intake, now, &mut partial));
                        }
                    }
                    // One WAIT after the batch, for the writes of it that need acknowledging.
                    self.close_batch(ack, &mut side.lock());
                }
                // Sessions added requests to the write side: written at the top of the loop, after
                // the other sessions that are ready have added theirs (as above).
                () = std::future::poll_fn(|cx| side.poll_woken(cx)) => {
                    if !side.lock().alone {
                        tokio::task::yield_now().await;
                    }
                }
                // Kept for a session's next upload, which has not come: closed, and no longer
                // counted under `max_dedicated`. The session sees it down and opens another.
                () = async { unused.as_mut().expect("enabled only with a timer").await }, if unused.is_some() && idle && !partial => {
                    self.set_state(NodeState::Down);
                    side.lock().close();
                    return None;
                }
                _ = tick.tick(), if ticking => {
                    busy = false;
                    let mut l = side.lock();
                    // Replies come in order, so the front waiter is the one overdue first.
                    let deadline = match l.pending.front_mut() {
                        _ if streaming.is_some() => streaming.as_ref().and_then(|s| s.deadline),
                        // Not written yet, when `AfterWrite`: the next write times it.
                        Some(Waiter::Client { due, .. }) => due.at(),
                        Some(Waiter::Handshake { deadline }) => Some(*deadline),
                        // A WAIT's time starts when it is the oldest request: WAITs run one
                        // after another, and a WAIT after a BLPOP starts when BLPOP returns.
                        Some(Waiter::Ack { deadline, .. }) => {
                            Some(*deadline.get_or_insert_with(|| {
                                Instant::now() + self.settings.ack_timeout + timeout
                            }))
                        }
                        _ => None,
                    };
                    if deadline.is_some_and(|at| Instant::now() >= at) {
                        break Broken::Timeout;
                    }
                }
            }
        };
        let pending = side.lock().close();
        if self.dedicated.is_some() {
            // Seen as down before its waiters hear of the failure, so the session does not
            // reuse it for its next request.
            self.set_state(NodeState::Down);
        }
        let error = |node| match &broken {
            Broken::Timeout => BackendError::Timeout {
                node,
                ms: timeout.as_millis(),
            },
            Broken::Lost(reason) => BackendError::Lost {
                node,
                reason: reason.clone(),
            },
        };
        if let Some(s) = streaming {
            s.feed.fail(error(self.settings.label.clone()));
        }
        let held = held.into_iter().map(|h| h.reply);
        let waiting = pending.into_iter().filter_map(|w| match w {
            Waiter::Client { reply, .. } => Some(reply),
            _ => None,
        });
        // A held write was applied on the primary, but not confirmed: it gets an error, never
        // a silent success.
        // Held writes were counted when their replies came; the others are counted as failed.
        let stats = &self.settings.stats;
        let waiting = waiting.inspect(|_| stats.count(true));
        for reply in held.chain(waiting) {
            reply.send(Err(error(self.settings.label.clone())));
        }
        Some(match broken {
            Broken::Timeout => format!(
                "timed out: no reply within {} ms; connection reset",
                timeout.as_millis()
            ),
            Broken::Lost(reason) => format!("connection lost: {reason}"),
        })
    }

    /// The commands that set a new connection up, as its errors name them: AUTH when the
    /// backend has a password, HELLO 3 on a RESP3 connection only (a RESP2 client's
    /// connections never send it).
    fn setup(&self) -> &'static str {
        match (self.settings.backend.auth_args().is_some(), self.proto) {
            (true, Proto::Resp3) => "AUTH, HELLO 3",
            (true, Proto::Resp2) => "AUTH",
            (false, Proto::Resp3) => "HELLO 3",
            (false, Proto::Resp2) => "nothing",
        }
    }

    /// The error for a request whose node was replaced as primary while it was in flight.
    fn deposed(&self) -> BackendError {
        BackendError::Lost {
            node: self.settings.label.clone(),
            reason: DEPOSED.into(),
        }
    }

    /// Ends a batch that has writes needing `ack` replica acknowledgements with one WAIT: it
    /// covers every write of the batch (and before), as Redis counts acknowledgements up to
    /// this connection's last write.
    fn close_batch(&self, ack: u8, side: &mut WriteState) {
        if ack == 0 {
            return;
        }
        let ms = self.settings.ack_timeout.as_millis().max(1).to_string();
        let want = ack.to_string();
        let args = [&b"WAIT"[..], want.as_bytes(), ms.as_bytes()];
        encode::command(side.wbuf.buf(), args.into_iter());
        side.pending.push_back(Waiter::Ack {
            deadline: None,
            want: ack,
        });
    }

    /// A dedicated connection nobody waits on any more: its session has ended.
    fn abandoned(&self, pending: &VecDeque<Waiter>, held: &VecDeque<Held>) -> bool {
        self.dedicated.is_some()
            && held.iter().all(|h| h.reply.is_closed())
            && pending.iter().all(|w| match w {
                Waiter::Client { reply, .. } => reply.is_closed(),
                Waiter::Handshake { .. } | Waiter::Ack { .. } => true,
            })
    }

    /// Adds the requests taken off the queue to the write side; returns the replica
    /// acknowledgements the most demanding of them needs. `partial`: see `serve`.
    fn take_in(&self, intake: &mut Vec<BackendRequest>, now: Instant, partial: &mut bool) -> u8 {
        if let Some(last) = intake.last() {
            *partial = last.reply.is_none() && self.keep.is_some();
        }
        let mut side = self.side.lock();
        let mut ack = 0;
        for req in intake.drain(..) {
            ack = ack.max(self.enqueue(req, now, &mut side));
        }
        ack
    }

    /// Adds a request to the batch; returns the replica acknowledgements it needs.
    fn enqueue(&self, req: BackendRequest, now: Instant, side: &mut WriteState) -> u8 {
        let Some(reply) = req.reply else {
            // Nothing waits for a reply (a subscriber's SUBSCRIBE: its events are pushes).
            side.wbuf.put(&req.bytes);
            side.added();
            return 0;
        };
        // A client that already went away needs no answer; skipping its request is safe
        // because nothing was written for it yet.
        if reply.is_closed() {
            return 0;
        }
        let admitted = match req.copy {
            Copy::Mirrored => Some(self.settings.gate.closes()),
            _ => self.settings.gate.admit(),
        };
        let Some(gate) = admitted else {
            self.side.refuse(reply);
            return 0;
        };
        side.wbuf.put(&req.bytes);
        side.added();
        let due = match req.wait {
            Wait::Default => Due::At(now + self.settings.backend.timeout),
            Wait::For(d) => Due::At(now + d),
            Wait::Forever => Due::Never,
        };
        let tap = match (&self.settings.mirror, req.copy) {
            (Some(_), Copy::Write) => Tap::Write(req.bytes, req.skip),
            (Some(_), Copy::Resync(target, keys)) => Tap::Resync(target, keys),
            _ => Tap::None,
        };
        side.pending.push_back(Waiter::Client {
            reply,
            due,
            skip: req.skip,
            ack: req.ack,
            tap,
            gate,
        });
        // A mirror shard's replicas acknowledge copies themselves; no WAIT.
        if self.settings.mirror.is_some() {
            0
        } else {
            req.ack
        }
    }

    /// A mirror shard's reply: copies what it must, then answers (or leaves answering to the
    /// replicas' acknowledgements).
    fn copy(&self, m: &Mirror, tap: Tap, reply: ReplyTo, ack: u8, frame: Bytes) {
        match tap {
            Tap::Write(request, skip) if !reply::is_error(&frame) && !aborted(&request, &frame) => {
                if !m.is_source(&self.settings.addr) {
                    // Written on a node that is no longer the primary: no replica gets it.
                    let result = if ack > 0 {
                        Err(BackendError::NotAcknowledged {
                            node: self.settings.label.clone(),
                            got: 0,
                            want: ack,
                            ms: 0,
                            applied: frame,
                        })
                    } else {
                        Ok(frame)
                    };
                    reply.send(result);
                    return;
                }
                let waiting = if ack > 0 {
                    Some((reply, ack))
                } else {
                    reply.send(Ok(frame.clone()));
                    None
                };
                m.publish(&request, skip, frame, waiting, &self.settings.label);
            }
            Tap::Resync(target, keys) => {
                for restore in mirror::restores(&keys, &frame) {
                    m.push_to(&target, restore);
                }
                reply.send(Ok(frame));
            }
            _ => {
                reply.send(Ok(frame));
            }
        }
    }

    /// Whether the reply at the front of `rbuf`, once big, is passed on as it arrives: a shared
    /// connection's reply that goes to an inbox as it is (not one to hold for replica
    /// acknowledgements, copy to a mirror's replicas, or skip part of). Pushes and errors are
    /// read whole: a push answers no request, and an error is counted as one once complete.
    fn streamable(&self, rbuf: &[u8], pending: &VecDeque<Waiter>) -> bool {
        rbuf.first() != Some(&b'>')
            && !reply::is_error(rbuf)
            && self.dedicated.is_none()
            && self.settings.mirror.is_none()
            && matches!(
                pending.front(),
                Some(Waiter::Client {
                    reply: ReplyTo::Inbox(_),
                    skip: 0,
                    ack: 0,
                    tap: Tap::None,
                    gate,
                    ..
                }) if *gate == self.settings.gate.closes()
            )
    }

    /// Passes on what has come of the streamed reply at the front, once there is a piece worth
    /// a wake-up; or all of it, with the reply's end, once it is complete. True when complete.
    fn pass_on(
        rbuf: &mut BytesMut,
        framer: &mut ReplyFramer,
        streaming: &mut Option<Streaming>,
    ) -> Result<bool, String> {
        let Some(s) = streaming else {
            return Ok(true);
        };
        if let Some(len) = framer.frame_len(rbuf).map_err(|e| e.to_string())? {
            let last = rbuf.split_to(len).freeze();
            if let Some(s) = streaming.take() {
                s.feed.finish(last);
            }
            return Ok(true);
        }
        let n = framer.movable(rbuf.len());
        if n >= outbox::BIG {
            s.feed.push(rbuf.split_to(n).freeze());
            framer.taken(n);
        }
        Ok(false)
    }

    /// Hands every complete reply in `rbuf` to its waiter; starts passing the reply at the
    /// front on as it arrives once a big part of it is here.
    fn deliver(
        &self,
        rbuf: &mut BytesMut,
        framer: &mut ReplyFramer,
        pending: &mut VecDeque<Waiter>,
        held: &mut VecDeque<Held>,
        streaming: &mut Option<Streaming>,
        deliveries: &mut Deliveries,
    ) -> Result<(), String> {
        if !Self::pass_on(rbuf, framer, streaming)? {
            return Ok(());
        }
        let whole = self.deliver_whole(rbuf, framer, pending, held, deliveries);
        deliveries.flush();
        whole?;
        if rbuf.len() < outbox::BIG || !self.streamable(rbuf, pending) {
            return Ok(());
        }
        if let Some(Waiter::Client { reply, due, .. }) = pending.pop_front() {
            self.settings.stats.count(false);
            match reply.into_stream() {
                Ok(feed) => {
                    *streaming = Some(Streaming {
                        feed,
                        deadline: due.at(),
                    })
                }
                Err(_) => unreachable!("a streamable reply goes to an inbox"),
            }
            Self::pass_on(rbuf, framer, streaming)?;
        }
        Ok(())
    }

    /// Hands every complete reply in `rbuf` to its waiter, through `deliveries` (which the
    /// caller flushes).
    fn deliver_whole(
        &self,
        rbuf: &mut BytesMut,
        framer: &mut ReplyFramer,
        pending: &mut VecDeque<Waiter>,
        held: &mut VecDeque<Held>,
        deliveries: &mut Deliveries,
    ) -> Result<(), String> {
        while let Some(len) = framer.frame_len(rbuf).map_err(|e| e.to_string())? {
            let frame = rbuf.split_to(len).freeze();
            let handshake = matches!(pending.front(), Some(Waiter::Handshake { .. }));
            if let Some(dedicated) = self.dedicated.as_ref().filter(|_| !handshake) {
                if frame[0] == b'>' || dedicated.subscriber {
                    let _ = dedicated.push.send(Push::Frame {
                        tag: dedicated.tag,
                        frame,
                    });
                    continue;
                }
            } else if frame[0] == b'>' {
                // Out-of-band push (client tracking): nothing on a shared connection asked
                // for it, and it answers no request.
                continue;
            }
            match pending.front_mut() {
                Some(Waiter::Client { skip, .. }) if *skip > 0 => *skip -= 1,
                Some(Waiter::Client { .. }) => {
                    if let Some(Waiter::Client {
                        reply,
                        ack,
                        tap,
                        gate,
                        ..
                    }) = pending.pop_front()
                    {
                        self.settings.stats.count(reply::is_error(&frame));
                        if gate != self.settings.gate.closes() {
                            deliveries.send(reply, Err(self.deposed()));
                            continue;
                        }
                        match (&self.settings.mirror, tap) {
                            (Some(m), tap) => self.copy(m, tap, reply, ack, frame),
                            (None, _) if ack > 0 && !reply::is_error(&frame) => {
                                held.push_back(Held {
                                    reply,
                                    frame,
                                    ack,
                                    gate,
                                });
                            }
                            (None, _) => deliveries.send(reply, Ok(frame)),
                        }
                    }
                }
                Some(Waiter::Ack { want, .. }) => {
                    let want = *want;
                    pending.pop_front();
                    let got = reply::integer(&frame);
                    let closes = self.settings.gate.closes();
                    for h in held.drain(..) {
                        let result = match got {
                            _ if h.gate != closes => Err(self.deposed()),
                            Some(n) if n >= i64::from(h.ack) => Ok(h.frame),
                            _ => Err(BackendError::NotAcknowledged {
                                node: self.settings.label.clone(),
                                got: got.unwrap_or(0),
                                want: h.ack,
                                ms: self.settings.ack_timeout.as_millis(),
                                applied: h.frame,
                            }),
                        };
                        deliveries.send(h.reply, result);
                    }
                    if got.is_none() {
                        tracing::warn!(
                            node = %self.settings.label,
                            "WAIT {want} refused: {}",
                            String::from_utf8_lossy(&frame).trim_end()
                        );
                    }
                }
                Some(Waiter::Handshake { .. }) => {
                    pending.pop_front();
                    if reply::is_error(&frame) {
                        return Err(format!(
                            "connection setup ({}) refused: {}",
                            self.setup(),
                            String::from_utf8_lossy(frame.strip_prefix(b"-").unwrap_or(&frame))
                                .trim_end()
                        ));
                    }
                }
                None => return Err("a reply arrived that no request was waiting for".into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
