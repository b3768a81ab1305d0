//! A client's subscriptions: which channels and patterns it holds, the subscriber connections
//! that carry them (one per shard, opened on first use), and the events they push back.
//!
//! A channel lives on the shard its name hashes to, like a key; a pattern is subscribed on
//! every shard, and since a message is published on its channel's shard alone, each message
//! still reaches the client once. The proxy writes the subscription confirmations itself, with
//! the client-wide counts Redis would give, but only after the shards have confirmed, so a
//! message published after the client saw its confirmation is delivered, and a channel it saw
//! itself leave is no longer counted by the node.

use std::collections::{HashSet, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::slot::Slot;
use crate::backend::{Dedicated, NodeConn, Push, Reply};
use crate::command::{PubSubCommand, CROSSSLOT};
use crate::resp::{encode, reply, Proto};
use crate::topology::Topology;

#[derive(Default)]
pub struct Subscriptions {
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    shard_channels: HashSet<Bytes>,
    /// Per shard: the subscriber connection (with its tag), and the confirmations it owes.
    conns: Vec<Option<(usize, NodeConn)>>,
    confirmations: Vec<VecDeque<Expected>>,
    /// Counts subscriber connections opened, so that each gets a tag of its own and a late
    /// push from one closed earlier is recognised and ignored.
    opened: usize,
}

/// One (P|S)SUBSCRIBE sent to a shard: confirmed when the shard has confirmed every name in it,
/// or refused by one error.
struct Expected {
    done: oneshot::Sender<Reply>,
    remaining: usize,
}

/// Tags carry the shard in their low bits.
const SHARD_BITS: u32 = 16;

/// What a push from a subscriber connection means for the client.
pub enum Event {
    /// Nothing to write (a confirmation the proxy already counted, a message for a channel the
    /// client has left).
    None,
    /// A message to write to the client, as received.
    Message(Bytes),
    /// The connection carrying some of the client's subscriptions broke: the client must be
    /// closed, as it would be if its Redis went away, so that it reconnects and resubscribes.
    Lost(String),
}

impl Subscriptions {
    /// Channels plus patterns, as Redis counts in `subscribe` replies.
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Channels, patterns and shard channels held, for CLIENT LIST.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.channels.len(),
            self.patterns.len(),
            self.shard_channels.len(),
        )
    }

    /// Whether the client holds any subscription (RESP2: it is in subscriber mode).
    pub fn active(&self) -> bool {
        self.count() + self.shard_channels.len() > 0
    }

    /// Carries out one subscription command.
    pub async fn handle(
        &mut self,
        cmd: PubSubCommand,
        args: &[Bytes],
        topology: &Topology,
        proto: Proto,
        pushes: &mpsc::UnboundedSender<Push>,
    ) -> Slot {
        let shards = topology.shards.len();
        if self.conns.len() != shards {
            self.conns.resize_with(shards, || None);
            self.confirmations.resize_with(shards, VecDeque::new);
        }
        let names = &args[1..];
        let (kind, backend_cmd): (&[u8], &[u8]) = match cmd {
            PubSubCommand::Subscribe => (b"subscribe", b"SUBSCRIBE"),
            PubSubCommand::PSubscribe => (b"psubscribe", b"PSUBSCRIBE"),
            PubSubCommand::SSubscribe => (b"ssubscribe", b"SSUBSCRIBE"),
            PubSubCommand::Unsubscribe => (b"unsubscribe", b"UNSUBSCRIBE"),
            PubSubCommand::PUnsubscribe => (b"punsubscribe", b"PUNSUBSCRIBE"),
            PubSubCommand::SUnsubscribe => (b"sunsubscribe", b"SUNSUBSCRIBE"),
        };
        let subscribing = matches!(
            cmd,
            PubSubCommand::Subscribe | PubSubCommand::PSubscribe | PubSubCommand::SSubscribe
        );
        if cmd == PubSubCommand::SSubscribe {
            let first = topology.router.shard_of(&names[0]);
            if names.iter().any(|n| topology.router.shard_of(n) != first) {
                return Slot::error(CROSSSLOT);
            }
        }
        // The connections a subscription needs, opened before anything changes: when one
        // cannot be (no dedicated connection left), the command gets the error and the session
        // stays as it was.
        if subscribing {
            let needed: Vec<usize> = match cmd {
                PubSubCommand::PSubscribe => (0..shards).collect(),
                _ => names.iter().map(|n| topology.router.shard_of(n)).collect(),
            };
            for shard in needed {
                if self.conns[shard].is_some() {
                    continue;
                }
                self.opened += 1;
                let tag = (self.opened << SHARD_BITS) | shard;
                let dedicated = Dedicated {
                    push: pushes.clone(),
                    tag,
                    subscriber: true,
                };
                // On a primary that is down, the connection fails and the session ends, as
                // when a subscriber connection breaks.
                let opened = topology.shards[shard]
                    .view()
                    .primary
                    .pool
                    .dedicated(proto, dedicated);
                match opened {
                    Ok(conn) => self.conns[shard] = Some((tag, conn)),
                    Err(e) => {
                        if !self.active() {
                            self.close();
                        }
                        return Slot::error(&format!("ERR {e}"));
                    }
                }
            }
        }
        // The names to act on: UNSUBSCRIBE with none means every one held.
        let names: Vec<Bytes> = if names.is_empty() && !subscribing {
            self.set(cmd).iter().cloned().collect()
        } else {
            names.to_vec()
        };
        let mut out = BytesMut::new();
        let mut per_shard: Vec<Vec<Bytes>> = vec![Vec::new(); shards];
        if names.is_empty() {
            // Redis answers an UNSUBSCRIBE with nothing to leave by one null confirmation.
            let count = self.count_for(cmd);
            confirmation(&mut out, proto, kind, None, count);
        }
        for name in names {
            let changed = if subscribing {
                self.set_mut(cmd).insert(name.clone())
            } else {
                self.set_mut(cmd).remove(&name)
            };
            if changed {
                match cmd {
                    PubSubCommand::PSubscribe | PubSubCommand::PUnsubscribe => {
                        per_shard.iter_mut().for_each(|s| s.push(name.clone()))
                    }
                    _ => per_shard[topology.router.shard_of(&name)].push(name.clone()),
                }
            }
            let count = self.count_for(cmd);
            confirmation(&mut out, proto, kind, Some(&name), count);
        }
        let mut waits = Vec::new();
        for (shard, names) in per_shard.into_iter().enumerate() {
            if names.is_empty() {
                continue;
            }
            let conn = match &self.conns[shard] {
                Some((_, conn)) => conn.clone(),
                // Opened above, before anything changed.
                None => continue,
            };
            let mut request = BytesMut::new();
            let args = std::iter::once(backend_cmd).chain(names.iter().map(|n| &n[..]));
            encode::command(&mut request, args.collect::<Vec<_>>().into_iter());
            // Leaving waits for the shard too: once the client has its confirmation, a PUBSUB
            // NUMSUB on another connection no longer counts it.
            let (done, rx) = oneshot::channel();
            self.confirmations[shard].push_back(Expected {
                done,
                remaining: names.len(),
            });
            waits.push(rx);
            conn.send_no_reply(request.freeze()).await;
        }
        // Out of subscriber mode, the connections close once the shards have confirmed
        // (see `confirm`): closing them drops whatever they still hold.
        self.close_if_done();
        Slot::Gated {
            waits,
            then: out.freeze(),
        }
    }

    /// Makes sense of a frame pushed by a dedicated connection tagged `tag`.
    pub fn on_push(&mut self, push: Push) -> Event {
        let tag = match &push {
            Push::Lost { tag, .. } | Push::Frame { tag, .. } => *tag,
        };
        let shard = tag & ((1 << SHARD_BITS) - 1);
        // From a connection this session still uses, not one closed earlier (or not a
        // subscriber connection at all).
        if !matches!(self.conns.get(shard), Some(Some((t, _))) if *t == tag) {
            return Event::None;
        }
        match push {
            Push::Lost { reason, .. } => Event::Lost(reason),
            Push::Frame { frame, .. } => {
                if reply::is_error(&frame) {
                    // A refused SUBSCRIBE: one error answers the whole command.
                    if let Some(expected) = self.confirmations[shard].pop_front() {
                        let _ = expected.done.send(Ok(frame));
                    }
                    return Event::None;
                }
                let Some(elements) = reply::array_elements(&frame) else {
                    return Event::None;
                };
                let Some(kind) = elements.first().and_then(reply::bulk_payload) else {
                    return Event::None;
                };
                let name = elements.get(1).and_then(reply::bulk_payload);
                let held = |set: &HashSet<Bytes>| name.as_ref().is_some_and(|n| set.contains(n));
                match &kind[..] {
                    b"subscribe" | b"psubscribe" | b"ssubscribe" | b"unsubscribe"
                    | b"punsubscribe" | b"sunsubscribe" => {
                        self.confirm(shard, frame);
                        self.close_if_done();
                        Event::None
                    }
                    b"message" if held(&self.channels) => Event::Message(frame),
                    b"pmessage" if held(&self.patterns) => Event::Message(frame),
                    b"smessage" if held(&self.shard_channels) => Event::Message(frame),
                    _ => Event::None,
                }
            }
        }
    }

    /// Drops every subscription (RESET, or the end of subscriber mode).
    pub fn close(&mut self) {
        self.channels.clear();
        self.patterns.clear();
        self.shard_channels.clear();
        self.conns.iter_mut().for_each(|c| *c = None);
        self.confirmations.iter_mut().for_each(VecDeque::clear);
    }

    /// Closes the connections of a client that holds no subscription and waits for no
    /// confirmation.
    fn close_if_done(&mut self) {
        if !self.active() && self.confirmations.iter().all(VecDeque::is_empty) {
            self.close();
        }
    }

    fn confirm(&mut self, shard: usize, frame: Bytes) {
        let queue = &mut self.confirmations[shard];
        if let Some(expected) = queue.front_mut() {
            expected.remaining = expected.remaining.saturating_sub(1);
            if expected.remaining == 0 {
                if let Some(expected) = queue.pop_front() {
                    let _ = expected.done.send(Ok(frame));
                }
            }
        }
    }

    fn set(&self, cmd: PubSubCommand) -> &HashSet<Bytes> {
        match cmd {
            PubSubCommand::Subscribe | PubSubCommand::Unsubscribe => &self.channels,
            PubSubCommand::PSubscribe | PubSubCommand::PUnsubscribe => &self.patterns,
            PubSubCommand::SSubscribe | PubSubCommand::SUnsubscribe => &self.shard_channels,
        }
    }

    fn set_mut(&mut self, cmd: PubSubCommand) -> &mut HashSet<Bytes> {
        match cmd {
            PubSubCommand::Subscribe | PubSubCommand::Unsubscribe => &mut self.channels,
            PubSubCommand::PSubscribe | PubSubCommand::PUnsubscribe => &mut self.patterns,
            PubSubCommand::SSubscribe | PubSubCommand::SUnsubscribe => &mut self.shard_channels,
        }
    }

    /// The count Redis reports after a change: shard channels are counted on their own.
    fn count_for(&self, cmd: PubSubCommand) -> usize {
        match cmd {
            PubSubCommand::SSubscribe | PubSubCommand::SUnsubscribe => self.shard_channels.len(),
            _ => self.count(),
        }
    }
}

/// `subscribe <name> <count>`: an array in RESP2, a push in RESP3.
fn confirmation(out: &mut BytesMut, proto: Proto, kind: &[u8], name: Option<&[u8]>, count: usize) {
    out.put_slice(if proto == Proto::Resp3 {
        b">3\r\n"
    } else {
        b"*3\r\n"
    });
    bulk(out, kind);
    match name {
        Some(name) => bulk(out, name),
        None if proto == Proto::Resp3 => out.put_slice(b"_\r\n"),
        None => out.put_slice(b"$-1\r\n"),
    }
    encode::integer(out, count as i64);
}

fn bulk(out: &mut BytesMut, payload: &[u8]) {
    out.put_u8(b'$');
    out.put_slice(itoa::Buffer::new().format(payload.len()).as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// The reply to PING in RESP2 subscriber mode: `["pong", <arg or "">]`.
pub fn subscriber_pong(arg: Option<&[u8]>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(b"*2\r\n");
    bulk(&mut out, b"pong");
    bulk(&mut out, arg.unwrap_or(b""));
    out.freeze()
}
