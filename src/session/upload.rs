//! A big request passed on to its node as it arrives, rather than gathered whole first.
//!
//! When the command at the front of a client's input lacks only the payload of its last
//! argument, that payload is [`MIN`] bytes or more, and nothing is owed to the client, one of
//! the writes whose last argument is a value ([`VALUE_LAST`]: SET k v, HSET k f v, RPUSH k v
//! ...) goes to its shard's primary on a connection of its own: the command's head first, then
//! the payload in the pieces it is read in, then its CRLF, with the ticket its reply comes back
//! under. What decides where the command goes and whether it may run (the command, its keys,
//! the user's permissions) is all in the head, and is planned and checked as any request is.
//!
//! - **A connection of its own.** On a shared one, every other client's requests would wait
//!   while this client sends at its own pace; and a client that leaves midway would leave the
//!   node half a command. Its own connection is closed instead, and the node drops what it
//!   had of the command, having run nothing.
//! - **Order.** Nothing is owed before it, and nothing after it is sent before its reply is in
//!   (the session's barrier), so the client's commands run in the order it sent them, though
//!   this one took another connection.
//! - **Memory.** Pieces go into a short queue ([`crate::backend::NodePool::upload`]), and the
//!   connection takes no more while a MiB waits to be written: while the node is slow, the
//!   session waits and reads nothing more, so the client is held back, not buffered.
//! - **Time.** The reply's timeout starts once the last byte is queued. A node that takes no
//!   piece for `backend.timeout` fails the request; the client's connection then closes, since
//!   the rest of its payload would be read as commands.
//! - **`write_ack`.** The WAIT for the replicas follows the command on its connection, as on
//!   a shared one, so the reply is held until they have it.
//! - **Gathered as before:** anything but such a write forwarded to one shard; transactions,
//!   subscribers and sessions holding a dedicated connection; mirror shards (the copy to the
//!   replicas needs the whole request); a payload that has all arrived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::dispatch::admit;
use super::pipeline::{Counted, Planned};
use super::state::Session;
use crate::backend::{BackendError, NodeConn, NodeState, ReplyTo, Ticket};
use crate::command::spec::flags::{READONLY, WRITE};
use crate::command::{self, Plan};
use crate::config::{Policy, ReplicationMode};
use crate::proxy::clients::LastCommand;
use crate::proxy::Proxy;
use crate::resp::{Proto, Unfinished};
use crate::topology::{Node, Topology};

/// The smallest payload passed on as it arrives. Below it, a connection of its own would cost
/// more than gathering the value does.
pub(super) const MIN: usize = 1 << 20;

/// The writes passed on as they arrive, with their argument count: their last argument is a
/// value, and nothing after the keys decides where they go or whether they may run.
const VALUE_LAST: &[(&str, usize)] = &[
    ("set", 3),
    ("setnx", 3),
    ("getset", 3),
    ("append", 3),
    ("setex", 4),
    ("psetex", 4),
    ("lpush", 3),
    ("rpush", 3),
    ("lpushx", 3),
    ("rpushx", 3),
    ("sadd", 3),
    ("hset", 4),
    ("hsetnx", 4),
];

/// A big request being passed on.
pub(super) struct Upload {
    conn: NodeConn,
    /// Payload bytes still to pass on.
    left: usize,
    /// Bytes of the CRLF after the payload read so far.
    crlf: usize,
    /// Sent with the CRLF, the last piece.
    ticket: Option<Ticket>,
    /// The ticket's number: the reply the client is owed for it.
    number: u64,
    node: Arc<Node>,
    proto: Proto,
    timeout: Duration,
    /// Replicas that must acknowledge it (`write_ack`): its reply waits for a WAIT sent
    /// after it on the same connection.
    ack: u8,
}

/// An upload's connection, kept once its request is passed on, for the session's next upload
/// to the same node in the same protocol if nothing else comes between: a client that uploads
/// many values in a row does not open a connection for each, nor leave a closed one behind
/// each time (a socket in TIME_WAIT on the proxy's side for a minute).
pub(super) struct Kept {
    node: Arc<Node>,
    proto: Proto,
    conn: NodeConn,
}

/// Where an upload stands after taking what was read.
pub(super) enum Pumped {
    /// It waits for more of the payload.
    More,
    /// All of it is queued, the reply's ticket with its last piece.
    Done,
    /// It failed; the reply says why, and the client's connection must close.
    Failed(String),
    /// The bytes after the value were not its CRLF: a protocol error, the client's, which
    /// counts under no command (as a small request's does); the connection must close.
    Malformed(String),
}

/// An upload begun: the connection has the command's head, and the client is owed the
/// reply under the upload's [`number`](Upload::number).
pub(super) struct Begun {
    pub(super) upload: Upload,
    pub(super) counted: Counted,
    pub(super) last: LastCommand,
}

/// Begins passing `unfinished` on, if it is a request to pass on: the caller then sends its
/// head ([`Upload::send_head`]) and pumps the payload through ([`Upload::pump`]). `None`: it
/// is gathered as any request. `kept`: the connection of the session's last upload.
pub(super) fn begin(
    proxy: &Proxy,
    topology: &Topology,
    policy: &Policy,
    session: &mut Session,
    unfinished: &Unfinished,
    since: Instant,
    kept: &mut Option<Kept>,
) -> Option<Begun> {
    let argc = unfinished.head.len() + 1;
    let name = unfinished.head.first()?;
    let listed = VALUE_LAST
        .iter()
        .any(|&(n, count)| count == argc && name.eq_ignore_ascii_case(n.as_bytes()));
    if !listed || session.holds_shard_state() || session.auth_failures > 0 {
        return None;
    }
    // Planned and checked on the head with an empty value: the value takes no part in either.
    let mut args = unfinished.head.clone();
    args.push(Bytes::new());
    let (plan, flags, cmd) = command::plan_args(&args, &topology.router, policy);
    let Plan::Forward(shard) = plan else {
        return None;
    };
    let request = crate::resp::Request::from_args(args);
    let write = flags & WRITE != 0 && flags & READONLY == 0;
    if !write || admit(session, &request, &plan, cmd, flags).is_err() {
        return None;
    }
    let target = &topology.shards[shard];
    if target.config.replication == ReplicationMode::Mirror {
        return None;
    }
    let node = target.up_primary().ok()?;
    let proto = session.proto;
    let conn = match kept.take() {
        Some(k)
            if Arc::ptr_eq(&k.node, &node)
                && k.proto == proto
                && k.conn.state() != NodeState::Down =>
        {
            k.conn
        }
        _ => node.pool.upload(proto, session.dedicated()).ok()?,
    };
    proxy.telemetry.count_processed(1);
    session.touch(topology.shards.len(), shard);
    let (number, ticket) = session.arrivals.issue();
    let planned = Planned {
        plan,
        flags,
        cmd,
        since,
    };
    Some(Begun {
        upload: Upload {
            conn,
            left: unfinished.len,
            crlf: 0,
            ticket: Some(ticket),
            number,
            node,
            proto,
            timeout: proxy.config().backend.timeout,
            ack: target.acks(),
        },
        counted: Counted::of(&planned),
        last: LastCommand::of(request.args()),
    })
}

impl Upload {
    /// The number of the reply the client is owed for it.
    pub(super) fn number(&self) -> u64 {
        self.number
    }

    /// Sends the command's head, taken off the client's input
    /// ([`crate::resp::RequestParser::hand_over`]).
    pub(super) async fn send_head(&mut self, head: Bytes) -> Pumped {
        match self.conn.send_within(head, None, 0, self.timeout).await {
            Ok(()) => Pumped::More,
            Err(_) => self.fail(self.timed_out()),
        }
    }

    /// Passes on what `inbuf` holds of the payload and its CRLF, waiting while the node's
    /// connection has no room for it.
    pub(super) async fn pump(&mut self, inbuf: &mut BytesMut) -> Pumped {
        while self.left > 0 && !inbuf.is_empty() {
            let piece = inbuf.split_to(self.left.min(inbuf.len())).freeze();
            self.left -= piece.len();
            if self
                .conn
                .send_within(piece, None, 0, self.timeout)
                .await
                .is_err()
            {
                return self.fail(self.timed_out());
            }
        }
        while self.left == 0 && self.crlf < 2 {
            let Some(&byte) = inbuf.first() else {
                return Pumped::More;
            };
            if byte != b"\r\n"[self.crlf] {
                let e = crate::resp::ProtocolError::MissingCrlf;
                if let Some(ticket) = self.ticket.take() {
                    ReplyTo::Inbox(ticket).send(Ok(Bytes::from(format!("-ERR {e}\r\n"))));
                }
                return Pumped::Malformed(e.to_string());
            }
            inbuf.advance(1);
            self.crlf += 1;
        }
        if self.crlf < 2 {
            return Pumped::More;
        }
        let Some(ticket) = self.ticket.take() else {
            return Pumped::Done;
        };
        match self
            .conn
            .send_within(
                Bytes::from_static(b"\r\n"),
                Some(ticket),
                self.ack,
                self.timeout,
            )
            .await
        {
            Ok(()) => Pumped::Done,
            Err(ticket) => {
                self.ticket = ticket;
                self.fail(self.timed_out())
            }
        }
    }

    /// Its connection, once [`Upload::pump`] said `Done`.
    pub(super) fn keep(self) -> Kept {
        Kept {
            node: self.node,
            proto: self.proto,
            conn: self.conn,
        }
    }

    /// Gives up before the payload is all there (the client is leaving): the reply says so.
    pub(super) fn abandon(mut self) {
        let error = BackendError::Lost {
            node: self.node.pool.label().clone(),
            reason: "the client's connection is closing before the request's value has all arrived"
                .into(),
        };
        let _ = self.fail(error);
    }

    fn timed_out(&self) -> BackendError {
        BackendError::Stalled {
            node: self.node.pool.label().clone(),
            ms: self.timeout.as_millis(),
        }
    }

    fn fail(&mut self, error: BackendError) -> Pumped {
        let why = error.to_string();
        if let Some(ticket) = self.ticket.take() {
            ReplyTo::Inbox(ticket).send(Err(error));
        }
        Pumped::Failed(why)
    }
}
