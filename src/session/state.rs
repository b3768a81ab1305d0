//! What one connection's commands change and later commands see: the protocol, the user, the
//! name, a transaction, a WATCH, subscriptions, the connections of its own.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::pubsub::Subscriptions;
use super::transaction::{Pinned, Transaction};
use crate::backend::{Arrivals, BackendError, Dedicated, NodeConn, NodeState, Push};
use crate::proxy::clients::{Buffers, ClientEntry, LastCommand};
use crate::proxy::Proxy;
use crate::resp::{Proto, Value};
use crate::topology::Topology;

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
    pub(super) auth_failures: u32,
    /// When the last failed AUTH is answered; the next one's delay starts there.
    pub(super) auth_penalty_until: tokio::time::Instant,
    /// The topology generation its per-shard state (below) was made under.
    pub(super) generation: u64,
    /// This session in the proxy's client registry.
    pub entry: Arc<ClientEntry>,
    /// Set by a CLIENT KILL of this very session: it closes after the reply.
    pub close_after_reply: bool,
    /// Commands queued since MULTI.
    pub(super) tx: Option<Transaction>,
    /// The connection holding this session's WATCH.
    pub(super) pinned: Option<Pinned>,
    /// Per shard: a connection of this session's own for blocking commands and WAIT.
    pub(super) blocking: Vec<Option<NodeConn>>,
    /// Per shard: whether this session sent it anything (WAIT asks those shards).
    pub(super) touched: Vec<bool>,
    pub(super) subs: Subscriptions,
    /// Frames the session's dedicated connections push (pub/sub messages).
    pub(super) pushes_tx: mpsc::UnboundedSender<Push>,
    pub(super) pushes: mpsc::UnboundedReceiver<Push>,
    /// Waiting in a blocking command or WAIT: counted in INFO's `blocked_clients` until its
    /// reply is out.
    pub(super) blocked: bool,
    /// Picks its shared connection to each node (the connection `lane` modulo their number);
    /// starts at the first. It changes only while no reply is owed, so requests in flight keep
    /// their connection and their order.
    pub(super) lane: u64,
    /// No reply is owed: the next request may take another lane, the first connection not in
    /// the middle of a big reply (see `send::pick`).
    pub(super) may_move: bool,
    /// Where replies to requests forwarded to one shard arrive.
    pub(super) arrivals: Arrivals,
}

/// The tag of dedicated connections that carry no subscription (subscriber connections are
/// tagged with their shard).
const NOT_SUBSCRIBER: usize = usize::MAX;

impl Session {
    pub(super) fn new(id: u64, authenticated: bool, entry: Arc<ClientEntry>) -> Session {
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
            lane: 0,
            may_move: false,
            arrivals: Arrivals::default(),
        }
    }

    /// Counts the session as blocked (a blocking command or WAIT dispatched).
    pub(super) fn block(&mut self, proxy: &Proxy) {
        if !self.blocked {
            self.blocked = true;
            proxy.stats.blocked.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn unblock(&mut self, proxy: &Proxy) {
        if self.blocked {
            self.blocked = false;
            proxy.stats.blocked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn reply(&self, value: Value) -> Bytes {
        value.to_bytes(self.proto)
    }

    /// Forgets every piece of server-side state (RESET): transaction, WATCH, subscriptions.
    pub(super) fn reset_state(&mut self) {
        self.tx = None;
        self.pinned = None;
        self.blocking.clear();
        self.touched.clear();
        self.subs.close();
    }

    /// Whether a push can arrive: one is queued, or a dedicated connection holds a sender.
    /// Only the session makes those, so while this is false the loop need not wait on the
    /// channel, which costs a look at the task's budget each time round.
    pub(super) fn may_push(&self) -> bool {
        !self.pushes.is_empty() || self.pushes_tx.strong_count() > 1
    }

    pub(super) fn dedicated(&self) -> Dedicated {
        Dedicated {
            push: self.pushes_tx.clone(),
            tag: NOT_SUBSCRIBER,
            subscriber: false,
        }
    }

    /// This session's own connection to `shard`, for commands that may block.
    pub(super) fn blocking_conn(
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

    /// Refreshes what CLIENT LIST shows for this session; `last` is the last request, read at
    /// `at` (its idle time counts from there, as Redis counts from the last read).
    pub fn report(&self, last: Option<LastCommand>, at: std::time::Instant, mut io: Buffers) {
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
                s.last_active = at;
            }
        });
    }

    /// Whether it holds state tied to shard positions or nodes: a transaction, a WATCH,
    /// blocking connections, subscriptions.
    pub(super) fn holds_shard_state(&self) -> bool {
        self.tx.is_some()
            || self.pinned.is_some()
            || self.blocking.iter().any(Option::is_some)
            || self.subs.active()
    }

    pub(super) fn touch(&mut self, shards: usize, shard: usize) {
        if self.touched.len() != shards {
            self.touched.resize(shards, false);
        }
        self.touched[shard] = true;
    }
}
