//! The reply owed for one request, in request order, and how split replies are merged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::backend::{Arrival, Arrivals, BackendError, Reply, Stream};
use crate::command::Merge;
use crate::resp::{encode, reply, Proto};
use crate::session::local::info;
use crate::session::merge;

/// The reply to one request, in request order.
pub enum Slot {
    Ready(Bytes),
    /// A pub/sub message: written in turn like a reply, but counted against the output limit,
    /// since a subscriber cannot be slowed down by not reading its socket.
    Message(Bytes),
    Waiting(oneshot::Receiver<Reply>),
    /// Answered through the session's inbox, under this ticket (see `backend::Arrivals`).
    Ticket(u64),
    /// A big reply, written out as its pieces arrive (see `backend::Stream`).
    Streaming(Stream),
    Merging(Box<Merging>),
    /// Ready as `then` once every wait has answered without an error (a SUBSCRIBE is
    /// confirmed only when each shard it went to has confirmed it).
    Gated {
        waits: Vec<oneshot::Receiver<Reply>>,
        then: Bytes,
    },
}

/// A split or broadcast request waiting for its parts.
pub struct Merging {
    pub merge: Merge,
    pub parts: Vec<PartReply>,
    pub proto: Proto,
    pub extra: Extra,
}

/// What a merge needs beyond the parts' replies, taken when the request was planned.
pub enum Extra {
    None,
    /// INFO: the proxy's own figures.
    Info(info::Request),
    /// CONFIG GET: the parameters the proxy answers for itself.
    Config(crate::session::merge::ConfigOverrides),
}

pub struct PartReply {
    pub rx: Option<oneshot::Receiver<Reply>>,
    pub reply: Option<Reply>,
    pub positions: Vec<usize>,
    /// The node it went to, for a command run on every node.
    pub node: Option<Arc<str>>,
}

impl PartReply {
    pub fn new(rx: oneshot::Receiver<Reply>, positions: Vec<usize>) -> PartReply {
        PartReply {
            rx: Some(rx),
            reply: None,
            positions,
            node: None,
        }
    }

    pub fn at_node(rx: oneshot::Receiver<Reply>, node: Arc<str>) -> PartReply {
        PartReply {
            node: Some(node),
            ..PartReply::new(rx, Vec::new())
        }
    }
}

impl Slot {
    /// A reply ready now: the error `msg`.
    pub fn error(msg: &str) -> Slot {
        Slot::Ready(encode::error_bytes(msg))
    }

    /// A slot that merges `parts` by `merge`, with nothing else to go by.
    pub fn merging(merge: Merge, parts: Vec<PartReply>, proto: Proto) -> Slot {
        Slot::Merging(Box::new(Merging {
            merge,
            parts,
            proto,
            extra: Extra::None,
        }))
    }

    /// A reply ready now: the failure `e`, as a backend failure reads.
    pub fn failed(e: BackendError) -> Slot {
        Slot::Ready(reply_bytes(Err(e)))
    }

    /// Turns the slot ready if its replies have arrived. `Ready` when it is.
    pub fn poll_ready(&mut self, arrivals: &mut Arrivals, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Slot::Ready(_) | Slot::Message(_) => Poll::Ready(()),
            Slot::Ticket(number) => match arrivals.poll_take(*number, cx) {
                Poll::Ready(Arrival::Reply(reply)) => {
                    *self = Slot::Ready(reply_bytes(reply));
                    Poll::Ready(())
                }
                Poll::Ready(Arrival::Stream(stream)) => {
                    let news = stream.poll_ready(cx);
                    *self = Slot::Streaming(stream);
                    news
                }
                Poll::Pending => Poll::Pending,
            },
            // Ready when there is a piece to write, or the end.
            Slot::Streaming(stream) => stream.poll_ready(cx),
            Slot::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(result) => {
                    *self = Slot::Ready(reply_bytes(flatten(result)));
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
            Slot::Merging(m) => {
                let mut waiting = false;
                for part in &mut m.parts {
                    if let Some(rx) = &mut part.rx {
                        match Pin::new(rx).poll(cx) {
                            Poll::Ready(result) => {
                                part.reply = Some(flatten(result));
                                part.rx = None;
                            }
                            Poll::Pending => waiting = true,
                        }
                    }
                }
                if waiting {
                    return Poll::Pending;
                }
                *self = Slot::Ready(m.finish());
                Poll::Ready(())
            }
            Slot::Gated { waits, then } => {
                while let Some(rx) = waits.last_mut() {
                    match Pin::new(rx).poll(cx) {
                        Poll::Ready(result) => {
                            waits.pop();
                            match flatten(result) {
                                Ok(frame) if !reply::is_error(&frame) => {}
                                failed => {
                                    *self = Slot::Ready(reply_bytes(failed));
                                    return Poll::Ready(());
                                }
                            }
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                *self = Slot::Ready(std::mem::take(then));
                Poll::Ready(())
            }
        }
    }
}

/// Whether a bulk string reply names one of shardis' own keys.
fn reserved(frame: &Bytes) -> bool {
    reply::bulk_payload(frame).is_some_and(|k| crate::command::lock::is_reserved(&k))
}

fn flatten(result: Result<Reply, oneshot::error::RecvError>) -> Reply {
    result.unwrap_or_else(|_| Err(crate::backend::inbox_ended()))
}

/// The bytes a client gets for a backend reply or failure.
fn reply_bytes(reply: Reply) -> Bytes {
    match reply {
        Ok(frame) => frame,
        Err(e) => encode::error_bytes(&format!("ERR {e}")),
    }
}

/// The cursors a client sees for the shards of one topology generation: the shard's own
/// cursor times the shard count, plus the shard, shifted left by 8 bits over the low 8 bits of
/// the generation. `0` starts at shard 0 and, as on Redis, a returned `0` means the scan is
/// complete; any other cursor handed out before a reload that changed the shards is refused,
/// rather than read against the new shard count (which would skip or repeat keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursors {
    pub shards: usize,
    pub generation: u64,
}

/// A cursor handed out under another set of shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleCursor;

impl Cursors {
    fn tag(&self) -> u64 {
        self.generation & 0xff
    }

    /// The client's cursor for `cursor` on `shard`; `None` when it does not fit.
    pub fn encode(&self, cursor: u64, shard: usize) -> Option<u64> {
        let plain = cursor
            .checked_mul(self.shards as u64)?
            .checked_add(shard as u64)?;
        if plain >> 56 != 0 {
            return None;
        }
        Some(plain << 8 | self.tag())
    }

    /// The shard and the shard's own cursor that a client cursor names.
    pub fn decode(&self, cursor: u64) -> Result<(usize, u64), StaleCursor> {
        if cursor == 0 {
            return Ok((0, 0));
        }
        if cursor & 0xff != self.tag() {
            return Err(StaleCursor);
        }
        let plain = cursor >> 8;
        let shards = self.shards as u64;
        Ok(((plain % shards) as usize, plain / shards))
    }
}

/// One shard's SCAN page: its cursor, and its keys without shardis' own (not the client's to
/// see); `None` for a reply that is not a SCAN page.
pub fn scan_page(frame: &Bytes) -> Option<(u64, Vec<Bytes>)> {
    let parts = reply::array_elements(frame)?;
    let [cursor, keys] = &parts[..] else {
        return None;
    };
    let cursor = reply::bulk_payload(cursor)?;
    let cursor: u64 = std::str::from_utf8(&cursor).ok()?.parse().ok()?;
    let mut keys = reply::array_elements(keys)?;
    keys.retain(|k| !reserved(k));
    Some((cursor, keys))
}

/// A SCAN reply: the client's cursor and the keys, as RESP frames.
pub fn scan_reply(cursor: u64, keys: &[Bytes]) -> Bytes {
    let cursor = itoa::Buffer::new().format(cursor).to_owned();
    let keys = array(b'*', keys);
    let mut out = BytesMut::with_capacity(keys.len() + 32);
    out.put_slice(b"*2\r\n$");
    out.put_slice(itoa::Buffer::new().format(cursor.len()).as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(cursor.as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(&keys);
    out.freeze()
}

impl Merging {
    fn finish(&mut self) -> Bytes {
        let proto = self.proto;
        let structured = |result: Result<crate::resp::Value, Bytes>| match result {
            Ok(value) => value.to_bytes(proto),
            Err(error) => error,
        };
        let mut all = || -> Vec<Reply> {
            self.parts
                .iter_mut()
                .map(|p| p.reply.take().expect("every part answered"))
                .collect()
        };
        match self.merge {
            Merge::ConfigGet => {
                let Extra::Config(overrides) = std::mem::replace(&mut self.extra, Extra::None)
                else {
                    unreachable!("CONFIG GET carries the proxy's parameters")
                };
                return structured(merge::config_get(all(), proto, &overrides));
            }
            Merge::SlowlogGet { count } => return structured(merge::slowlog(all(), proto, count)),
            Merge::LatencyLatest => return structured(merge::latency_latest(all(), proto)),
            Merge::MemoryStats => return structured(merge::memory_stats(all(), proto)),
            Merge::FunctionStats => return structured(merge::function_stats(all())),
            Merge::EveryNode => {
                let replies = self
                    .parts
                    .iter_mut()
                    .map(|p| {
                        let node = p.node.clone().unwrap_or_else(|| Arc::from("a node"));
                        (node, p.reply.take().expect("every part answered"))
                    })
                    .collect();
                return merge::every_node(replies);
            }
            _ => {}
        }
        let replies: Vec<(Reply, &[usize])> = self
            .parts
            .iter_mut()
            .map(|p| {
                (
                    p.reply.take().expect("every part answered"),
                    &p.positions[..],
                )
            })
            .collect();
        if self.merge == Merge::Kill {
            return merge_kill(replies.iter().map(|(r, _)| r));
        }
        // Any failed or refused part fails the whole command, with that part's error.
        if self.merge != Merge::Info {
            for (reply, _) in &replies {
                match reply {
                    Err(e) => return encode::error_bytes(&format!("ERR {e}")),
                    Ok(frame) if reply::is_error(frame) => return frame.clone(),
                    Ok(_) => {}
                }
            }
        }
        let frames = replies.iter().map(|(r, p)| (r.as_ref().ok(), *p));
        let mut ok_frames = replies.iter().filter_map(|(r, _)| r.as_ref().ok());
        match self.merge {
            Merge::Mget { len } => merge_mget(len, frames),
            Merge::AllOk | Merge::Flush => Bytes::from_static(encode::OK),
            Merge::Kill => unreachable!("merged above"),
            Merge::SumIntegers | Merge::DbSize => fold_integers(ok_frames, 0, i64::saturating_add),
            Merge::Max => fold_integers(ok_frames, 0, i64::max),
            Merge::Min => fold_integers(ok_frames, i64::MAX, i64::min),
            Merge::Info => {
                let Extra::Info(request) = std::mem::replace(&mut self.extra, Extra::None) else {
                    unreachable!("INFO carries the proxy's figures")
                };
                let keyspaces: Vec<Option<Bytes>> = frames
                    .map(|(f, _)| f.and_then(reply::bulk_payload))
                    .collect();
                request.render(&keyspaces).to_bytes(self.proto)
            }
            Merge::Concat | Merge::Union => {
                let mut all: Vec<Bytes> = Vec::new();
                for frame in ok_frames {
                    match reply::array_elements(frame) {
                        Some(elements) => all.extend(elements.into_iter().filter(|e| !reserved(e))),
                        None => return unexpected(),
                    }
                }
                if self.merge == Merge::Union {
                    let mut seen = std::collections::HashSet::new();
                    all.retain(|e| seen.insert(e.clone()));
                }
                array(b'*', &all)
            }
            Merge::RandomKey => {
                let keys: Vec<&Bytes> = ok_frames
                    .clone()
                    .filter(|f| !matches!(&f[..], b"$-1\r\n" | b"_\r\n") && !reserved(f))
                    .collect();
                if keys.is_empty() {
                    return ok_frames.next().cloned().unwrap_or_else(unexpected);
                }
                keys[random_below(keys.len())].clone()
            }
            Merge::Same => {
                let first = ok_frames.next().cloned().unwrap_or_else(unexpected);
                if ok_frames.all(|f| *f == first) {
                    first
                } else {
                    encode::error_bytes(
                        "ERR the shards answered differently (run the command that changed them through shardis so that every shard gets it)",
                    )
                }
            }
            Merge::AllExist => merge_elementwise(ok_frames, |a, b| a.min(b)),
            Merge::NumSub => merge_numsub(ok_frames),
            Merge::ConfigGet
            | Merge::SlowlogGet { .. }
            | Merge::LatencyLatest
            | Merge::MemoryStats
            | Merge::FunctionStats
            | Merge::EveryNode => unreachable!("merged above"),
        }
    }
}

/// SCRIPT KILL / FUNCTION KILL: what Redis says for the shard where something was running
/// (`+OK`, or its error such as UNKILLABLE); `-NOTBUSY` only when no shard ran anything.
fn merge_kill<'a>(replies: impl Iterator<Item = &'a Reply>) -> Bytes {
    let mut notbusy = None;
    let mut other = None;
    for reply in replies {
        match reply {
            Ok(frame) if !reply::is_error(frame) => return frame.clone(),
            Ok(frame) if frame.starts_with(b"-NOTBUSY") => notbusy = Some(frame.clone()),
            Ok(frame) => {
                other.get_or_insert_with(|| frame.clone());
            }
            Err(e) => {
                other.get_or_insert_with(|| encode::error_bytes(&format!("ERR {e}")));
            }
        }
    }
    other.or(notbusy).unwrap_or_else(unexpected)
}

fn unexpected() -> Bytes {
    encode::error_bytes("ERR unexpected reply from a shard")
}

/// A number in `0..n` that is good enough to spread RANDOMKEY over shards.
fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(std::time::Instant::now()) % n as u64) as usize
}

fn fold_integers<'a>(
    frames: impl Iterator<Item = &'a Bytes>,
    start: i64,
    f: impl Fn(i64, i64) -> i64,
) -> Bytes {
    let mut total = start;
    for frame in frames {
        match reply::integer(frame) {
            Some(n) => total = f(total, n),
            None => return unexpected(),
        }
    }
    let mut out = BytesMut::with_capacity(24);
    encode::integer(&mut out, total);
    out.freeze()
}

/// An array header of `kind` (`*`, `~`) followed by raw element frames.
fn array(kind: u8, elements: &[Bytes]) -> Bytes {
    let size = elements.iter().map(Bytes::len).sum::<usize>() + 16;
    let mut out = BytesMut::with_capacity(size);
    out.put_u8(kind);
    out.put_slice(itoa::Buffer::new().format(elements.len()).as_bytes());
    out.put_slice(b"\r\n");
    for e in elements {
        out.put_slice(e);
    }
    out.freeze()
}

/// Arrays of integers combined position by position (SCRIPT EXISTS).
fn merge_elementwise<'a>(
    frames: impl Iterator<Item = &'a Bytes>,
    f: impl Fn(i64, i64) -> i64,
) -> Bytes {
    let mut acc: Option<Vec<i64>> = None;
    for frame in frames {
        let Some(values) = reply::array_elements(frame).and_then(|e| {
            e.iter()
                .map(|v| reply::integer(v))
                .collect::<Option<Vec<i64>>>()
        }) else {
            return unexpected();
        };
        acc = Some(match acc {
            None => values,
            Some(a) if a.len() == values.len() => {
                a.into_iter().zip(values).map(|(x, y)| f(x, y)).collect()
            }
            Some(_) => return unexpected(),
        });
    }
    let values = acc.unwrap_or_default();
    let elements: Vec<Bytes> = values
        .into_iter()
        .map(|n| {
            let mut out = BytesMut::new();
            encode::integer(&mut out, n);
            out.freeze()
        })
        .collect();
    array(b'*', &elements)
}

/// `[channel, count, channel, count ...]` from every shard, with the counts summed.
fn merge_numsub<'a>(mut frames: impl Iterator<Item = &'a Bytes>) -> Bytes {
    let Some(first) = frames.next().and_then(reply::array_elements) else {
        return unexpected();
    };
    let mut counts: Vec<i64> = first
        .iter()
        .skip(1)
        .step_by(2)
        .filter_map(|c| reply::integer(c))
        .collect();
    for frame in frames {
        let Some(elements) = reply::array_elements(frame) else {
            return unexpected();
        };
        if elements.len() != first.len() {
            return unexpected();
        }
        for (total, c) in counts.iter_mut().zip(elements.iter().skip(1).step_by(2)) {
            *total += reply::integer(c).unwrap_or(0);
        }
    }
    let mut elements = Vec::with_capacity(first.len());
    for (channel, n) in first.iter().step_by(2).zip(counts) {
        elements.push(channel.clone());
        let mut out = BytesMut::new();
        encode::integer(&mut out, n);
        elements.push(out.freeze());
    }
    array(b'*', &elements)
}

fn merge_mget<'a>(
    len: usize,
    parts: impl Iterator<Item = (Option<&'a Bytes>, &'a [usize])>,
) -> Bytes {
    let mut values: Vec<Bytes> = vec![Bytes::new(); len];
    for (frame, positions) in parts {
        let elements = frame.and_then(reply::array_elements);
        match elements {
            Some(elements) if elements.len() == positions.len() => {
                for (value, &at) in elements.into_iter().zip(positions) {
                    values[at] = value;
                }
            }
            _ => return encode::error_bytes("ERR unexpected MGET reply from a shard"),
        }
    }
    array(b'*', &values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_name_their_shard_and_generation() {
        for shards in [1, 2, 3, 7] {
            for generation in [0, 1, 255, 256, 1_000] {
                let cursors = Cursors { shards, generation };
                for shard in 0..shards {
                    for cursor in [0u64, 1, 5, 1 << 40] {
                        let c = cursors.encode(cursor, shard).unwrap();
                        assert_eq!(cursors.decode(c), Ok((shard, cursor)));
                        // Another generation's cursor is refused; 0 always starts a scan.
                        let next = Cursors {
                            generation: generation + 1,
                            ..cursors
                        };
                        let want = if c == 0 { Ok((0, 0)) } else { Err(StaleCursor) };
                        assert_eq!(next.decode(c), want, "{c}");
                    }
                }
                assert_eq!(cursors.decode(0), Ok((0, 0)));
            }
        }
        let cursors = Cursors {
            shards: 3,
            generation: 0,
        };
        assert_eq!(cursors.encode(u64::MAX, 1), None);
        assert_eq!(cursors.encode(1 << 55, 1), None);
    }

    #[test]
    fn scan_pages_hide_reserved_keys_and_replies_name_the_cursor() {
        let page =
            Bytes::from_static(b"*2\r\n$2\r\n12\r\n*2\r\n$1\r\nk\r\n$17\r\n__shardis__:epoch\r\n");
        let (cursor, keys) = scan_page(&page).unwrap();
        assert_eq!(cursor, 12);
        assert_eq!(keys, vec![Bytes::from_static(b"$1\r\nk\r\n")]);
        assert_eq!(
            scan_reply(37, &keys),
            Bytes::from_static(b"*2\r\n$2\r\n37\r\n*1\r\n$1\r\nk\r\n")
        );
        assert_eq!(scan_page(&Bytes::from_static(b":1\r\n")), None);
    }

    #[test]
    fn numsub_counts_are_summed() {
        let a = Bytes::from_static(b"*4\r\n$1\r\nx\r\n:1\r\n$1\r\ny\r\n:0\r\n");
        let b = Bytes::from_static(b"*4\r\n$1\r\nx\r\n:0\r\n$1\r\ny\r\n:2\r\n");
        assert_eq!(
            merge_numsub([&a, &b].into_iter()),
            Bytes::from_static(b"*4\r\n$1\r\nx\r\n:1\r\n$1\r\ny\r\n:2\r\n")
        );
    }
}
