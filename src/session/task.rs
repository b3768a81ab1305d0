//! The session's loop. [`ClientTask::run`] settles what needs no waiting (a reload to take in,
//! replies to write, a held request to release, requests to parse and dispatch), then waits
//! for one [`Wake`] in [`ClientTask::next_event`] and hands it to its handler. Every handler
//! returns whether the session goes on.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::conn::{ClientConn, Read};
use super::dispatch::dispatch;
use super::pipeline::{runs_alone, Barrier, Counted, Pipeline, Planned};
use super::pubsub::Event;
use super::slot::Slot;
use super::state::Session;
use super::upload::{self, Begun, Pumped, Upload};
use crate::backend::Push;
use crate::command::{self, Local, Plan};
use crate::config::{ClientLimits, Config, Policy};
use crate::net::outbox::BIG;
use crate::net::socket::Socket;
use crate::proxy::clients::{Buffers, ClientEntry, LastCommand, Registration, Registry};
use crate::proxy::Proxy;
use crate::resp::RequestParser;
use crate::topology::Topology;

/// Bytes read ahead while a request runs alone, enough to see the client close.
const BARRIER_READ: usize = 64 * 1024;

/// Pushes taken in at the top of each turn of the loop, at most.
const PUSHES_PER_TURN: usize = 64;

/// Turns of the session's loop a pipeline's replies are held for, at most, while others of it
/// are on their way (see [`ClientTask::write_replies`]).
const HOLDS: u8 = 4;

/// Replies held no more once this much is out to write.
const HOLD_MAX: usize = 16 * 1024;

/// A deadline that never comes, for the idle timer when there is no idle timeout.
const IDLE_NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Serves one client until it quits, breaks the protocol or disconnects.
pub async fn serve(
    proxy: Arc<Proxy>,
    stream: impl Socket,
    peer: SocketAddr,
    laddr: SocketAddr,
    id: u64,
) {
    ClientTask::new(proxy, stream, peer, laddr, id).run().await
}

/// One client connection and everything its loop keeps.
struct ClientTask<S> {
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    conn: ClientConn<S>,
    parser: RequestParser,
    session: Session,
    pipe: Pipeline,
    limits: ClientLimits,
    /// The shards and the configuration (its policy) requests are planned with: the proxy's,
    /// as of the last reload the loop took in. Only a reload replaces them (a failover changes
    /// the topology inside), so a batch of requests takes a reference count here rather than
    /// loading them from the proxy's shared slots.
    topology: Arc<Topology>,
    config: Arc<Config>,
    /// Set after QUIT, a protocol error, EOF or shutdown: no more reading; write what is
    /// owed, then close.
    closing: bool,
    idle: IdleTimer,
    notices: Notices,
    /// A big request being passed on as its value arrives (see `upload`).
    upload: Option<Upload>,
    /// Turns of the loop the replies moved out have been held for, unwritten.
    held: u8,
    /// The connection the last one went on, kept while the client's next request is another
    /// such: dropped once it sends anything else, and closed by itself after a second with
    /// nothing to do, so that it does not keep one of the node's `max_dedicated` places long.
    kept_upload: Option<upload::Kept>,
    /// Its entry in the client registry, removed when the task ends.
    _registration: Registration,
}

/// What woke the loop.
enum Wake {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    /// The oldest owed reply is ready.
    ReplyReady,
    /// The event loop took a turn while replies were held.
    Turned,
    Push(Push),
    Heard(Notice),
    IdleTick,
}

/// What the proxy or another client tells a session, besides its requests.
enum Notice {
    /// CLIENT KILL.
    Killed,
    Shutdown,
    Reloaded,
}

/// The proxy's shutdown and reload signals and CLIENT KILL, as this session sees them: a flag
/// and two version numbers, looked at each time the loop wakes, and the entry's waker, which
/// whoever signals wakes after setting them (`ClientEntry::kill`, `Registry::wake_all`). No
/// lock and no future is polled for them on the way.
struct Notices {
    entry: Arc<ClientEntry>,
    shutdown: watch::Receiver<bool>,
    /// The reload signal as the loop has taken it in.
    reloaded: watch::Receiver<u64>,
}

impl Notices {
    /// Ready with a signal the session has not taken in yet. The waker is registered before
    /// the signals are looked at, so one set after the look wakes the session.
    fn poll_heard(&mut self, cx: &mut Context<'_>) -> Poll<Notice> {
        self.entry.signal.register(cx.waker());
        if self.entry.killed.load(Ordering::Acquire) {
            Poll::Ready(Notice::Killed)
        } else if self.shutdown.has_changed().unwrap_or(false) {
            self.shutdown.borrow_and_update();
            Poll::Ready(Notice::Shutdown)
        } else if self.reloaded.has_changed().unwrap_or(false) {
            Poll::Ready(Notice::Reloaded)
        } else {
            Poll::Pending
        }
    }

    /// Whether a reload happened since the last call.
    fn take_reload(&mut self) -> bool {
        let due = self.reloaded.has_changed().unwrap_or(false);
        if due {
            self.reloaded.borrow_and_update();
        }
        due
    }
}

/// `limits.idle_timeout`: one timer, pushed back only when it fires, so reading costs one
/// clock read rather than a timer per request.
struct IdleTimer {
    idle: Duration,
    /// The last request read or reply given: idle time counts from there, as on Redis.
    last_active: Instant,
    timer: Pin<Box<Sleep>>,
}

impl IdleTimer {
    fn new(idle: Duration) -> IdleTimer {
        IdleTimer {
            idle,
            last_active: Instant::now(),
            timer: Box::pin(tokio::time::sleep(Self::wait(idle))),
        }
    }

    fn wait(idle: Duration) -> Duration {
        if idle.is_zero() {
            IDLE_NEVER
        } else {
            idle
        }
    }

    fn enabled(&self) -> bool {
        !self.idle.is_zero()
    }

    /// A reload's timeout, taken when it differs.
    fn set(&mut self, idle: Duration) {
        if idle != self.idle {
            self.idle = idle;
            let next = Instant::now() + Self::wait(idle);
            self.timer.as_mut().reset(next);
        }
    }

    /// The timer fired: true when the client has been `quiet` for the whole timeout; else
    /// the timer is set again.
    fn expired(&mut self, quiet: bool) -> bool {
        let now = Instant::now();
        if quiet && now >= self.last_active + self.idle {
            return true;
        }
        let next = if quiet {
            self.last_active + self.idle
        } else {
            now + self.idle
        };
        self.timer.as_mut().reset(next);
        false
    }
}

impl<S: Socket> ClientTask<S> {
    fn new(
        proxy: Arc<Proxy>,
        stream: S,
        peer: SocketAddr,
        laddr: SocketAddr,
        id: u64,
    ) -> ClientTask<S> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&stream));
        let registration = Registry::register(&proxy.clients, id, peer, laddr, fd);
        // Subscribed before the configuration is read, so a reload in between is not missed.
        let reloaded = proxy.reload_notice();
        let config = proxy.config();
        let limits = config.client;
        let topology = proxy.topology();
        let mut session = Session::new(id, config.open_to_all(), registration.entry.clone());
        session.generation = topology.generation;
        let parser = RequestParser::new(config.protocol);
        let mut shutdown = proxy.shutdown_notice();
        // A session that starts after shutdown began takes no command.
        let closing = *shutdown.borrow_and_update();
        ClientTask {
            peer,
            conn: ClientConn::new(stream),
            parser,
            session,
            pipe: Pipeline::new(),
            limits,
            topology,
            config,
            closing,
            idle: IdleTimer::new(limits.idle_timeout),
            notices: Notices {
                entry: registration.entry.clone(),
                shutdown,
                reloaded,
            },
            upload: None,
            held: 0,
            kept_upload: None,
            _registration: registration,
            proxy,
        }
    }

    async fn run(mut self) {
        loop {
            self.take_reload();
            if self.take_pushes().is_break() {
                break;
            }
            if self.write_replies().is_err() {
                break;
            }
            // Each step is looked at before it is called: calling one makes its future, and
            // most turns (a reply to write, say) need none of them.
            if self.pipe.is_draining() && self.release_barrier().await {
                continue;
            }
            if self.upload.is_some() {
                self.pump_upload().await;
            }
            if !self.conn.inbuf.is_empty() {
                self.parse_and_dispatch().await;
            }
            if self.finished() {
                self.conn.close().await;
                break;
            }
            // A big request still arriving: the worker's other clients and connections get a
            // turn between its reads.
            if self.conn.inbuf.len() >= BIG {
                tokio::task::yield_now().await;
            }
            let wake = self.next_event().await;
            if self.handle(wake).is_break() {
                break;
            }
        }
        self.session.unblock(&self.proxy);
    }

    /// Waits for the next thing to do. The only `select!` of the session.
    async fn next_event(&mut self) -> Wake {
        // During a barrier the socket is still read (a little), to notice a client that
        // leaves while its BLPOP is blocked.
        let room = self.pipe.len() < self.limits.max_pipeline
            && self.conn.out.len() < self.limits.max_output_buffer;
        let can_read = !self.closing
            && room
            && (!self.pipe.is_draining() || self.conn.inbuf.len() < BARRIER_READ);
        let can_collect =
            !self.pipe.is_empty() && self.conn.out.len() < self.limits.max_output_buffer;
        let held = self.held > 0;
        let writing = !self.conn.out.is_empty() && !held;
        let closing = self.closing;
        let ClientTask {
            conn,
            pipe,
            session,
            notices,
            idle,
            ..
        } = self;
        let idle_timer = idle.enabled() && !closing;
        let may_push = session.may_push();
        // In a fixed order, which costs no random draw per wake-up: the proxy's notices (a
        // kill or shutdown is never put off by a busy client), then replies and output, then
        // input, then pushes. Replies owed are bounded by `max_pipeline`, and output is
        // written at the top of the loop, so neither keeps input from its turn for long. A
        // client that keeps sending can keep its socket readable at every turn, though, so
        // pushes are not left to this branch alone: each turn takes some in at its top
        // (`take_pushes`), and the branch only wakes a session that has nothing else to do.
        tokio::select! {
            biased;
            notice = std::future::poll_fn(|cx| notices.poll_heard(cx)) => Wake::Heard(notice),
            () = std::future::poll_fn(|cx| pipe.poll_front(&mut session.arrivals, cx)), if can_collect => Wake::ReplyReady,
            ready = std::future::poll_fn(|cx| conn.stream.poll_write_ready(cx)), if writing => Wake::Writable(ready),
            ready = std::future::poll_fn(|cx| conn.stream.poll_read_ready(cx)), if can_read => Wake::Readable(ready),
            Some(push) = session.pushes.recv(), if may_push => Wake::Push(push),
            // As on Redis, a client waiting for replies, blocked or subscribed is not idle.
            () = idle.timer.as_mut(), if idle_timer => Wake::IdleTick,
            // After every other task the worker has ready, and its next look for events.
            () = tokio::task::yield_now(), if held => Wake::Turned,
        }
    }

    fn handle(&mut self, wake: Wake) -> ControlFlow<()> {
        match wake {
            Wake::Readable(ready) => self.on_readable(ready),
            // Writing happens at the top of the loop; a broken socket ends the session.
            Wake::Writable(Err(_)) => ControlFlow::Break(()),
            Wake::Writable(Ok(())) => ControlFlow::Continue(()),
            // Moved out at the top of the loop.
            Wake::ReplyReady => ControlFlow::Continue(()),
            // Held once more, or written, at the top of the loop.
            Wake::Turned => ControlFlow::Continue(()),
            Wake::Push(push) => self.on_push(push),
            Wake::Heard(Notice::Killed) => {
                self.log("closed by CLIENT KILL");
                ControlFlow::Break(())
            }
            // Shutting down: read nothing more, answer what was read, then close.
            Wake::Heard(Notice::Shutdown) => {
                self.closing = true;
                ControlFlow::Continue(())
            }
            // Taken in at the top of the loop.
            Wake::Heard(Notice::Reloaded) => ControlFlow::Continue(()),
            Wake::IdleTick => self.on_idle_tick(),
        }
    }

    /// An info line naming the client.
    fn log(&self, why: &str) {
        tracing::info!(peer = %self.peer, client = self.session.id, "{why}");
    }

    /// After a reload: new limits, and per-shard state the new shards invalidate dropped.
    fn take_reload(&mut self) {
        if !self.notices.take_reload() {
            return;
        }
        self.config = self.proxy.config();
        self.topology = self.proxy.topology();
        let generation = self.topology.generation;
        if generation != self.session.generation {
            // Shard positions and nodes changed under it: what it holds on them (and a
            // request planned on the old ring) cannot be carried over. It gets the replies
            // it is owed, then the connection closes, so that its library reconnects and
            // subscribes or retries again.
            if self.session.holds_shard_state() || self.pipe.holds() {
                self.log("closing: a reload changed the shards its transaction, WATCH, blocking connections or subscriptions were on");
                self.pipe.drop_held();
                self.closing = true;
            }
            self.session.generation = generation;
            self.session.touched.clear();
            self.kept_upload = None;
        }
        self.limits = self.config.client;
        self.idle.set(self.limits.idle_timeout);
    }

    /// Moves the ready replies at the front of the pipeline out, and writes what the socket
    /// takes. An error means the socket broke.
    ///
    /// A pipeline's replies come from each node it went to in turn. Those out while others of
    /// it are still on their way are held for up to [`HOLDS`] turns of this loop, each of which
    /// ends when a reply comes or once the worker has run its other ready tasks and looked for
    /// events again, so that the replies that come meanwhile go out in the same write: fewer
    /// system calls for the proxy, and fewer reads for the client. A reply that takes longer
    /// (a slow script, another shard's blocked command) holds none of them back for more.
    fn write_replies(&mut self) -> io::Result<()> {
        let max = self.limits.max_output_buffer;
        let telemetry = &self.proxy.telemetry;
        let arrivals = &mut self.session.arrivals;
        match self
            .pipe
            .move_ready(telemetry, arrivals, &mut self.conn.out, max)
        {
            Ok(Some(at)) => self.idle.last_active = Instant::from_std(at),
            Ok(None) => {}
            Err(e) => {
                self.log(&format!("closed: a reply broke off midway ({e})"));
                // What came of the reply goes out, as far as the socket takes it now; the
                // client sees the connection close before the reply is complete.
                let _ = self.conn.flush(telemetry);
                return Err(io::Error::other(e));
            }
        }
        let out = self.conn.out.len();
        let more_coming = !self.pipe.is_empty() && !self.closing;
        if more_coming && out > 0 && out < HOLD_MAX && self.held < HOLDS {
            self.held += 1;
            return Ok(());
        }
        self.held = 0;
        self.conn.flush(telemetry)
    }

    /// Once every reply owed before a request that runs alone is out: opens the barrier, or
    /// dispatches the request it held (which runs alone, so the barrier closes behind it).
    /// True when it dispatched one.
    async fn release_barrier(&mut self) -> bool {
        if !self.pipe.is_draining() || !self.pipe.is_empty() {
            return false;
        }
        let held = match std::mem::replace(&mut self.pipe.barrier, Barrier::Open) {
            Barrier::Draining { held } => held,
            Barrier::Open => None,
        };
        self.session.unblock(&self.proxy);
        let Some(held) = held else {
            return false;
        };
        let (req, planned) = *held;
        let topology = self.topology.clone();
        let counted = Counted::of(&planned);
        self.kept_upload = None;
        self.session.may_move = true;
        let slot = dispatch(&self.proxy, &topology, &mut self.session, req, planned).await;
        self.owe(slot, counted);
        self.pipe.barrier = Barrier::Draining { held: None };
        true
    }

    /// Parses what has arrived, up to the pipeline limit, and dispatches each request; the
    /// rest waits in the buffer and is parsed once replies drain, before the socket is read
    /// again. This comes before waiting, so commands already buffered never wait for more
    /// input.
    async fn parse_and_dispatch(&mut self) {
        if !self.can_dispatch() || self.conn.inbuf.is_empty() {
            return;
        }
        let topology = self.topology.clone();
        let config = self.config.clone();
        let policy = &config.policy;
        let mut last: Option<LastCommand> = None;
        // Requests read together share one start time (one clock read per batch).
        let since = std::time::Instant::now();
        while self.can_dispatch() {
            match self.parser.next(&mut self.conn.inbuf) {
                Ok(Some(req)) => {
                    let (plan, flags, cmd) =
                        command::plan_and_flags(&req, &topology.router, policy);
                    let planned = Planned {
                        plan,
                        flags,
                        cmd,
                        since,
                    };
                    let this = LastCommand::of(req.args());
                    if self.must_wait(&planned, &this) {
                        let held = Some(Box::new((req, planned)));
                        self.pipe.barrier = Barrier::Draining { held };
                        continue;
                    }
                    let counted = Counted::of(&planned);
                    self.kept_upload = None;
                    self.session.may_move = self.pipe.is_empty();
                    let slot =
                        dispatch(&self.proxy, &topology, &mut self.session, req, planned).await;
                    self.owe(slot, counted);
                    last = Some(this);
                    // Work done counts against the task's cooperative budget, as a read does:
                    // a client that keeps a deep pipeline full (PINGs the proxy answers itself)
                    // would otherwise keep its worker from its other clients, and from the
                    // event loop, for as long as it sends.
                    tokio::task::consume_budget().await;
                }
                Ok(None) => break,
                Err(e) => {
                    self.log(&format!("protocol error: {e}"));
                    self.pipe.push_uncounted(Slot::error(&format!("ERR {e}")));
                    self.closing = true;
                }
            }
        }
        if self.pipe.is_empty() && self.can_dispatch() {
            self.begin_upload(&topology, policy, since).await;
        }
        self.conn.parsed();
        if last.is_some() {
            self.session.report(last, since, self.buffers());
        }
    }

    /// The request at the front lacks only a big last value, and nothing is owed before it:
    /// it is passed on as the value arrives, if it is one to pass on (see `upload`). Nothing
    /// after it goes out before its reply is in.
    async fn begin_upload(
        &mut self,
        topology: &Topology,
        policy: &Policy,
        since: std::time::Instant,
    ) {
        let Some(unfinished) = self.parser.unfinished(&self.conn.inbuf, upload::MIN) else {
            return;
        };
        let session = &mut self.session;
        let kept = &mut self.kept_upload;
        let begun = upload::begin(
            &self.proxy,
            topology,
            policy,
            session,
            &unfinished,
            since,
            kept,
        );
        let Some(Begun {
            mut upload,
            counted,
            last,
        }) = begun
        else {
            return;
        };
        self.session.report(Some(last), since, self.buffers());
        self.owe(Slot::Ticket(upload.number()), counted);
        self.pipe.barrier = Barrier::Draining { held: None };
        let head = self.parser.hand_over(&mut self.conn.inbuf);
        match upload.send_head(head).await {
            Pumped::Failed(why) => self.upload_failed(&why),
            Pumped::Malformed(why) => {
                self.pipe.uncount(upload.number());
                self.upload_failed(&why);
            }
            Pumped::More | Pumped::Done => {
                self.upload = Some(upload);
                self.pump_upload().await;
            }
        }
    }

    /// Passes on what has arrived of the value being uploaded.
    async fn pump_upload(&mut self) {
        if self.closing {
            // Leaving before the value is all there: the node's connection closes, and the
            // node drops the half command.
            if let Some(upload) = self.upload.take() {
                upload.abandon();
            }
            return;
        }
        let Some(upload) = self.upload.as_mut() else {
            return;
        };
        match upload.pump(&mut self.conn.inbuf).await {
            Pumped::More => {}
            Pumped::Done => self.kept_upload = self.upload.take().map(Upload::keep),
            Pumped::Failed(why) => {
                self.upload = None;
                self.upload_failed(&why);
            }
            Pumped::Malformed(why) => {
                if let Some(upload) = self.upload.take() {
                    self.pipe.uncount(upload.number());
                }
                self.upload_failed(&why);
            }
        }
        self.conn.parsed();
    }

    /// The rest of the client's input would be read as commands: the reply says what failed,
    /// then the connection closes.
    fn upload_failed(&mut self, why: &str) {
        self.log(&format!(
            "closing: a big request could not be passed on ({why})"
        ));
        self.closing = true;
    }

    fn can_dispatch(&self) -> bool {
        !self.closing && !self.pipe.is_draining() && self.pipe.len() < self.limits.max_pipeline
    }

    /// Whether a planned request must wait for the replies owed before it is dispatched,
    /// because it runs alone (the caller holds it then). `this` is what CLIENT LIST shows as
    /// its `cmd`.
    fn must_wait(&mut self, planned: &Planned, this: &LastCommand) -> bool {
        if matches!(
            planned.plan,
            Plan::Local(Local::ClientList | Local::ClientInfo)
        ) {
            self.session
                .report(Some(this.clone()), planned.since, self.buffers());
        }
        if !runs_alone(&planned.plan, &self.session) {
            return false;
        }
        if self.pipe.is_empty() {
            self.pipe.barrier = Barrier::Draining { held: None };
            return false;
        }
        true
    }

    /// Queues the reply to a dispatched request.
    fn owe(&mut self, slot: Slot, counted: Counted) {
        self.pipe.push(slot, counted);
        if self.session.close_after_reply {
            self.closing = true;
        }
    }

    /// Nothing more to read, write or wait for.
    fn finished(&self) -> bool {
        self.closing && self.pipe.is_empty() && self.conn.out.is_empty() && !self.pipe.holds()
    }

    fn buffers(&self) -> Buffers {
        self.conn
            .buffers(self.pipe.len(), self.pipe.message_bytes())
    }

    fn on_readable(&mut self, ready: io::Result<()>) -> ControlFlow<()> {
        if ready.is_err() {
            return ControlFlow::Break(());
        }
        match self.conn.read(&self.proxy.telemetry) {
            // Gone while a request runs alone (a blocked pop, say): nobody is left to
            // answer, and dropping its connection ends what it left blocked.
            Ok(Read::Closed) if self.pipe.is_draining() => return ControlFlow::Break(()),
            Ok(Read::Closed) => {
                self.closing = true;
                self.conn.peer_closed();
            }
            Ok(Read::Data) if self.idle.enabled() => self.idle.last_active = Instant::now(),
            Ok(Read::Data | Read::Nothing) => {}
            Err(_) => return ControlFlow::Break(()),
        }
        ControlFlow::Continue(())
    }

    /// Takes in the pushes waiting, up to [`PUSHES_PER_TURN`], whatever woke the loop: a
    /// subscriber's messages reach it while it keeps sending commands, and a flood of messages
    /// does not keep its commands from being read either. Only while a dedicated connection
    /// can still push: what is left after the last one has gone is taken by the loop's push
    /// branch, and no flood can follow it.
    fn take_pushes(&mut self) -> ControlFlow<()> {
        if self.session.pushes_tx.strong_count() <= 1 {
            return ControlFlow::Continue(());
        }
        for _ in 0..PUSHES_PER_TURN {
            match self.session.pushes.try_recv() {
                Ok(push) => self.on_push(push)?,
                Err(_) => break,
            }
        }
        ControlFlow::Continue(())
    }

    fn on_push(&mut self, push: Push) -> ControlFlow<()> {
        match self.session.subs.on_push(push) {
            Event::None => ControlFlow::Continue(()),
            Event::Message(frame) => self.on_message(frame),
            Event::Lost(reason) => {
                self.log(&format!(
                    "subscriber closed: a shard's subscription connection was lost: {reason}"
                ));
                ControlFlow::Break(())
            }
        }
    }

    /// A pub/sub message. Behind a pending subscription confirmation it waits its turn;
    /// otherwise it goes out at once, between whole replies (RESP3 pushes may come between
    /// any two replies, also while a BLPOP is blocked).
    fn on_message(&mut self, frame: Bytes) -> ControlFlow<()> {
        let queued = self.pipe.front_is_gated();
        let waiting = self.pipe.message_bytes() + if queued { frame.len() } else { 0 };
        let limit = self.limits.max_output_buffer;
        if waiting + self.conn.out.len() + frame.len() > limit {
            tracing::warn!(
                peer = %self.peer,
                client = self.session.id,
                limit,
                "subscriber closed: its unread messages passed max_output_buffer"
            );
            return ControlFlow::Break(());
        }
        if queued {
            self.pipe.push_message(frame);
        } else {
            self.conn.out.put(&frame);
        }
        ControlFlow::Continue(())
    }

    fn on_idle_tick(&mut self) -> ControlFlow<()> {
        // A client that stops in the middle of a big request it uploads is idle too.
        let owes = !self.pipe.is_empty() && self.upload.is_none();
        let quiet = !owes && !self.pipe.holds() && !self.session.subs.active();
        if self.idle.expired(quiet) {
            let idle = self.idle.idle;
            self.log(&format!("closed: idle for {idle:?} (limits.idle_timeout)"));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}
