//! Shards and their nodes, as the data path sees them.
//!
//! A [`Topology`] is built from a [`Config`]: the ring and one [`Shard`] per ring member. A
//! shard's place on the ring never changes; which of its nodes is the primary does. That part,
//! a [`View`], is an immutable snapshot swapped whole (arc-swap) by the shard's monitor on a
//! failover, so sessions read it per request without taking a lock.
//!
//! ```text
//!             ring position (fixed by the shard's name)
//!                          |
//!                    Shard 'a' --- monitor task: PING + INFO replication every interval,
//!                          |       promotes a replica when the primary is down (or follows
//!                          |       Sentinel), records the epoch
//!                    View (epoch 3)
//!            /             |              \
//!     primary node    replica node    replica node
//!     (writes, and     (reads with read_from = replica, when within max_lag)
//!      reads by default)
//! ```

mod link;
mod monitor;
mod reload;
mod sentinel;
mod state;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::{oneshot, Notify};

use crate::backend::{
    BackendError, Mirror, NodeConn, NodePool, NodeSettings, NodeState, Parking, Reply,
};
use crate::config::{Config, ReadFrom, ReplicationMode, ShardConfig, WriteAck};
use crate::resp::Proto;
use crate::routing::Router;

pub use reload::Reloaded;
pub use state::StateFile;

/// A node's role as it last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    Unknown = 0,
    Primary = 1,
    Replica = 2,
}

/// What the monitor last learnt about a node; read by INFO and by read routing.
#[derive(Debug, Default)]
pub struct Health {
    up: AtomicBool,
    /// How it answers while up: 0 normally, 1 with errors (BUSY, LOADING), 2 late (suspect).
    manner: AtomicU8,
    readable: AtomicBool,
    role: AtomicU8,
    /// Replication offset (the primary's own, or how far a replica got).
    offset: AtomicI64,
    lag_ms: AtomicU64,
    /// What its last failed check said (`connect: Connection refused (os error 111)`) when it
    /// was marked down: requests refused for it say so, as twemproxy passes the system's words
    /// on. Read only when down.
    down_why: Mutex<Option<Arc<str>>>,
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// `up`, `busy` (answering BUSY or LOADING), `suspect` (silent or refusing, not for long
    /// enough to be down) or `down`.
    pub fn describe(&self) -> &'static str {
        if !self.is_up() {
            return "down";
        }
        match self.manner.load(Ordering::Relaxed) {
            1 => "busy",
            2 => "suspect",
            _ => "up",
        }
    }

    /// A replica that may serve reads: up, following the current primary, within the lag limit.
    pub fn is_readable(&self) -> bool {
        self.readable.load(Ordering::Relaxed)
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Primary,
            2 => Role::Replica,
            _ => Role::Unknown,
        }
    }

    pub fn offset(&self) -> i64 {
        self.offset.load(Ordering::Relaxed)
    }

    pub fn lag_ms(&self) -> u64 {
        self.lag_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Why it was marked down, as its last failed check said.
    pub fn down_why(&self) -> Option<Arc<str>> {
        self.down_why
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_down_why(&self, why: Option<&str>) {
        *self.down_why.lock().unwrap_or_else(|e| e.into_inner()) = why.map(Arc::from);
    }
}

/// Why a shard is not serving as it should, as its monitor last judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Problem {
    None = 0,
    /// More than one node answers as primary.
    TwoPrimaries = 1,
    /// No node answers as primary (the nodes follow each other, or one that is gone).
    NoPrimary = 2,
    /// The primary is down and no replica was in sync with it: the shard waits for it.
    NoReplicaInSync = 3,
    /// The primary does not answer this proxy, but its replicas still hear from it: it is not
    /// replaced.
    PrimaryUnreachable = 4,
    /// The primary is down and the shard has no replica.
    PrimaryDown = 5,
    /// The primary is down and no epoch is left to start (only after a forged record, or 2^22
    /// failovers): promoting under an old epoch could repeat tokens.
    EpochsExhausted = 6,
}

impl Problem {
    fn from_u8(v: u8) -> Problem {
        match v {
            1 => Problem::TwoPrimaries,
            2 => Problem::NoPrimary,
            3 => Problem::NoReplicaInSync,
            4 => Problem::PrimaryUnreachable,
            5 => Problem::PrimaryDown,
            6 => Problem::EpochsExhausted,
            _ => Problem::None,
        }
    }

    /// The name INFO and the metrics give it.
    pub fn code(self) -> &'static str {
        match self {
            Problem::None => "none",
            Problem::TwoPrimaries => "two_primaries",
            Problem::NoPrimary => "no_primary",
            Problem::NoReplicaInSync => "no_replica_in_sync",
            Problem::PrimaryUnreachable => "primary_unreachable",
            Problem::PrimaryDown => "primary_down",
            Problem::EpochsExhausted => "epochs_exhausted",
        }
    }

    /// The nodes disagree about who is primary.
    pub fn is_conflict(self) -> bool {
        matches!(self, Problem::TwoPrimaries | Problem::NoPrimary)
    }
}

/// One Redis node: its data connections and what the health checks say about it.
pub struct Node {
    pub addr: String,
    pub pool: NodePool,
    pub health: Health,
}

/// Which of a shard's nodes does what, at one epoch.
pub struct View {
    /// Grows on every failover; durable across restarts (state file, and a key on the primary).
    pub epoch: u64,
    pub primary: Arc<Node>,
    pub replicas: Vec<Arc<Node>>,
}

/// A node of a shard's view as loaded now, held without a reference count of its own: for a
/// request queued on one of the node's connections before its task waits for anything (a
/// reference count per request is a write every worker makes to the same node; the view is
/// held as `arc_swap` holds a loaded value, in the loading thread's own slot). `Arc::clone`
/// of it keeps the node for longer.
pub struct NodeNow {
    view: arc_swap::Guard<Arc<View>>,
    /// 0: the primary; `i + 1`: replica `i`.
    at: usize,
}

impl std::ops::Deref for NodeNow {
    type Target = Arc<Node>;

    fn deref(&self) -> &Arc<Node> {
        match self.at {
            0 => &self.view.primary,
            i => &self.view.replicas[i - 1],
        }
    }
}

impl View {
    /// The shard's nodes: the primary first, then the replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }
}

/// What a shard's locks did, for INFO.
#[derive(Debug, Default)]
pub struct LockStats {
    pub grants: AtomicU64,
    /// Grant refused because another owner holds the lock.
    pub contended: AtomicU64,
    /// Grant refused during the freeze after a failover, or while the primary's epoch record
    /// differs from the proxy's.
    pub frozen: AtomicU64,
    /// Grant undone because the replicas did not confirm it in time.
    pub not_replicated: AtomicU64,
    /// FENCED or FENCE.ADVANCE refused with STALETOKEN.
    pub stale: AtomicU64,
}

/// One shard: its place on the ring, its nodes and its replication settings.
pub struct Shard {
    pub name: Arc<str>,
    pub config: ShardConfig,
    view: ArcSwap<View>,
    /// Every node this shard has used, by address, so a node keeps its connections when it
    /// changes role.
    nodes: Mutex<Vec<Arc<Node>>>,
    failovers: AtomicU64,
    /// Sentinel mode: how much longer than shardis's own failover bound requests may stay
    /// parked (Sentinel's down-after-milliseconds plus its election).
    pub(crate) park_extra_ms: AtomicU64,
    /// Wakes the monitor early: a data connection saw a failure.
    pub(crate) alarm: Arc<Notify>,
    /// Requests waiting for a primary during a failover.
    pub(crate) parking: Arc<Parking>,
    /// Mirror mode: the copier of writes to the replicas.
    pub(crate) mirror: Option<Arc<Mirror>>,
    ack_timeout: std::time::Duration,
    /// Unix time in ms until which no lock is granted (the freeze after a failover).
    locks_frozen_until_ms: AtomicU64,
    /// An epoch a reload asked the shard to move to (0: none); the monitor moves it.
    pub(crate) epoch_floor: AtomicU64,
    pub lock_stats: LockStats,
    /// What keeps the shard from serving as it should ([`Problem`]), set by the monitor.
    problem: AtomicU8,
    /// True once the checks have said which node is primary (see [`Shard::confirm`]); until
    /// then the shard takes no request.
    confirmed: AtomicBool,
    /// The same, for those waiting for it, sent at the end of the round that confirmed it.
    confirmed_tx: tokio::sync::watch::Sender<bool>,
    /// SCRIPT KILL / FUNCTION KILL in flight (each opens connections of its own).
    kills: Arc<tokio::sync::Semaphore>,
    /// The other commands sent to every node (CONFIG SET, SLOWLOG RESET, FUNCTION STATS ...),
    /// apart from the kills, so that polling them can never keep a kill from being sent.
    node_calls: Arc<tokio::sync::Semaphore>,
}

/// Commands to every node a shard runs at once, of each kind (kills, others); more get an
/// error at once.
const KILLS_IN_FLIGHT: usize = 4;

/// What a command sent to every node is for: which in-flight limit it counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeCall {
    Kill,
    Other,
}

impl Shard {
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    pub fn problem(&self) -> Problem {
        Problem::from_u8(self.problem.load(Ordering::Relaxed))
    }

    pub(crate) fn set_problem(&self, problem: Problem) {
        self.problem.store(problem as u8, Ordering::Relaxed);
    }

    /// INFO's word for the shard: `up`, `down`, `connecting`, or `conflict` while its nodes
    /// disagree about who is primary.
    pub fn state(&self) -> &'static str {
        if self.problem().is_conflict() {
            return "conflict";
        }
        let view = self.view.load();
        match (view.primary.health.is_up(), view.primary.pool.state()) {
            (false, _) | (true, NodeState::Down) => "down",
            (true, NodeState::Up) => "up",
            (true, NodeState::Connecting) => "connecting",
        }
    }

    /// Why the shard cannot serve requests now, or `None` when it can: its checks have
    /// confirmed its primary, the primary is up, the proxy has not lost every data connection
    /// to it, and it answers as a primary. Two nodes answering as primary do not count: the
    /// shard serves from the one it follows while the other is made a replica.
    pub fn unready(&self) -> Option<String> {
        if !self.is_confirmed() {
            return Some("its nodes have not yet all answered which of them is primary".into());
        }
        let view = self.view.load();
        let primary = &view.primary.addr;
        let problem = self.problem();
        if !view.primary.health.is_up() {
            return Some(match problem {
                Problem::None => format!("primary {primary} is down"),
                p => format!("primary {primary} is down (problem={})", p.code()),
            });
        }
        if problem == Problem::NoPrimary {
            return Some(format!(
                "primary {primary} answers as a replica (problem=no_primary)"
            ));
        }
        if view.primary.pool.state() == NodeState::Down {
            return Some(format!("no data connection to primary {primary} is up"));
        }
        None
    }

    /// The checks have said which node is primary: the shard serves from now on.
    pub(crate) fn confirm(&self) {
        self.confirmed.store(true, Ordering::Release);
    }

    /// Tells those waiting for the shard ([`Topology::discovered`]) that it serves, once it
    /// does; the monitor calls this at the end of a round, when replicas' readability and the
    /// epoch record are settled too.
    pub(crate) fn announce(&self) {
        if self.is_confirmed() {
            self.confirmed_tx
                .send_if_modified(|c| !std::mem::replace(c, true));
        }
    }

    pub fn is_confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }

    /// Waits until the shard is confirmed.
    async fn confirmed(&self) {
        let mut rx = self.confirmed_tx.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// How much longer the shard grants no lock, if it is in the freeze after a failover.
    pub fn lock_freeze_left(&self) -> Option<std::time::Duration> {
        let until = self.locks_frozen_until_ms.load(Ordering::Relaxed);
        let now = unix_ms();
        (until > now).then(|| std::time::Duration::from_millis(until - now))
    }

    /// Replicas a lock grant waits for: those following the primary with their link up and
    /// within the lag limit (redis mode; one in a full resync could not acknowledge it), or in
    /// sync (mirror mode).
    pub fn healthy_replicas(&self) -> u8 {
        let n = match &self.mirror {
            Some(m) => m.in_sync(),
            None => {
                let view = self.view.load();
                view.replicas
                    .iter()
                    .filter(|n| n.health.is_readable())
                    .count()
            }
        };
        n.min(u8::MAX as usize) as u8
    }

    /// Records a new epoch for the shard, with `primary` as its primary, durably (state file)
    /// before returning, and starts the lock freeze: no lease granted under an older epoch may
    /// still run when the shard grants again.
    pub(crate) fn begin_epoch(
        &self,
        state: &StateFile,
        epoch: u64,
        primary: &str,
        freeze: std::time::Duration,
    ) -> Result<(), String> {
        let until = unix_ms() + freeze.as_millis() as u64;
        // Frozen first: even if the record cannot be written, nothing is granted meanwhile.
        self.locks_frozen_until_ms
            .fetch_max(until, Ordering::Relaxed);
        let record = state::ShardState {
            epoch,
            primary: primary.to_string(),
            locks_frozen_until_ms: until,
        };
        state.set(&self.name, record)
    }

    /// Writes `epoch` as the epoch key on `node`, through its data connection, so it is
    /// replicated (or, in mirror mode, copied) in order with the writes.
    pub(crate) async fn record_epoch(&self, node: &Node, epoch: u64) -> Result<(), String> {
        let mut cmd = bytes::BytesMut::new();
        let epoch = epoch.to_string();
        crate::resp::encode::command(
            &mut cmd,
            [
                &b"SET"[..],
                crate::command::lock::EPOCH_KEY,
                epoch.as_bytes(),
            ]
            .into_iter(),
        );
        let conn = node.pool.conn(Proto::Resp2, 0).clone();
        let rx = conn
            .send_acked(cmd.freeze(), 0, crate::backend::Wait::Default, Some(0))
            .await;
        match rx.await {
            Ok(Ok(frame)) if !crate::resp::reply::is_error(&frame) => Ok(()),
            Ok(Ok(frame)) => Err(String::from_utf8_lossy(&frame).trim_end().to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the connection went away".into()),
        }
    }

    /// Replicas that must acknowledge a write before it is answered.
    pub fn acks(&self) -> u8 {
        match self.config.write_ack {
            WriteAck::Primary => 0,
            WriteAck::Replicas(n) => n,
        }
    }

    /// The connection a client's writes (and its reads, by default) use: the current primary's.
    /// Fails at once when the health checks hold the primary down.
    pub fn writer(&self, proto: Proto, client_id: u64) -> Result<NodeConn, BackendError> {
        Ok(self.primary_now()?.pool.conn(proto, client_id).clone())
    }

    /// The current primary, unless the health checks hold it down: the node
    /// [`writer`](Self::writer) takes a connection of.
    pub fn up_primary(&self) -> Result<Arc<Node>, BackendError> {
        self.primary_now().map(|node| Arc::clone(&node))
    }

    /// [`Shard::up_primary`], borrowed from the view as loaded now (see [`NodeNow`]).
    pub fn primary_now(&self) -> Result<NodeNow, BackendError> {
        self.check_confirmed()?;
        let view = self.view.load();
        if !view.primary.health.is_up() {
            let addr = &view.primary.addr;
            return Err(self.unavailable(match view.primary.health.down_why() {
                Some(why) => format!("primary {addr} is down: {why}"),
                None => format!("primary {addr} is down"),
            }));
        }
        Ok(NodeNow { view, at: 0 })
    }

    /// The node a client's read-only commands go to, by `read_from`; the client's lane picks
    /// among readable replicas. A client keeps the same replica while the set of readable
    /// replicas stays the same, so its reads do not go back in time by hopping between replicas.
    pub fn read_node(&self, client_id: u64) -> Result<NodeNow, BackendError> {
        if self.config.read_from == ReadFrom::Primary {
            return self.primary_now();
        }
        self.check_confirmed()?;
        let view = self.view.load();
        let readable = || {
            let replicas = view.replicas.iter().enumerate();
            replicas
                .filter(|(_, n)| n.health.is_readable())
                .map(|(i, _)| i)
        };
        // Counted, then picked (without a list made per request). Should a replica's health
        // change between the two looks and the pick miss, the first readable one.
        let count = readable().count() as u64;
        let picked = match count {
            0 => None,
            n => readable()
                .nth((client_id % n) as usize)
                .or_else(|| readable().next()),
        };
        if let Some(i) = picked {
            return Ok(NodeNow { view, at: i + 1 });
        }
        match self.config.read_from {
            ReadFrom::Replica => Err(self.unavailable(format!(
                "no replica is readable (up, following {} and within the lag limit)",
                view.primary.addr
            ))),
            _ => self.primary_now(),
        }
    }

    /// A connection for one session alone on the current primary.
    pub fn dedicated(
        &self,
        proto: Proto,
        dedicated: crate::backend::Dedicated,
    ) -> Result<NodeConn, BackendError> {
        self.up_primary()?.pool.dedicated(proto, dedicated)
    }

    /// Sends `command` (SCRIPT KILL, FUNCTION KILL; CONFIG SET and the other commands for
    /// every node) to every node of the shard, each on a connection of its own made for it: a
    /// shared connection may be queued behind the very script to stop (Redis reads nothing
    /// more from the client whose script runs), and a read-only script may run on a replica.
    /// Neither the health checks nor the shard's confirmation hold it back: a node busy in a
    /// script answers nothing else, and a node that is down is named in the reply. One
    /// receiver per node, with the node's name.
    pub fn on_every_node(
        &self,
        command: &[bytes::Bytes],
        backend: &crate::config::BackendSettings,
        kind: NodeCall,
    ) -> Vec<(Arc<str>, oneshot::Receiver<Reply>)> {
        let view = self.view();
        let nodes: Vec<Arc<Node>> = std::iter::once(view.primary.clone())
            .chain(view.replicas.iter().cloned())
            .collect();
        let permits = match kind {
            NodeCall::Kill => &self.kills,
            NodeCall::Other => &self.node_calls,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let label: Arc<str> = Arc::from(format!("shard '{}'", self.name));
            return vec![(
                label,
                failed(self.unavailable(format!(
                    "{KILLS_IN_FLIGHT} commands to every node are already in flight on it"
                ))),
            )];
        };
        let permit = Arc::new(permit);
        nodes
            .into_iter()
            .map(|node| {
                let (tx, rx) = oneshot::channel();
                let backend = backend.clone();
                let command = command.to_vec();
                let label: Arc<str> =
                    Arc::from(format!("shard '{}' node {}", self.name, node.addr));
                let permit = permit.clone();
                let node_label = label.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tx.send(call_on(&node.addr, &command, &backend, label).await);
                });
                (node_label, rx)
            })
            .collect()
    }

    /// Fails while the checks have not yet said which node is primary: serving from the
    /// config file's guess could write to a node a failover made a replica, or one about to be.
    fn check_confirmed(&self) -> Result<(), BackendError> {
        if self.is_confirmed() {
            return Ok(());
        }
        Err(self.unavailable(
            "its nodes have not yet all answered which of them is primary".to_string(),
        ))
    }

    fn unavailable(&self, reason: String) -> BackendError {
        BackendError::ShardDown {
            shard: self.name.clone(),
            reason,
        }
    }

    /// The node at `addr`, created (and connecting) on first use.
    fn node(&self, addr: &str, backend: &crate::config::BackendSettings) -> Arc<Node> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = nodes.iter().find(|n| n.addr == addr) {
            return n.clone();
        }
        let node = new_node(&self.name, addr, backend, self.wiring(), None);
        nodes.push(node.clone());
        node
    }

    fn wiring(&self) -> Wiring {
        Wiring {
            alarm: self.alarm.clone(),
            parking: self.parking.clone(),
            ack_timeout: self.ack_timeout,
            mirror: self.mirror.clone(),
        }
    }
}

/// Starts one shard: its nodes' connections and its monitor(s). `carried` names the epoch,
/// primary and lock freeze to start from (the state file's record, or the shard a reload
/// replaces); a carried primary that is not one of the shard's nodes is ignored. `serving`:
/// the shard takes requests before its nodes have confirmed its primary (a shard a reload
/// rebuilds or adds, see the README); a shard of one node, or one Sentinel names, always does.
fn build_shard(
    s: &ShardConfig,
    config: &Config,
    state: &Arc<StateFile>,
    carried: Option<Carried>,
    serving: bool,
) -> (Arc<Shard>, Vec<tokio::task::AbortHandle>) {
    let members: Vec<&String> = s.nodes().collect();
    let primary_addr = match carried.as_ref().and_then(|c| c.primary.as_ref()) {
        Some(p) if members.contains(&p) => p.clone(),
        _ => s.primary.clone(),
    };
    // One node is its own primary; Sentinel names the primary (until it answers, the
    // configured one is used).
    let serving = serving || members.len() == 1 || s.sentinel.is_some();
    let alarm = Arc::new(Notify::new());
    let parking = Arc::new(Parking::default());
    let mirror = (s.replication == ReplicationMode::Mirror)
        .then(|| Arc::new(Mirror::new(Arc::from(s.name.as_str()), config.ack_timeout)));
    let wiring = || Wiring {
        alarm: alarm.clone(),
        parking: parking.clone(),
        ack_timeout: config.ack_timeout,
        mirror: mirror.clone(),
    };
    let nodes: Vec<Arc<Node>> = std::iter::once(&primary_addr)
        .chain(members.into_iter().filter(|a| **a != primary_addr))
        .map(|a| {
            let stats = carried
                .as_ref()
                .and_then(|c| c.node_stats.get(a.as_str()).cloned());
            new_node(&s.name, a, &config.backend, wiring(), stats)
        })
        .collect();
    // Requests park during a failover only where there is something to fail over to.
    if nodes.len() > 1 || s.sentinel.is_some() {
        parking.accept_from(Some(Arc::from(primary_addr.as_str())));
    }
    if let Some(m) = &mirror {
        m.set_source(&primary_addr);
        for replica in &nodes[1..] {
            m.add_target(&replica.addr, replica.pool.conn(Proto::Resp2, 0).clone());
        }
    }
    // Until the first checks say otherwise, every node is taken to be up (the shard takes no
    // request before they have spoken, see `Shard::confirm`).
    for n in &nodes {
        n.health.up.store(true, Ordering::Relaxed);
    }
    let view = View {
        epoch: carried.as_ref().map_or(0, |c| c.epoch),
        primary: nodes[0].clone(),
        replicas: nodes[1..].to_vec(),
    };
    let lock_stats = LockStats::default();
    if let Some(c) = &carried {
        let l = &lock_stats;
        for (counter, v) in [
            &l.grants,
            &l.contended,
            &l.frozen,
            &l.not_replicated,
            &l.stale,
        ]
        .into_iter()
        .zip(c.lock_stats)
        {
            counter.store(v, Ordering::Relaxed);
        }
    }
    let shard = Arc::new(Shard {
        name: Arc::from(s.name.as_str()),
        config: s.clone(),
        view: ArcSwap::from_pointee(view),
        nodes: Mutex::new(nodes),
        failovers: AtomicU64::new(carried.as_ref().map_or(0, |c| c.failovers)),
        park_extra_ms: AtomicU64::new(0),
        alarm,
        parking,
        mirror,
        ack_timeout: config.ack_timeout,
        locks_frozen_until_ms: AtomicU64::new(
            carried.as_ref().map_or(0, |c| c.locks_frozen_until_ms),
        ),
        epoch_floor: AtomicU64::new(carried.as_ref().map_or(0, |c| c.epoch_floor)),
        lock_stats,
        problem: AtomicU8::new(0),
        confirmed: AtomicBool::new(serving),
        confirmed_tx: tokio::sync::watch::channel(false).0,
        kills: tokio::sync::Semaphore::new(KILLS_IN_FLIGHT).into(),
        node_calls: tokio::sync::Semaphore::new(KILLS_IN_FLIGHT).into(),
    });
    let mut monitors = vec![monitor::spawn(shard.clone(), config.clone(), state.clone())];
    if s.sentinel.is_some() {
        monitors.push(sentinel::spawn(
            shard.clone(),
            config.clone(),
            state.clone(),
        ));
    }
    (shard, monitors)
}

/// What every node connection of a shard shares with the shard.
struct Wiring {
    alarm: Arc<Notify>,
    parking: Arc<Parking>,
    ack_timeout: std::time::Duration,
    mirror: Option<Arc<Mirror>>,
}

/// `stats`: the counters of the node this one replaces in a reload, so they keep counting.
fn new_node(
    shard: &str,
    addr: &str,
    backend: &crate::config::BackendSettings,
    wiring: Wiring,
    stats: Option<Arc<crate::backend::NodeStats>>,
) -> Arc<Node> {
    let mut backend = backend.clone();
    if wiring.mirror.is_some() {
        // One connection per protocol: copies then follow the order the primary ran them in.
        backend.connections = 1;
    }
    Arc::new(Node {
        addr: addr.to_string(),
        pool: NodePool::start(NodeSettings {
            addr: addr.to_string(),
            label: Arc::from(format!("shard '{shard}' node {addr}")),
            backend,
            alarm: Some(wiring.alarm),
            parking: Some(wiring.parking),
            ack_timeout: wiring.ack_timeout,
            mirror: wiring.mirror,
            stats: stats.unwrap_or_default(),
            gate: Default::default(),
            wake: Default::default(),
            dedicated_open: Default::default(),
        }),
        health: Health::default(),
    })
}

/// Milliseconds since the Unix epoch (the lock freeze is kept in wall-clock time, so it
/// survives a restart through the state file).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One command on a connection opened for it (SCRIPT KILL, CONFIG SET, FUNCTION STATS ...);
/// Redis's reply, as RESP2.
async fn call_on(
    addr: &str,
    command: &[bytes::Bytes],
    backend: &crate::config::BackendSettings,
    label: Arc<str>,
) -> Reply {
    let args: Vec<&[u8]> = command.iter().map(|a| &a[..]).collect();
    let reply = async {
        let mut link = link::Link::open(addr, backend.connect_timeout, backend).await?;
        link.set_timeout(backend.timeout);
        link.call(&args).await
    };
    match reply.await {
        Ok(frame) => {
            let mut out = bytes::BytesMut::new();
            match redis_protocol::resp2::encode::extend_encode(
                &mut out,
                &frame.into_bytes_frame(),
                false,
            ) {
                Ok(_) => Ok(out.freeze()),
                Err(e) => Ok(crate::resp::encode::error_bytes(&format!(
                    "ERR unexpected reply: {e}"
                ))),
            }
        }
        Err(e) => Err(BackendError::Unavailable {
            node: label,
            reason: e.to_string(),
        }),
    }
}

/// A reply receiver that already holds `error`: a request that failed before it was sent.
pub fn failed(error: BackendError) -> oneshot::Receiver<Reply> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(Err(error));
    rx
}

pub struct Topology {
    pub router: Router,
    /// Grows when a reload changes the shards or the ring: sessions holding per-shard state
    /// (subscriptions, a WATCH, a transaction, blocking connections) from an older one close.
    pub generation: u64,
    pub shards: Vec<Arc<Shard>>,
    /// Each shard's monitor tasks, by shard index. Stopped when the topology is dropped,
    /// unless a reload took them over for the shards it kept.
    monitors: Mutex<Vec<Vec<tokio::task::AbortHandle>>>,
    state: Arc<StateFile>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let monitors = self.monitors.get_mut().unwrap_or_else(|e| e.into_inner());
        for m in monitors.iter().flatten() {
            m.abort();
        }
    }
}

/// What a shard rebuilt by a reload keeps from the shard it replaces.
struct Carried {
    epoch: u64,
    primary: Option<String>,
    locks_frozen_until_ms: u64,
    failovers: u64,
    lock_stats: [u64; 5],
    /// An epoch a reload asked for that the monitor had not applied yet.
    epoch_floor: u64,
    /// The nodes' request counters, by address.
    node_stats: std::collections::HashMap<String, Arc<crate::backend::NodeStats>>,
}

impl Carried {
    /// What the state file recorded for the shard, if anything.
    fn recorded(state: &StateFile, s: &ShardConfig) -> Option<Carried> {
        state.get(&s.name).map(|r| Carried {
            epoch: r.epoch,
            primary: s.sentinel.is_none().then_some(r.primary),
            locks_frozen_until_ms: r.locks_frozen_until_ms,
            failovers: 0,
            lock_stats: [0; 5],
            epoch_floor: 0,
            node_stats: Default::default(),
        })
    }

    fn from(shard: &Shard) -> Carried {
        let view = shard.view();
        let l = &shard.lock_stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Carried {
            epoch: view.epoch,
            primary: Some(view.primary.addr.clone()),
            locks_frozen_until_ms: n(&shard.locks_frozen_until_ms),
            failovers: shard.failovers(),
            epoch_floor: shard.epoch_floor.load(Ordering::Relaxed),
            node_stats: shard
                .nodes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|n| (n.addr.clone(), n.pool.stats_shared()))
                .collect(),
            lock_stats: [
                n(&l.grants),
                n(&l.contended),
                n(&l.frozen),
                n(&l.not_replicated),
                n(&l.stale),
            ],
        }
    }
}

impl Topology {
    /// Builds the ring, starts connecting to every node and starts each shard's monitor.
    /// The state file, when configured, names each shard's current primary and epoch; a
    /// recorded primary that is no longer one of the shard's nodes is ignored. Needs a tokio
    /// runtime.
    pub fn start(config: &Config) -> Result<Topology, String> {
        let state = Arc::new(StateFile::open(config.state_file.clone())?);
        let (shards, monitors) = config
            .shards
            .iter()
            .map(|s| build_shard(s, config, &state, Carried::recorded(&state, s), false))
            .unzip();
        Ok(Topology {
            router: config.router(),
            generation: 0,
            shards,
            monitors: Mutex::new(monitors),
            state,
        })
    }

    /// Waits until every shard's checks have said which node is primary and which replicas
    /// are readable, or `bound` has passed; false if it had to stop waiting.
    pub async fn discovered(&self, bound: std::time::Duration) -> bool {
        let all = async {
            for s in &self.shards {
                s.confirmed().await;
            }
        };
        tokio::time::timeout(bound, all).await.is_ok()
    }

    /// A shard to send a keyless command to: the first whose primary is up, else the first.
    pub fn any_shard(&self) -> usize {
        self.shards
            .iter()
            .position(|s| {
                let view = s.view.load();
                view.primary.health.is_up() && view.primary.pool.state() == NodeState::Up
            })
            .unwrap_or(0)
    }
}
