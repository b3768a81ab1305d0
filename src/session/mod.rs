//! One client session: read requests, plan them, dispatch them, write replies in order.
//!
//! The session is one task driving one socket. Each request becomes a [`Slot`] at the back of a
//! FIFO; a slot is either ready (the proxy answered it) or waits for backend replies. Replies are
//! written strictly from the front of the FIFO, so they go back in request order even when the
//! requests went to different shards or were split. Reading pauses while too many requests are
//! in flight or too many reply bytes wait for the client (backpressure), and writing never stops
//! reading from progressing otherwise, so a client that pipelines a lot before reading does not
//! deadlock against the proxy.
//!
//! A protocol error ends this client only: it gets `-ERR Protocol error: ...`, the replies to
//! its earlier requests, and then the connection closes.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use crate::backend::{BackendError, Dedicated, NodeConn, NodeState, Push, Reply, Wait};
use crate::command::spec::flags::{READONLY, WRITE};
use crate::command::{self, printable, CommandId, Local, Merge, Part, Plan, TxCommand, CROSSSLOT};
use crate::config::ReplicationMode;
use crate::lock;
use crate::net::socket::{Reader, Socket};
use crate::proxy::clients::{Buffers, ClientEntry, LastCommand, Registry};
use crate::proxy::Proxy;
use crate::resp::{encode, Proto, Request, RequestParser, Value};
use crate::session::local::info;
use crate::telemetry::LogLimit;
use crate::topology::{failed, NodeCall, Topology};

pub mod acl;
pub mod local;
pub mod merge;
mod pubsub;
mod slot;
mod transaction;

use pubsub::{Event, Subscriptions};
use slot::{Cursors, Extra, Merging, PartReply, Slot};
use transaction::{Pinned, Transaction, EXECABORT};

/// Per-connection state that commands such as HELLO, AUTH, MULTI and SUBSCRIBE change.
pub struct Session {
    pub id: u64,
    pub proto: Proto,
    pub name: Option<Bytes>,
    /// CLIENT SETINFO LIB-NAME / LIB-VER.
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub authenticated: bool,
    /// The `[[users]]` entry it authenticated as; `None` for the default user (the top-level
    /// password, or no password), who may run everything.
    pub user: Option<Arc<crate::config::User>>,
    /// Failed AUTHs in a row: each is answered later than the one before.
    auth_failures: u32,
    /// When the last failed AUTH is answered; the next one's delay starts there.
    auth_penalty_until: tokio::time::Instant,
    /// The topology generation its per-shard state (below) was made under.
    generation: u64,
    /// This session in the proxy's client registry.
    pub entry: Arc<ClientEntry>,
    /// Set by a CLIENT KILL of this very session: it closes after the reply.
    pub close_after_reply: bool,
    /// Commands queued since MULTI.
    tx: Option<Transaction>,
    /// The connection holding this session's WATCH.
    pinned: Option<Pinned>,
    /// Per shard: a connection of this session's own for blocking commands and WAIT.
    blocking: Vec<Option<NodeConn>>,
    /// Per shard: whether this session sent it anything (WAIT asks those shards).
    touched: Vec<bool>,
    subs: Subscriptions,
    /// Frames the session's dedicated connections push (pub/sub messages).
    pushes_tx: mpsc::UnboundedSender<Push>,
    pushes: mpsc::UnboundedReceiver<Push>,
    /// Waiting in a blocking command or WAIT: counted in INFO's `blocked_clients` until its
    /// reply is out.
    blocked: bool,
}

/// The tag of dedicated connections that carry no subscription (subscriber connections are
/// tagged with their shard).
const NOT_SUBSCRIBER: usize = usize::MAX;

impl Session {
    fn new(id: u64, authenticated: bool, entry: Arc<ClientEntry>) -> Session {
        let (pushes_tx, pushes) = mpsc::unbounded_channel();
        Session {
            id,
            proto: Proto::Resp2,
            name: None,
            lib_name: None,
            lib_ver: None,
            authenticated,
            user: None,
            auth_failures: 0,
            auth_penalty_until: tokio::time::Instant::now(),
            generation: 0,
            entry,
            close_after_reply: false,
            tx: None,
            pinned: None,
            blocking: Vec::new(),
            touched: Vec::new(),
            subs: Subscriptions::default(),
            pushes_tx,
            pushes,
            blocked: false,
        }
    }

    /// Counts the session as blocked (a blocking command or WAIT dispatched).
    fn block(&mut self, proxy: &Proxy) {
        if !self.blocked {
            self.blocked = true;
            proxy.stats.blocked.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn unblock(&mut self, proxy: &Proxy) {
        if self.blocked {
            self.blocked = false;
            proxy.stats.blocked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn reply(&self, value: Value) -> Bytes {
        value.to_bytes(self.proto)
    }

    /// Forgets every piece of server-side state (RESET): transaction, WATCH, subscriptions.
    fn reset_state(&mut self) {
        self.tx = None;
        self.pinned = None;
        self.blocking.clear();
        self.touched.clear();
        self.subs.close();
    }

    fn dedicated(&self) -> Dedicated {
        Dedicated {
            push: self.pushes_tx.clone(),
            tag: NOT_SUBSCRIBER,
            subscriber: false,
        }
    }

    /// This session's own connection to `shard`, for commands that may block.
    fn blocking_conn(
        &mut self,
        topology: &Topology,
        shard: usize,
    ) -> Result<NodeConn, BackendError> {
        if self.blocking.len() != topology.shards.len() {
            self.blocking.resize_with(topology.shards.len(), || None);
        }
        match &self.blocking[shard] {
            Some(conn) if conn.state() != NodeState::Down => Ok(conn.clone()),
            _ => {
                // A broken one goes first: its place under max_dedicated is freed.
                self.blocking[shard] = None;
                let conn = topology.shards[shard].dedicated(self.proto, self.dedicated())?;
                self.blocking[shard] = Some(conn.clone());
                Ok(conn)
            }
        }
    }

    /// Refreshes what CLIENT LIST shows for this session; `last` is the last request.
    pub fn report(&self, last: Option<LastCommand>, mut io: Buffers) {
        let (sub, psub, ssub) = self.subs.counts();
        io.multi_mem = self.tx.as_ref().map_or(0, Transaction::queued_bytes);
        let user = self.user.as_ref().map_or("default", |u| u.name.as_str());
        self.entry.update(|s| {
            s.io = io;
            s.qbuf_peak = s.qbuf_peak.max(io.qbuf);
            if s.user != user {
                s.user = user.to_string();
            }
            s.name = self.name.clone();
            s.lib_name = self.lib_name.clone();
            s.lib_ver = self.lib_ver.clone();
            s.resp = if self.proto == Proto::Resp3 { 3 } else { 2 };
            (s.sub, s.psub, s.ssub) = (sub, psub, ssub);
            s.multi = self.tx.as_ref().map_or(-1, |t| i64::from(t.len()));
            if let Some(last) = last {
                s.cmd = Some(last);
                s.last_active = std::time::Instant::now();
            }
        });
    }

    /// Whether it holds state tied to shard positions or nodes: a transaction, a WATCH,
    /// blocking connections, subscriptions.
    fn holds_shard_state(&self) -> bool {
        self.tx.is_some()
            || self.pinned.is_some()
            || self.blocking.iter().any(Option::is_some)
            || self.subs.active()
    }

    fn touch(&mut self, shards: usize, shard: usize) {
        if self.touched.len() != shards {
            self.touched.resize(shards, false);
        }
        self.touched[shard] = true;
    }
}

/// Serves one client until it quits, breaks the protocol or disconnects.
pub async fn serve(
    proxy: Arc<Proxy>,
    mut stream: impl Socket,
    peer: SocketAddr,
    laddr: SocketAddr,
    id: u64,
) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&stream));
    let registration = Registry::register(&proxy.clients, id, peer, laddr, fd);
    // Subscribed before the configuration is read, so a reload in between is not missed.
    let mut reloaded = proxy.reload_notice();
    let config = proxy.config();
    let mut limits = config.client;
    let mut session = Session::new(id, config.open_to_all(), registration.entry.clone());
    session.generation = proxy.topology().generation;
    let mut parser = RequestParser::new(config.protocol);
    drop(config);
    let mut shutdown = proxy.shutdown_notice();
    // Limits and per-shard state are looked at again after a reload: `changed()` below marks
    // the reload seen as it wakes the loop, so it leaves a note for the top of the loop.
    let mut reload_due = false;
    // Set after QUIT, a protocol error, EOF or shutdown: no more reading; flush what is owed,
    // then close. A session that starts after shutdown began takes no command.
    let mut closing = *shutdown.borrow_and_update();
    let mut inbuf = BytesMut::new();
    let mut reader = Reader::default();
    let mut out = BytesMut::new();
    let mut pending: VecDeque<Owed> = VecDeque::new();
    // Bytes of pub/sub messages waiting in `pending`.
    let mut message_bytes = 0usize;
    // The client closed its side: nothing more to read, so no lingering needed.
    let mut peer_closed = false;
    // Set after a request that must finish before any later one starts (HELLO switching the
    // protocol, WATCH, a blocking command, SUBSCRIBE): nothing is dispatched until every
    // request so far is answered. Such a request also waits for every earlier one before
    // being dispatched itself (`held`).
    let mut barrier = false;
    let mut held: Option<(Request, Planned)> = None;
    // `limits.idle_timeout`: one timer, pushed back only when it fires, so reading costs one
    // clock read rather than a timer per request.
    let mut idle = limits.idle_timeout;
    let mut last_read = tokio::time::Instant::now();
    let idle_timer = tokio::time::sleep(if idle.is_zero() { IDLE_NEVER } else { idle });
    tokio::pin!(idle_timer);

    loop {
        if reload_due || reloaded.has_changed().unwrap_or(false) {
            reload_due = false;
            reloaded.borrow_and_update();
            let generation = proxy.topology().generation;
            if generation != session.generation {
                // Shard positions and nodes changed under it: what it holds on them (and a
                // request planned on the old ring) cannot be carried over. It gets the replies
                // it is owed, then the connection closes, so that its library reconnects and
                // subscribes or retries again.
                if session.holds_shard_state() || held.is_some() {
                    tracing::info!(
                        peer = %peer,
                        client = id,
                        "closing: a reload changed the shards its transaction, WATCH, blocking connections or subscriptions were on"
                    );
                    held = None;
                    closing = true;
                }
                session.generation = generation;
                session.touched.clear();
            }
            limits = proxy.config().client;
            if limits.idle_timeout != idle {
                idle = limits.idle_timeout;
                let wait = if idle.is_zero() { IDLE_NEVER } else { idle };
                idle_timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + wait);
            }
        }
        let replied = move_ready(
            &proxy.telemetry,
            &mut pending,
            &mut out,
            limits.max_output_buffer,
            &mut message_bytes,
        );
        // Idle time counts from the last request read or reply given, as on Redis.
        if let Some(at) = replied {
            last_read = tokio::time::Instant::from_std(at);
        }
        if !out.is_empty() {
            match stream.try_write(&out) {
                Ok(n) => {
                    proxy
                        .telemetry
                        .net_output
                        .fetch_add(n as u64, Ordering::Relaxed);
                    let _ = out.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if barrier && pending.is_empty() {
            barrier = false;
            session.unblock(&proxy);
            if let Some((req, planned)) = held.take() {
                let topology = proxy.topology();
                let counted = Counted::of(&planned);
                let slot =
                    dispatch(&proxy, &topology, &mut session, req, planned, &mut closing).await;
                pending.push_back(Owed::counted(slot, counted));
                barrier = true;
                continue;
            }
        }
        // Parse what has arrived, up to the pipeline limit; the rest waits in the buffer and
        // is parsed once replies drain, before the socket is read again. This comes before
        // waiting, so commands already buffered never wait for more input.
        if !closing && !barrier && !inbuf.is_empty() && pending.len() < limits.max_pipeline {
            let topology = proxy.topology();
            let policy = proxy.policy();
            let mut last: Option<LastCommand> = None;
            // Requests read together share one start time (one clock read per batch).
            let since = std::time::Instant::now();
            while pending.len() < limits.max_pipeline && !closing && !barrier {
                match parser.next(&mut inbuf) {
                    Ok(Some(req)) => {
                        let (plan, flags, cmd) =
                            command::plan_and_flags(&req, &topology.router, &policy);
                        let planned = Planned {
                            plan,
                            flags,
                            cmd,
                            since,
                        };
                        let this = LastCommand::of(req.args());
                        if matches!(
                            planned.plan,
                            Plan::Local(Local::ClientList | Local::ClientInfo)
                        ) {
                            let io = buffers(&inbuf, &out, pending.len(), message_bytes);
                            session.report(Some(this.clone()), io);
                        }
                        if exclusive(&planned.plan, &session) {
                            barrier = true;
                            if !pending.is_empty() {
                                held = Some((req, planned));
                                break;
                            }
                        }
                        last = Some(this);
                        let counted = Counted::of(&planned);
                        let slot =
                            dispatch(&proxy, &topology, &mut session, req, planned, &mut closing)
                                .await;
                        pending.push_back(Owed::counted(slot, counted));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(peer = %peer, client = id, "protocol error: {e}");
                        let msg = format!("ERR {e}");
                        pending.push_back(Owed::uncounted(Slot::Ready(encode::error_bytes(&msg))));
                        closing = true;
                    }
                }
            }
            if last.is_some() {
                let io = buffers(&inbuf, &out, pending.len(), message_bytes);
                session.report(last, io);
            }
        }
        if closing && pending.is_empty() && out.is_empty() && held.is_none() {
            if !peer_closed {
                linger_close(&mut stream).await;
            }
            break;
        }
        // During a barrier the socket is still read (a little), to notice a client that
        // leaves while its BLPOP is blocked.
        let can_read = !closing
            && (!barrier || inbuf.len() < BARRIER_READ)
            && pending.len() < limits.max_pipeline
            && out.len() < limits.max_output_buffer;
        let can_collect = !pending.is_empty() && out.len() < limits.max_output_buffer;
        tokio::select! {
            ready = stream.readable(), if can_read => {
                if ready.is_err() {
                    break;
                }
                match reader.try_read(&stream, &mut inbuf) {
                    // Gone while a request runs alone (a blocked pop, say): nobody is left
                    // to answer, and dropping its connection ends what it left blocked.
                    Ok(0) if barrier => break,
                    Ok(0) => {
                        closing = true;
                        peer_closed = true;
                    }
                    Ok(n) => {
                        proxy.telemetry.net_input.fetch_add(n as u64, Ordering::Relaxed);
                        if !idle.is_zero() {
                            last_read = tokio::time::Instant::now();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            ready = stream.writable(), if !out.is_empty() => {
                if ready.is_err() {
                    break;
                }
            }
            _ = std::future::poll_fn(|cx| pending.front_mut().map_or(Poll::Pending, |o| o.slot.poll_ready(cx))), if can_collect => {}
            Some(push) = session.pushes.recv() => match session.subs.on_push(push) {
                Event::None => {}
                Event::Message(frame) => {
                    // Behind a pending subscription confirmation, a message waits its turn;
                    // otherwise it goes out at once, between whole replies (RESP3 pushes
                    // may come between any two replies, also while a BLPOP is blocked).
                    let queued = matches!(pending.front().map(|o| &o.slot), Some(Slot::Gated { .. }));
                    if queued {
                        message_bytes += frame.len();
                    }
                    if message_bytes + out.len() + frame.len() > limits.max_output_buffer {
                        tracing::warn!(
                            peer = %peer,
                            client = id,
                            limit = limits.max_output_buffer,
                            "subscriber closed: its unread messages passed max_output_buffer"
                        );
                        break;
                    }
                    if queued {
                        pending.push_back(Owed::uncounted(Slot::Message(frame)));
                    } else {
                        out.extend_from_slice(&frame);
                    }
                }
                Event::Lost(reason) => {
                    tracing::info!(
                        peer = %peer,
                        client = id,
                        "subscriber closed: a shard's subscription connection was lost: {reason}"
                    );
                    break;
                }
            },
            _ = session.entry.kill.notified() => {
                tracing::info!(peer = %peer, client = id, "closed by CLIENT KILL");
                break;
            }
            // Shutting down: read nothing more, answer what was read, then close.
            _ = shutdown.changed(), if !closing => closing = true,
            _ = reloaded.changed() => reload_due = true,
            // As on Redis, a client waiting for replies, blocked or subscribed is not idle.
            () = &mut idle_timer, if !idle.is_zero() && !closing => {
                let now = tokio::time::Instant::now();
                let quiet = pending.is_empty() && held.is_none() && !session.subs.active();
                if quiet && now >= last_read + idle {
                    tracing::info!(peer = %peer, client = id, "closed: idle for {idle:?} (limits.idle_timeout)");
                    break;
                }
                let next = if quiet { last_read + idle } else { now + idle };
                idle_timer.as_mut().reset(next);
            }
        }
    }
    session.unblock(&proxy);
}

/// The session's buffers as CLIENT LIST shows them.
fn buffers(inbuf: &BytesMut, out: &BytesMut, owed: usize, message_bytes: usize) -> Buffers {
    Buffers {
        qbuf: inbuf.len(),
        qbuf_free: inbuf.capacity() - inbuf.len(),
        multi_mem: 0,
        obl: out.len(),
        out_capacity: out.capacity(),
        oll: owed,
        omem: message_bytes,
        writing: !out.is_empty(),
    }
}

/// A planned request, with the flags that say whether it writes (WAIT asks the shards written
/// to) or only reads.
struct Planned {
    plan: Plan,
    /// Redis's flags for the command (`spec::flags`).
    flags: u32,
    /// What the command is counted as, and when it was read.
    cmd: CommandId,
    since: std::time::Instant,
}

/// A reply the client is owed, and the command it is counted under once it is ready
/// (pub/sub messages and protocol errors are not commands).
struct Owed {
    slot: Slot,
    counted: Option<Counted>,
}

/// What a reply is counted under: the command, when it was read, and whether it was refused
/// before it ran.
#[derive(Clone, Copy)]
struct Counted {
    cmd: CommandId,
    since: std::time::Instant,
    rejected: bool,
}

impl Counted {
    fn of(planned: &Planned) -> Counted {
        Counted {
            cmd: planned.cmd,
            since: planned.since,
            rejected: matches!(planned.plan, Plan::Error(_)),
        }
    }
}

impl Owed {
    fn counted(slot: Slot, counted: Counted) -> Owed {
        Owed {
            slot,
            counted: Some(counted),
        }
    }

    fn uncounted(slot: Slot) -> Owed {
        Owed {
            slot,
            counted: None,
        }
    }
}

/// A deadline that never comes, for the idle timer when there is no idle timeout.
const IDLE_NEVER: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// Bytes read ahead while a request runs alone, enough to see the client close.
const BARRIER_READ: usize = 64 * 1024;

/// Whether a request must run alone: after every earlier request is answered, and before any
/// later one starts.
fn exclusive(plan: &Plan, session: &Session) -> bool {
    let in_multi = session.tx.is_some();
    // After a failed AUTH, nothing more is read until its delay has passed (see
    // `auth_outcome`), and the replies so far go out first.
    if session.auth_failures > 0 && session.auth_penalty_until > tokio::time::Instant::now() {
        return true;
    }
    match plan {
        // RESP2 and RESP3 requests use different backend connections, so a request after
        // HELLO could overtake one before it.
        Plan::Local(Local::Hello | Local::Reset) => true,
        // The watch and the commands around it run on different connections; Redis runs
        // them in order, and so must the proxy for WATCH conflicts to mean the same.
        Plan::Watch(_) => !in_multi,
        Plan::Transaction(TxCommand::Exec | TxCommand::Discard) => session.pinned.is_some(),
        // They block the client's connection on Redis: nothing after them runs before them.
        Plan::Blocking { .. } | Plan::WaitReplicas { .. } => !in_multi,
        // A message published after a confirmation must reach the client.
        Plan::PubSub(_) => !in_multi,
        _ => false,
    }
}

/// How long a closing connection keeps discarding input so its last reply is not lost.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Closes after the last reply (QUIT, a protocol error) without losing it: closing a socket
/// with unread input makes the kernel send a reset, which can destroy the reply still in
/// flight. So send FIN first, then discard what the client still sends, for a bounded time.
async fn linger_close(stream: &mut impl Socket) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Moves the replies at the front of the FIFO that are ready into the output buffer; returns
/// when, if it moved a reply to a command.
fn move_ready(
    telemetry: &crate::telemetry::Telemetry,
    pending: &mut VecDeque<Owed>,
    out: &mut BytesMut,
    max_output: usize,
    message_bytes: &mut usize,
) -> Option<std::time::Instant> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut now = None;
    while out.len() < max_output {
        let Some(front) = pending.front_mut() else {
            return now;
        };
        if front.slot.poll_ready(&mut cx).is_pending() {
            return now;
        }
        let Some(owed) = pending.pop_front() else {
            return now;
        };
        match owed.slot {
            Slot::Ready(bytes) => {
                if let Some(Counted {
                    cmd,
                    since,
                    rejected,
                }) = owed.counted
                {
                    let now = *now.get_or_insert_with(std::time::Instant::now);
                    let error = matches!(bytes.first(), Some(b'-' | b'!')).then_some(&bytes[..]);
                    // Refused before running: by the plan, or before authentication or by a
                    // user's permissions.
                    let rejected = rejected
                        || error.is_some_and(|e| {
                            e.starts_with(b"-NOAUTH") || e.starts_with(b"-NOPERM")
                        });
                    telemetry.record(cmd, now.saturating_duration_since(since), error, rejected);
                }
                out.extend_from_slice(&bytes);
            }
            Slot::Message(bytes) => {
                *message_bytes -= bytes.len();
                out.extend_from_slice(&bytes);
            }
            _ => {}
        }
    }
    now
}

const SUBSCRIBER_MODE: &str =
    "only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context";

/// Carries out one planned request; returns the slot its reply will fill.
async fn dispatch(
    proxy: &Proxy,
    topology: &Topology,
    session: &mut Session,
    req: Request,
    planned: Planned,
    closing: &mut bool,
) -> Slot {
    let Planned {
        plan, flags, cmd, ..
    } = planned;
    // The delay after a failed AUTH: this command is not looked at before it has passed.
    if session.auth_failures > 0 {
        tokio::time::sleep_until(session.auth_penalty_until).await;
    }
    let writes = flags & WRITE != 0;
    // Declared read-only by Redis: may go to a replica (`read_from`), and needs no replica
    // acknowledgement (`write_ack`); every other command is treated as a write for both.
    let readonly = flags & READONLY != 0 && !writes;
    proxy.stats.commands.fetch_add(1, Ordering::Relaxed);
    if !session.authenticated {
        let allowed = matches!(
            plan,
            Plan::Error(_) | Plan::Local(Local::Auth | Local::Hello | Local::Quit | Local::Reset)
        );
        if !allowed {
            return Slot::Ready(Bytes::from_static(b"-NOAUTH Authentication required.\r\n"));
        }
    }
    // A user's role and key prefixes, checked before the command is queued or sent.
    if let (Some(user), false) = (&session.user, matches!(plan, Plan::Error(_))) {
        if let Err(msg) = user.check(req.args(), cmd, flags) {
            return Slot::Ready(encode::error_bytes(&msg));
        }
    }
    if session.subs.active() {
        match (&plan, session.proto) {
            (Plan::Error(_) | Plan::PubSub(_) | Plan::Local(Local::Quit | Local::Reset), _) => {}
            (Plan::Local(Local::Ping), Proto::Resp2) => {
                return Slot::Ready(pubsub::subscriber_pong(req.args().get(1).map(|a| &a[..])));
            }
            (Plan::Local(Local::Hello), _) => {
                return error(
                    "ERR shardis does not support HELLO while subscribed: UNSUBSCRIBE first",
                );
            }
            (_, Proto::Resp2) => {
                let name = String::from_utf8_lossy(req.name()).to_ascii_lowercase();
                return error(&format!(
                    "ERR Can't execute '{}': {SUBSCRIBER_MODE}",
                    printable(name.as_bytes(), 128)
                ));
            }
            _ => {}
        }
    }
    if session.tx.is_some() && !matches!(plan, Plan::Local(Local::Quit | Local::Reset)) {
        return in_transaction(proxy, topology, session, req, plan).await;
    }
    match plan {
        Plan::Forward(shard) => forward(topology, session, shard, &req, writes, readonly).await,
        Plan::AnyShard => {
            let shard = topology.any_shard();
            forward(topology, session, shard, &req, writes, readonly).await
        }
        Plan::Split { merge, parts } => {
            fan_out(topology, session, merge, parts, Extra::None, writes, readonly).await
        }
        Plan::Broadcast(merge) => {
            let script = |body: &str| {
                let mut cmd = BytesMut::new();
                encode::command(&mut cmd, [&b"EVAL_RO"[..], body.as_bytes(), b"0"].into_iter());
                cmd.freeze()
            };
            let (request, extra) = match merge {
                // The fleet's figures, with the keyspace counted without shardis' own keys.
                Merge::Info => {
                    let info = info::Request::new(proxy, topology, &req);
                    (script(lock::scripts::INFO_FLEET), Extra::Info(info))
                }
                Merge::ConfigGet => (request_bytes(&req), Extra::Config(config_overrides(proxy))),
                Merge::DbSize => (script(lock::scripts::DBSIZE), Extra::None),
                Merge::RandomKey => (script(lock::scripts::RANDOMKEY), Extra::None),
                Merge::Flush => (flush_script(&req), Extra::None),
                // To each node on a connection of its own, waiting for no replica.
                Merge::Kill | Merge::EveryNode | Merge::FunctionStats => {
                    // The nodes reset their figures; the proxy resets its own with them.
                    if cmd.name() == "config|resetstat" {
                        proxy.reset_stats();
                    }
                    return every_node(proxy, topology, session, &req, merge);
                }
                _ => (request_bytes(&req), Extra::None),
            };
            let parts = (0..topology.shards.len())
                .map(|shard| Part {
                    shard,
                    request: request.clone(),
                    positions: Vec::new(),
                })
                .collect();
            fan_out(topology, session, merge, parts, extra, writes, readonly).await
        }
        Plan::Local(Local::Hello) if session.pinned.is_some() => {
            error("ERR shardis does not support HELLO while keys are watched: UNWATCH first")
        }
        Plan::Local(local) => {
            if local == Local::Reset {
                session.reset_state();
            }
            let proto = session.proto;
            let reply = crate::session::local::answer(proxy, session, local, &req);
            if session.proto != proto {
                // Its own connections speak the old protocol.
                session.blocking.clear();
            }
            if local == Local::Quit || session.close_after_reply {
                *closing = true;
            }
            if matches!(local, Local::Auth | Local::Hello) {
                return auth_outcome(session, &req, reply);
            }
            Slot::Ready(reply)
        }
        Plan::Error(msg) => error(&msg),
        Plan::Blocking { shard, .. }
            if topology.shards[shard].config.replication == ReplicationMode::Mirror =>
        {
            error("ERR shardis does not run blocking commands on a mirror-replicated shard (its copies could block the replicas)")
        }
        Plan::Blocking { shard, timeout } => {
            let conn = match session.blocking_conn(topology, shard) {
                Ok(conn) => conn,
                Err(e) => return Slot::Waiting(failed(e)),
            };
            session.touch(topology.shards.len(), shard);
            let wait = blocking_wait(proxy, timeout);
            let ack = Some(topology.shards[shard].acks());
            session.block(proxy);
            Slot::Waiting(conn.send_acked(request_bytes(&req), 0, wait, ack).await)
        }
        Plan::WaitReplicas { timeout } => {
            session.block(proxy);
            wait_replicas(proxy, topology, session, &req, timeout).await
        }
        Plan::Scan => scan(proxy, session, &req).await,
        Plan::Transaction(TxCommand::Multi) => {
            session.tx = Some(Transaction::default());
            Slot::Ready(Bytes::from_static(encode::OK))
        }
        Plan::Transaction(TxCommand::Exec) => error("ERR EXEC without MULTI"),
        Plan::Transaction(TxCommand::Discard) => error("ERR DISCARD without MULTI"),
        Plan::Transaction(TxCommand::Unwatch) => {
            // Closing the pinned connection drops its watch.
            session.pinned = None;
            Slot::Ready(Bytes::from_static(encode::OK))
        }
        Plan::Watch(shard) => {
            let conn = match &session.pinned {
                Some(p) if p.shard != shard => return error(CROSSSLOT),
                Some(p) => p.conn.clone(),
                None => {
                    let conn = match topology.shards[shard]
                        .dedicated(session.proto, session.dedicated())
                    {
                        Ok(conn) => conn,
                        Err(e) => return Slot::Waiting(failed(e)),
                    };
                    session.pinned = Some(Pinned {
                        shard,
                        conn: conn.clone(),
                    });
                    conn
                }
            };
            Slot::Waiting(conn.send(request_bytes(&req)).await)
        }
        Plan::Lock(cmd) => {
            let shard = &topology.shards[cmd.shard];
            if cmd.op.writes() {
                session.touch(topology.shards.len(), cmd.shard);
            }
            Slot::Waiting(lock::dispatch(shard, session.proto, session.id, *cmd).await)
        }
        Plan::PubSub(cmd) => {
            let (proto, pushes) = (session.proto, session.pushes_tx.clone());
            session
                .subs
                .handle(cmd, req.args(), topology, proto, &pushes)
                .await
        }
    }
}

/// AUTH (or HELLO ... AUTH) answered. After a failure the connection reads nothing more, the
/// next guess included, for a delay that doubles with every failure in a row (see
/// [`exclusive`] and [`dispatch`]): the check itself waits, not just its answer, so no later
/// command of a pipeline can tell early whether a guess was right. A success with credentials
/// clears the count.
fn auth_outcome(session: &mut Session, req: &Request, reply: Bytes) -> Slot {
    let credentials = req.name().eq_ignore_ascii_case(b"auth")
        || req
            .args()
            .iter()
            .skip(2)
            .any(|a| a.eq_ignore_ascii_case(b"auth"));
    if !reply.starts_with(b"-WRONGPASS") {
        if credentials && !reply.starts_with(b"-") {
            session.auth_failures = 0;
        }
        return Slot::Ready(reply);
    }
    session.auth_failures = session.auth_failures.saturating_add(1);
    let n = session.auth_failures;
    auth_failure_log(session.entry.addr, n);
    session.auth_penalty_until = tokio::time::Instant::now() + auth_failure_delay(n);
    Slot::Ready(reply)
}

/// How long a connection waits after its `n`th failed AUTH in a row before it reads its next
/// command: 10 ms, doubling, at most 2 s. A mistyped password costs 10 ms; 10,000 guesses on one
/// connection cost over five hours.
pub fn auth_failure_delay(n: u32) -> std::time::Duration {
    let ms = 10u64.saturating_mul(1 << n.saturating_sub(1).min(16));
    std::time::Duration::from_millis(ms.min(2_000))
}

/// Logs failed AUTHs with the peer's address, within a [`LogLimit`].
fn auth_failure_log(peer: SocketAddr, in_a_row: u32) {
    static FAILED_AUTH: LogLimit = LogLimit::new();
    if let Some(unlogged) = FAILED_AUTH.pass() {
        tracing::warn!(peer = %peer, in_a_row, unlogged, "failed AUTH (answered after {} ms)", auth_failure_delay(in_a_row).as_millis());
    }
}

/// FLUSHDB / FLUSHALL as the script that keeps shardis' own keys.
fn flush_script(req: &Request) -> Bytes {
    let mut cmd = BytesMut::new();
    let head = [
        &b"EVAL"[..],
        lock::scripts::FLUSH.as_bytes(),
        b"2",
        crate::command::lock::EPOCH_KEY,
        crate::command::lock::STATE_KEY,
    ];
    let args: Vec<&[u8]> = head
        .into_iter()
        .chain(req.args().iter().map(|a| &a[..]))
        .collect();
    encode::command(&mut cmd, args.into_iter());
    cmd.freeze()
}

/// SCRIPT KILL / FUNCTION KILL, or CONFIG SET and the like: on every node of every shard.
fn every_node(
    proxy: &Proxy,
    topology: &Topology,
    session: &Session,
    req: &Request,
    merge: Merge,
) -> Slot {
    let backend = proxy.config().backend.clone();
    let kind = match merge {
        Merge::Kill => NodeCall::Kill,
        _ => NodeCall::Other,
    };
    let parts = topology
        .shards
        .iter()
        .flat_map(|shard| shard.on_every_node(req.args(), &backend, kind))
        .map(|(node, rx)| PartReply::at_node(rx, node))
        .collect();
    Slot::merging(merge, parts, session.proto)
}

/// What CONFIG GET reports from the proxy rather than the nodes, for each of
/// [`command::PROXY_ANSWERED`]: what the client talks to (port, bind, the client limits, one
/// database). Credentials are blanked by [`crate::command::is_credential`].
fn config_overrides(proxy: &Proxy) -> crate::session::merge::ConfigOverrides {
    let config = proxy.config();
    let addr = proxy.listen_addr();
    command::PROXY_ANSWERED
        .iter()
        .map(|&name| {
            let value = match name {
                "port" => addr.port().to_string(),
                "bind" => addr.ip().to_string(),
                "databases" => "1".into(),
                "maxclients" => config.client.max_clients.to_string(),
                "timeout" => config.client.idle_timeout.as_secs().to_string(),
                other => unreachable!("no proxy value for CONFIG parameter {other}"),
            };
            (name, value)
        })
        .collect()
}

fn error(msg: &str) -> Slot {
    Slot::Ready(encode::error_bytes(msg))
}

/// A request between MULTI and EXEC: queued, or EXEC / DISCARD.
async fn in_transaction(
    proxy: &Proxy,
    topology: &Topology,
    session: &mut Session,
    req: Request,
    plan: Plan,
) -> Slot {
    let max_queued = proxy.config().protocol.max_query_buffer;
    let tx = session.tx.as_mut().expect("in a transaction");
    let watched = session.pinned.as_ref().map(|p| p.shard);
    let reply = match plan {
        Plan::Transaction(TxCommand::Exec) => {
            let tx = session.tx.take().expect("in a transaction");
            // EXEC ends the watch whatever happens, as on Redis.
            let pinned = session.pinned.take();
            if tx.dirty {
                return error(EXECABORT);
            }
            let shard = tx.shard.or(watched).unwrap_or_else(|| topology.any_shard());
            let conn = match pinned {
                Some(p) => p.conn,
                None => match topology.shards[shard].writer(session.proto, session.id) {
                    Ok(conn) => conn,
                    Err(e) => return Slot::Waiting(failed(e)),
                },
            };
            session.touch(topology.shards.len(), shard);
            let (batch, skip) = tx.batch();
            let ack = Some(topology.shards[shard].acks());
            return Slot::Waiting(conn.send_acked(batch, skip, Wait::Default, ack).await);
        }
        Plan::Transaction(TxCommand::Discard) => {
            session.tx = None;
            session.pinned = None;
            Bytes::from_static(encode::OK)
        }
        Plan::Transaction(TxCommand::Multi) => {
            encode::error_bytes("ERR MULTI calls can not be nested")
        }
        Plan::Watch(_) => encode::error_bytes("ERR WATCH inside MULTI is not allowed"),
        // Blocking commands do not block inside a transaction.
        Plan::Forward(shard) | Plan::Blocking { shard, .. } => {
            tx.queue(&request_bytes(&req), Some(shard), watched, max_queued)
        }
        Plan::AnyShard
        | Plan::Local(Local::Ping | Local::Echo)
        | Plan::Transaction(TxCommand::Unwatch) => {
            tx.queue(&request_bytes(&req), None, watched, max_queued)
        }
        Plan::Error(msg) => tx.fail(&msg),
        Plan::Split { .. } => tx.fail(CROSSSLOT),
        Plan::Lock(_) => tx.fail(
            "ERR shardis does not run lock commands inside MULTI (a grant waits for its replicas)",
        ),
        _ => {
            let name = String::from_utf8_lossy(req.name()).to_ascii_lowercase();
            tx.fail(&format!(
                "ERR shardis does not support '{}' inside MULTI",
                printable(name.as_bytes(), 128)
            ))
        }
    };
    Slot::Ready(reply)
}

/// The time a blocking command may take before its connection is given up: its own timeout
/// plus the usual allowance for the node.
fn blocking_wait(proxy: &Proxy, timeout: Option<std::time::Duration>) -> Wait {
    match timeout {
        Some(t) => Wait::For(t + proxy.config().backend.timeout),
        None => Wait::Forever,
    }
}

/// WAIT: every shard this client sent writes to must have them acknowledged. Redis counts
/// acknowledgements per connection, so each shard gets, on the session's own connection, a
/// PUBLISH (which is replicated, on a channel no one needs to hear) and then the WAIT, which so
/// covers every write the client made there before; the smallest count is the answer.
async fn wait_replicas(
    proxy: &Proxy,
    topology: &Topology,
    session: &mut Session,
    req: &Request,
    timeout: Option<std::time::Duration>,
) -> Slot {
    let shards = topology.shards.len();
    let mut touched: Vec<usize> = (0..shards)
        .filter(|&s| session.touched.get(s).copied().unwrap_or(false))
        .collect();
    let marker = !touched.is_empty();
    if !marker {
        touched.push(topology.any_shard());
    }
    let wait = blocking_wait(proxy, timeout);
    let mut parts = Vec::with_capacity(touched.len());
    for shard in touched {
        let conn = match session.blocking_conn(topology, shard) {
            Ok(conn) => conn,
            Err(e) => {
                parts.push(PartReply::new(failed(e), Vec::new()));
                continue;
            }
        };
        let mut batch = BytesMut::new();
        if marker {
            let id = itoa::Buffer::new().format(session.id).to_owned();
            let args = [&b"PUBLISH"[..], b"__shardis__:wait", id.as_bytes()];
            encode::command(&mut batch, args.into_iter());
        }
        batch.extend_from_slice(&request_bytes(req));
        let rx = conn.send_with(batch.freeze(), marker as u32, wait).await;
        parts.push(PartReply::new(rx, Vec::new()));
    }
    Slot::merging(Merge::Min, parts, session.proto)
}

/// SCAN cursor [MATCH p] [COUNT n] [TYPE t]: from the shard the cursor names, going on to the
/// next shards in the same call while the shards finish with fewer than COUNT keys (10 unless
/// given), so a page spans shard boundaries; `0` comes back once the last shard is done. The
/// first step is sent here, in request order (a SCAN after a SET on the same connection sees
/// it); the steps on further shards follow when it answers.
async fn scan(proxy: &Proxy, session: &Session, req: &Request) -> Slot {
    let args = req.args();
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return error("ERR invalid cursor");
    };
    let count = args[2..]
        .chunks(2)
        .find(|w| w.len() == 2 && w[0].eq_ignore_ascii_case(b"count"))
        .and_then(|w| crate::resp::parse_i64(&w[1]))
        .filter(|&n| n > 0)
        .map_or(10, |n| n as usize);
    let topology = proxy.topology();
    let mut step = ScanStep {
        proto: session.proto,
        id: session.id,
        options: args[2..].to_vec(),
        cursors: Cursors {
            shards: topology.shards.len(),
            generation: topology.generation,
        },
        count,
    };
    let Ok((shard, cursor)) = step.cursors.decode(cursor) else {
        return error(
            "ERR invalid cursor: the shards changed since it was handed out (a reload); start the scan again from 0",
        );
    };
    let first = step.send(&topology, shard, cursor).await;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(step.collect(&topology, shard, first).await);
    });
    Slot::Waiting(rx)
}

/// One SCAN call across shards.
struct ScanStep {
    proto: Proto,
    id: u64,
    /// MATCH, COUNT, TYPE as the client gave them.
    options: Vec<Bytes>,
    cursors: Cursors,
    count: usize,
}

impl ScanStep {
    /// Sends `SCAN cursor options...` to `shard`.
    async fn send(
        &self,
        topology: &Topology,
        shard: usize,
        cursor: u64,
    ) -> oneshot::Receiver<Reply> {
        let position = itoa::Buffer::new().format(cursor).to_owned();
        let mut request = BytesMut::new();
        let all: Vec<&[u8]> = [&b"SCAN"[..], position.as_bytes()]
            .into_iter()
            .chain(self.options.iter().map(|a| &a[..]))
            .collect();
        encode::command(&mut request, all.into_iter());
        match topology.shards[shard].writer(self.proto, self.id) {
            Ok(conn) => conn.send(request.freeze()).await,
            Err(e) => failed(e),
        }
    }

    /// The client's page: `first` (the reply of `shard`), then further shards while they
    /// finish short of COUNT; at most one step per shard.
    async fn collect(
        &mut self,
        topology: &Topology,
        mut shard: usize,
        first: oneshot::Receiver<Reply>,
    ) -> Reply {
        let mut keys = Vec::new();
        let mut rx = first;
        loop {
            let frame = rx.await.unwrap_or_else(|_| {
                Err(BackendError::Lost {
                    node: Arc::from(topology.shards[shard].name.to_string()),
                    reason: "the connection task ended".into(),
                })
            })?;
            if crate::resp::reply::is_error(&frame) {
                return Ok(frame);
            }
            let Some((next, page)) = slot::scan_page(&frame) else {
                return Ok(encode::error_bytes(
                    "ERR unexpected SCAN reply from a shard",
                ));
            };
            keys.extend(page);
            let shards = self.cursors.shards;
            let cursor = if next != 0 {
                self.cursors.encode(next, shard)
            } else if shard + 1 == shards {
                Some(0)
            } else if keys.len() >= self.count {
                self.cursors.encode(0, shard + 1)
            } else {
                shard += 1;
                rx = self.send(topology, shard, 0).await;
                continue;
            };
            return Ok(match cursor {
                Some(cursor) => slot::scan_reply(cursor, &keys),
                None => encode::error_bytes(
                    "ERR shard SCAN cursor too large to combine with a shard number",
                ),
            });
        }
    }
}

/// Sends each part to its shard; the slot is ready when every part has answered.
async fn fan_out(
    topology: &Topology,
    session: &mut Session,
    merge: Merge,
    parts: Vec<Part>,
    extra: Extra,
    writes: bool,
    readonly: bool,
) -> Slot {
    let mut replies = Vec::with_capacity(parts.len());
    for part in parts {
        if writes {
            session.touch(topology.shards.len(), part.shard);
        }
        let rx = send(topology, session, part.shard, part.request, readonly).await;
        replies.push(PartReply::new(rx, part.positions));
    }
    Slot::Merging(Box::new(Merging {
        merge,
        parts: replies,
        proto: session.proto,
        extra,
    }))
}

async fn forward(
    topology: &Topology,
    session: &mut Session,
    shard: usize,
    req: &Request,
    writes: bool,
    readonly: bool,
) -> Slot {
    if writes {
        session.touch(topology.shards.len(), shard);
    }
    Slot::Waiting(send(topology, session, shard, request_bytes(req), readonly).await)
}

/// Sends one request to a shard: a read-only one to the node `read_from` picks, any other to
/// the primary, waiting for the replica acknowledgements `write_ack` asks for.
async fn send(
    topology: &Topology,
    session: &Session,
    shard: usize,
    request: Bytes,
    readonly: bool,
) -> oneshot::Receiver<Reply> {
    let shard = &topology.shards[shard];
    let (conn, ack) = if readonly {
        (shard.reader(session.proto, session.id), None)
    } else {
        (shard.writer(session.proto, session.id), Some(shard.acks()))
    };
    match conn {
        Ok(conn) => conn.send_acked(request, 0, Wait::Default, ack).await,
        Err(e) => failed(e),
    }
}

/// The request as RESP bytes: the client's own bytes when it sent RESP.
fn request_bytes(req: &Request) -> Bytes {
    match req.raw() {
        Some(raw) => raw.clone(),
        None => {
            let mut out = BytesMut::new();
            req.write_resp(&mut out);
            out.freeze()
        }
    }
}
