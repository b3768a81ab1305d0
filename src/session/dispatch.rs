//! What happens to one parsed request, in phases: the delay after a failed AUTH, then [`admit`]
//! (authentication, the user's permissions, subscriber mode), then, inside MULTI,
//! [`in_transaction`] queues it; else [`dispatch`] carries it out with the [`Call`] method for
//! its kind of [`Plan`]. Each returns the [`Slot`] its reply will fill.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use super::pipeline::Planned;
use super::pubsub;
use super::send::{
    blocking_wait, config_overrides, every_node, fan_out, flush_script, forward, request_bytes,
    wait_replicas,
};
use super::slot::{Extra, Slot};
use super::state::Session;
use super::transaction::{Pinned, Transaction, EXECABORT};
use crate::backend::Wait;
use crate::command::lock::LockCommand;
use crate::command::spec::flags::{READONLY, WRITE};
use crate::command::{
    printable, CommandId, Local, Merge, Part, Plan, PubSubCommand, TxCommand, CROSSSLOT,
};
use crate::config::ReplicationMode;
use crate::lock;
use crate::proxy::Proxy;
use crate::resp::{encode, Proto, Request};
use crate::session::local::info;
use crate::telemetry::LogLimit;
use crate::topology::{failed, Topology};

const SUBSCRIBER_MODE: &str =
    "only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context";

/// Carries out one planned request; returns the slot its reply will fill.
pub(super) async fn dispatch(
    proxy: &Proxy,
    topology: &Topology,
    session: &mut Session,
    req: Request,
    planned: Planned,
) -> Slot {
    let Planned {
        plan, flags, cmd, ..
    } = planned;
    // The delay after a failed AUTH: this command is not looked at before it has passed.
    if session.auth_failures > 0 {
        tokio::time::sleep_until(session.auth_penalty_until).await;
    }
    // Counted in `total_commands_processed` as Redis counts: a command that runs, not one
    // refused before it (not authenticated, not permitted, unknown, wrong arity, refused by
    // the proxy), and a queued one when EXEC runs it.
    if let Err(refused) = admit(session, &req, &plan, cmd, flags) {
        return refused;
    }
    if session.tx.is_some() && !matches!(plan, Plan::Local(Local::Quit | Local::Reset)) {
        return in_transaction(proxy, topology, session, req, plan).await;
    }
    // INFO counts itself once its own figures are taken (see `broadcast`), so that, as on
    // Redis, the reading it shows does not count it.
    if !matches!(plan, Plan::Error(_) | Plan::Broadcast(Merge::Info)) {
        proxy.telemetry.count_processed(1);
    }
    let writes = flags & WRITE != 0;
    let call = Call {
        proxy,
        topology,
        session,
        req: &req,
        cmd,
        writes,
        // Declared read-only by Redis: may go to a replica (`read_from`), and needs no replica
        // acknowledgement (`write_ack`); every other command is treated as a write for both.
        readonly: flags & READONLY != 0 && !writes,
    };
    // The rarer plans' futures are boxed, so that every request's future is not as large as
    // the largest of theirs (it is moved, whole, at each await it passes through).
    match plan {
        Plan::Forward(shard) => call.forward(shard).await,
        Plan::AnyShard => {
            let shard = topology.any_shard();
            call.forward(shard).await
        }
        Plan::Split { merge, parts } => call.fan_out(merge, parts, Extra::None).await,
        Plan::Local(local) => call.local(local),
        Plan::Error(msg) => Slot::error(&msg),
        Plan::Transaction(tx) => call.transaction(tx),
        Plan::Broadcast(merge) => Box::pin(call.broadcast(merge)).await,
        Plan::Blocking { shard, timeout } => Box::pin(call.blocking(shard, timeout)).await,
        Plan::WaitReplicas { timeout } => Box::pin(call.wait_replicas(timeout)).await,
        Plan::Scan => Box::pin(super::scan::scan(proxy, call.session, &req)).await,
        Plan::Watch(shard) => Box::pin(call.watch(shard)).await,
        Plan::Lock(cmd) => Box::pin(call.lock(*cmd)).await,
        Plan::PubSub(cmd) => Box::pin(call.pubsub(cmd)).await,
    }
}

/// Whether this session may run the request at all: `Err` holds the refusal. Checked before
/// the request is queued in a transaction or sent anywhere.
pub(super) fn admit(
    session: &Session,
    req: &Request,
    plan: &Plan,
    cmd: CommandId,
    flags: u32,
) -> Result<(), Slot> {
    if !session.authenticated {
        let allowed = matches!(
            plan,
            Plan::Error(_) | Plan::Local(Local::Auth | Local::Hello | Local::Quit | Local::Reset)
        );
        if !allowed {
            return Err(Slot::Ready(Bytes::from_static(
                b"-NOAUTH Authentication required.\r\n",
            )));
        }
    }
    // A user's role and key prefixes.
    if let (Some(user), false) = (&session.user, matches!(plan, Plan::Error(_))) {
        if let Err(msg) = user.check(req.args(), cmd, flags) {
            return Err(Slot::error(&msg));
        }
    }
    if session.subs.active() {
        return subscriber_mode(session.proto, req, plan);
    }
    Ok(())
}

/// What a subscribed client may still run: in RESP2 only the subscription commands, PING,
/// QUIT and RESET, as on Redis; in RESP3 anything but HELLO.
fn subscriber_mode(proto: Proto, req: &Request, plan: &Plan) -> Result<(), Slot> {
    match (plan, proto) {
        (Plan::Error(_) | Plan::PubSub(_) | Plan::Local(Local::Quit | Local::Reset), _) => Ok(()),
        (Plan::Local(Local::Ping), Proto::Resp2) => Err(Slot::Ready(pubsub::subscriber_pong(
            req.args().get(1).map(|a| &a[..]),
        ))),
        (Plan::Local(Local::Hello), _) => Err(Slot::error(
            "ERR shardis does not support HELLO while subscribed: UNSUBSCRIBE first",
        )),
        (_, Proto::Resp2) => {
            let name = String::from_utf8_lossy(req.name()).to_ascii_lowercase();
            Err(Slot::error(&format!(
                "ERR Can't execute '{}': {SUBSCRIBER_MODE}",
                printable(name.as_bytes(), 128)
            )))
        }
        _ => Ok(()),
    }
}

/// One admitted request being carried out, with what every kind of plan needs.
struct Call<'a> {
    proxy: &'a Proxy,
    topology: &'a Topology,
    session: &'a mut Session,
    req: &'a Request,
    cmd: CommandId,
    /// Redis flags it a write: WAIT asks the shards it went to.
    writes: bool,
    /// Declared read-only by Redis: may go to a replica, needs no replica acknowledgement.
    readonly: bool,
}

impl<'a> Call<'a> {
    // `forward` and `fan_out` return the send's own future rather than wrap it in another
    // (an `async fn` here would add a layer, moved whole, to every GET and SET).

    /// To one shard.
    fn forward(self, shard: usize) -> impl std::future::Future<Output = Slot> + 'a {
        let (writes, readonly) = (self.writes, self.readonly);
        forward(
            self.topology,
            self.session,
            shard,
            self.req,
            writes,
            readonly,
        )
    }

    /// To several shards, with the replies merged by `merge`.
    fn fan_out(
        self,
        merge: Merge,
        parts: Vec<Part>,
        extra: Extra,
    ) -> impl std::future::Future<Output = Slot> + 'a {
        let (writes, readonly) = (self.writes, self.readonly);
        fan_out(
            self.topology,
            self.session,
            merge,
            parts,
            extra,
            writes,
            readonly,
        )
    }

    /// WAIT, on every shard this session wrote to.
    async fn wait_replicas(self, timeout: Option<std::time::Duration>) -> Slot {
        self.session.block(self.proxy);
        wait_replicas(self.proxy, self.topology, self.session, self.req, timeout).await
    }

    /// To every shard's primary (or every node), with the replies merged by `merge`.
    async fn broadcast(self, merge: Merge) -> Slot {
        let script = |body: &str| {
            let mut cmd = BytesMut::new();
            encode::command(
                &mut cmd,
                [&b"EVAL_RO"[..], body.as_bytes(), b"0"].into_iter(),
            );
            cmd.freeze()
        };
        let (proxy, topology, req) = (self.proxy, self.topology, self.req);
        let (request, extra) = match merge {
            // The fleet's figures, with the keyspace counted without shardis' own keys.
            Merge::Info => {
                let info = info::Request::new(proxy, topology, req);
                proxy.telemetry.count_processed(1);
                (script(lock::scripts::INFO_FLEET), Extra::Info(info))
            }
            Merge::ConfigGet => (request_bytes(req), Extra::Config(config_overrides(proxy))),
            Merge::DbSize => (script(lock::scripts::DBSIZE), Extra::None),
            Merge::RandomKey => (script(lock::scripts::RANDOMKEY), Extra::None),
            Merge::Flush => (flush_script(req), Extra::None),
            // To each node on a connection of its own, waiting for no replica.
            Merge::Kill | Merge::EveryNode | Merge::FunctionStats => {
                // The nodes reset their figures; the proxy resets its own with them.
                if self.cmd.name() == "config|resetstat" {
                    proxy.reset_stats();
                }
                return every_node(proxy, topology, self.session, req, merge);
            }
            _ => (request_bytes(req), Extra::None),
        };
        let parts = (0..topology.shards.len())
            .map(|shard| Part {
                shard,
                request: request.clone(),
                positions: Vec::new(),
            })
            .collect();
        self.fan_out(merge, parts, extra).await
    }

    /// A command the proxy answers itself.
    fn local(self, local: Local) -> Slot {
        let session = self.session;
        if local == Local::Hello && session.pinned.is_some() {
            return Slot::error(
                "ERR shardis does not support HELLO while keys are watched: UNWATCH first",
            );
        }
        if local == Local::Reset {
            session.reset_state();
        }
        let proto = session.proto;
        let reply = crate::session::local::answer(self.proxy, session, local, self.req);
        if session.proto != proto {
            // Its own connections speak the old protocol.
            session.blocking.clear();
        }
        if local == Local::Quit {
            session.close_after_reply = true;
        }
        if matches!(local, Local::Auth | Local::Hello) {
            return auth_outcome(session, self.req, reply);
        }
        Slot::Ready(reply)
    }

    /// BLPOP and the like, on the session's own connection to the shard.
    async fn blocking(self, shard: usize, timeout: Option<std::time::Duration>) -> Slot {
        let (topology, session) = (self.topology, self.session);
        if topology.shards[shard].config.replication == ReplicationMode::Mirror {
            return Slot::error("ERR shardis does not run blocking commands on a mirror-replicated shard (its copies could block the replicas)");
        }
        let conn = match session.blocking_conn(topology, shard) {
            Ok(conn) => conn,
            Err(e) => return Slot::Waiting(failed(e)),
        };
        session.touch(topology.shards.len(), shard);
        let wait = blocking_wait(self.proxy, timeout);
        let ack = Some(topology.shards[shard].acks());
        session.block(self.proxy);
        Slot::Waiting(conn.send_acked(request_bytes(self.req), 0, wait, ack).await)
    }

    /// MULTI, UNWATCH, and EXEC or DISCARD outside a transaction.
    fn transaction(self, tx: TxCommand) -> Slot {
        match tx {
            TxCommand::Multi => {
                self.session.tx = Some(Transaction::default());
                Slot::Ready(Bytes::from_static(encode::OK))
            }
            TxCommand::Exec => Slot::error("ERR EXEC without MULTI"),
            TxCommand::Discard => Slot::error("ERR DISCARD without MULTI"),
            TxCommand::Unwatch => {
                // Closing the pinned connection drops its watch.
                self.session.pinned = None;
                Slot::Ready(Bytes::from_static(encode::OK))
            }
        }
    }

    /// WATCH, on a connection of the session's own that the transaction will run on.
    async fn watch(self, shard: usize) -> Slot {
        let session = self.session;
        let conn = match &session.pinned {
            Some(p) if p.shard != shard => return Slot::error(CROSSSLOT),
            Some(p) => p.conn.clone(),
            None => {
                let dedicated = session.dedicated();
                let conn = match self.topology.shards[shard].dedicated(session.proto, dedicated) {
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
        Slot::Waiting(conn.send(request_bytes(self.req)).await)
    }

    async fn lock(self, cmd: LockCommand) -> Slot {
        let topology = self.topology;
        if cmd.op.writes() {
            self.session.touch(topology.shards.len(), cmd.shard);
        }
        let shard = &topology.shards[cmd.shard];
        Slot::Waiting(lock::dispatch(shard, self.session.proto, self.session.lane, cmd).await)
    }

    async fn pubsub(self, cmd: PubSubCommand) -> Slot {
        let session = self.session;
        let (proto, pushes) = (session.proto, session.pushes_tx.clone());
        session
            .subs
            .handle(cmd, self.req.args(), self.topology, proto, &pushes)
            .await
    }
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
            proxy.telemetry.count_processed(1);
            if tx.dirty {
                return Slot::error(EXECABORT);
            }
            // The queued commands run now (unless a WATCHed key changed: they are counted
            // then too, where Redis does not count them).
            proxy.telemetry.count_processed(u64::from(tx.len()));
            let shard = tx.shard.or(watched).unwrap_or_else(|| topology.any_shard());
            let conn = match pinned {
                Some(p) => p.conn,
                None => match topology.shards[shard].writer(session.proto, session.lane) {
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
            proxy.telemetry.count_processed(1);
            session.tx = None;
            session.pinned = None;
            Bytes::from_static(encode::OK)
        }
        // Not queued: they run, and fail, as on Redis.
        Plan::Transaction(TxCommand::Multi) => {
            proxy.telemetry.count_processed(1);
            encode::error_bytes("ERR MULTI calls can not be nested")
        }
        Plan::Watch(_) => {
            proxy.telemetry.count_processed(1);
            encode::error_bytes("ERR WATCH inside MULTI is not allowed")
        }
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

/// AUTH (or HELLO ... AUTH) answered. After a failure the connection reads nothing more, the
/// next guess included, for a delay that doubles with every failure in a row (see
/// [`runs_alone`](super::pipeline::runs_alone) and [`dispatch`]): the check itself waits, not just its answer, so no later
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
