//! Sending a request to its shards: to one, to several with the replies merged, to every node;
//! WAIT; the scripts FLUSHDB and the like run as.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::slot::{Extra, Merging, PartReply, Slot};
use super::state::Session;
use crate::backend::{BackendError, Reply, Wait};
use crate::command::{self, Merge, Part};
use crate::lock;
use crate::proxy::Proxy;
use crate::resp::{encode, Request};
use crate::topology::{failed, NodeCall, NodeNow, Topology};

/// FLUSHDB / FLUSHALL as the script that keeps shardis' own keys.
pub(super) fn flush_script(req: &Request) -> Bytes {
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
pub(super) fn every_node(
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
pub(super) fn config_overrides(proxy: &Proxy) -> crate::session::merge::ConfigOverrides {
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

/// The time a blocking command may take before its connection is given up: its own timeout
/// plus the usual allowance for the node.
pub(super) fn blocking_wait(proxy: &Proxy, timeout: Option<std::time::Duration>) -> Wait {
    match timeout {
        Some(t) => Wait::For(t + proxy.config().backend.timeout),
        None => Wait::Forever,
    }
}

/// WAIT: every shard this client sent writes to must have them acknowledged. Redis counts
/// acknowledgements per connection, so each shard gets, on the session's own connection, a
/// PUBLISH (which is replicated, on a channel no one needs to hear) and then the WAIT, which so
/// covers every write the client made there before; the smallest count is the answer.
pub(super) async fn wait_replicas(
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

/// Sends each part to its shard; the slot is ready when every part has answered.
pub(super) async fn fan_out(
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

/// To one shard, as [`send`] would, answered through the session's inbox.
pub(super) async fn forward(
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
    // The node is held without a reference count unless the request must wait for room.
    let (number, node, full) = match pick(topology, session, shard, readonly) {
        (Ok(node), ack) => {
            let (number, ticket) = session.arrivals.issue();
            // On the lane `pick` left the session on: it may have moved it.
            let conn = node.pool.conn(session.proto, session.lane);
            match conn.send_ticketed(request_bytes(req), ticket, ack) {
                Ok(()) => return Slot::Ticket(number),
                Err(full) => (number, Arc::clone(&node), full),
            }
        }
        (Err(e), _) => return Slot::failed(e),
    };
    let conn = node.pool.conn(session.proto, session.lane);
    conn.send_when_room(full).await;
    Slot::Ticket(number)
}

/// How many lanes a client looks at, from the first, for a connection that is not in the
/// middle of a big reply: every connection of a node, with up to 8 per worker (2 by default).
const LANES: u64 = 8;

/// Sends one request to a shard: a read-only one to the node `read_from` picks, any other to
/// the primary, waiting for the replica acknowledgements `write_ack` asks for.
pub(super) async fn send(
    topology: &Topology,
    session: &mut Session,
    shard: usize,
    request: Bytes,
    readonly: bool,
) -> oneshot::Receiver<Reply> {
    let (node, ack) = match pick(topology, session, shard, readonly) {
        (Ok(node), ack) => (Arc::clone(&node), ack),
        (Err(e), _) => return failed(e),
    };
    let conn = node.pool.conn(session.proto, session.lane);
    conn.send_acked(request, 0, Wait::Default, ack).await
}

/// The node a request to `shard` goes to, on its connection for `session.lane`; and the
/// replica acknowledgements it waits for (a write's, as `write_ack` asks). A read from replicas
/// goes to the one the client's id picks.
fn pick(
    topology: &Topology,
    session: &mut Session,
    shard: usize,
    readonly: bool,
) -> (Result<NodeNow, BackendError>, Option<u8>) {
    let shard = &topology.shards[shard];
    let node = match readonly {
        true => shard.read_node(session.id),
        false => shard.primary_now(),
    };
    // With nothing in flight, the client takes the node's first connection that is not in the
    // middle of a big reply. Its requests so join the other clients' on one connection, and
    // each write to the node and each read from it carries as many as it can: spread over two
    // connections, the same load without pipelining cost a fifth more CPU, mostly the
    // kernel's. And it need not wait behind another client's big reply.
    if std::mem::take(&mut session.may_move) {
        if let Ok(node) = &node {
            let proto = session.proto;
            if let Some(lane) = (0..LANES).find(|&l| !node.pool.conn(proto, l).receiving_big()) {
                session.lane = lane;
            }
        }
    }
    (node, (!readonly).then(|| shard.acks()))
}

/// The request as RESP bytes: the client's own bytes when it sent RESP.
pub(super) fn request_bytes(req: &Request) -> Bytes {
    match req.raw() {
        Some(raw) => raw.clone(),
        None => {
            let mut out = BytesMut::new();
            req.write_resp(&mut out);
            out.freeze()
        }
    }
}
