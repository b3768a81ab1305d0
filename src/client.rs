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
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::backend::{BackendError, Reply};
use crate::command::{self, Local, Merge, Part, Plan};
use crate::info;
use crate::resp::{encode, reply, Proto, Request, RequestParser, Value};
use crate::server::Proxy;
use crate::socket::Reader;
use crate::topology::Topology;

/// Per-connection state that commands such as HELLO, AUTH and CLIENT SETNAME change.
pub struct Session {
    pub id: u64,
    pub proto: Proto,
    pub name: Option<Bytes>,
    pub authenticated: bool,
}

/// The reply to one request, in request order.
enum Slot {
    Ready(Bytes),
    Waiting(oneshot::Receiver<Reply>),
    Merging(Box<Merging>),
}

/// A split or broadcast request waiting for its parts.
struct Merging {
    merge: Merge,
    parts: Vec<PartReply>,
    proto: Proto,
    /// For INFO: the proxy's own sections, rendered when the request was planned.
    info: Option<info::Request>,
}

struct PartReply {
    rx: Option<oneshot::Receiver<Reply>>,
    reply: Option<Reply>,
    positions: Vec<usize>,
}

impl Slot {
    /// Turns the slot ready if its replies have arrived. `Ready` when it is.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Slot::Ready(_) => Poll::Ready(()),
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
        }
    }
}

fn flatten(result: Result<Reply, oneshot::error::RecvError>) -> Reply {
    result.unwrap_or_else(|_| {
        Err(BackendError::Lost {
            node: Arc::from("backend"),
            reason: "the connection task ended".into(),
        })
    })
}

/// The bytes a client gets for a backend reply or failure.
fn reply_bytes(reply: Reply) -> Bytes {
    match reply {
        Ok(frame) => frame,
        Err(e) => encode::error_bytes(&format!("ERR {e}")),
    }
}

impl Merging {
    fn finish(&mut self) -> Bytes {
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
        match self.merge {
            Merge::Mget { len } => merge_mget(len, frames),
            Merge::AllOk => Bytes::from_static(encode::OK),
            Merge::SumIntegers => {
                let mut total: i64 = 0;
                for (frame, _) in frames {
                    match frame.and_then(|f| reply::integer(f)) {
                        Some(n) => total = total.saturating_add(n),
                        None => return encode::error_bytes("ERR unexpected reply from a shard"),
                    }
                }
                let mut out = BytesMut::with_capacity(24);
                encode::integer(&mut out, total);
                out.freeze()
            }
            Merge::Info => {
                let request = self.info.take().expect("INFO merge carries its request");
                let keyspaces: Vec<Option<Bytes>> = frames
                    .map(|(f, _)| f.and_then(reply::bulk_payload))
                    .collect();
                request.render(&keyspaces).to_bytes(self.proto)
            }
        }
    }
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
    let size = values.iter().map(Bytes::len).sum::<usize>() + 16;
    let mut out = BytesMut::with_capacity(size);
    out.put_u8(b'*');
    out.put_slice(itoa::Buffer::new().format(len).as_bytes());
    out.put_slice(b"\r\n");
    for v in values {
        out.put_slice(&v);
    }
    out.freeze()
}

/// Serves one client until it quits, breaks the protocol or disconnects.
pub async fn serve(proxy: Arc<Proxy>, mut stream: TcpStream, peer: SocketAddr, id: u64) {
    let _ = stream.set_nodelay(true);
    let config = proxy.config();
    let limits = config.client;
    let mut session = Session {
        id,
        proto: Proto::Resp2,
        name: None,
        authenticated: config.password.is_none(),
    };
    let mut parser = RequestParser::new(config.protocol);
    drop(config);
    let mut shutdown = proxy.shutdown_notice();
    // Set after QUIT, a protocol error, EOF or shutdown: no more reading; flush what is owed,
    // then close. A session that starts after shutdown began takes no command.
    let mut closing = *shutdown.borrow_and_update();
    let mut inbuf = BytesMut::new();
    let mut reader = Reader::default();
    let mut out = BytesMut::new();
    let mut pending: VecDeque<Slot> = VecDeque::new();
    // The client closed its side: nothing more to read, so no lingering needed.
    let mut peer_closed = false;
    // Set when HELLO or RESET changed the protocol: no new request is dispatched until every
    // earlier one is answered.
    let mut switching = false;

    loop {
        move_ready(&mut pending, &mut out, limits.max_output_buffer);
        if !out.is_empty() {
            match stream.try_write(&out) {
                Ok(n) => {
                    let _ = out.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if switching && pending.is_empty() {
            switching = false;
        }
        // Parse what has arrived, up to the pipeline limit; the rest waits in the buffer and
        // is parsed once replies drain, before the socket is read again. This comes before
        // waiting, so commands already buffered never wait for more input.
        if !closing && !switching && !inbuf.is_empty() && pending.len() < limits.max_pipeline {
            let topology = proxy.topology();
            while pending.len() < limits.max_pipeline && !closing && !switching {
                match parser.next(&mut inbuf) {
                    Ok(Some(req)) => {
                        let proto = session.proto;
                        let slot =
                            dispatch(&proxy, &topology, &mut session, req, &mut closing).await;
                        pending.push_back(slot);
                        // RESP2 and RESP3 requests use different backend connections, so a
                        // request after HELLO could overtake one before it. Let everything
                        // sent before the switch finish first.
                        switching = session.proto != proto;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(peer = %peer, client = id, "protocol error: {e}");
                        let msg = format!("ERR {e}");
                        pending.push_back(Slot::Ready(encode::error_bytes(&msg)));
                        closing = true;
                    }
                }
            }
        }
        if closing && pending.is_empty() && out.is_empty() {
            if !peer_closed {
                linger_close(&mut stream).await;
            }
            break;
        }
        let can_read = !closing
            && !switching
            && pending.len() < limits.max_pipeline
            && out.len() < limits.max_output_buffer;
        let can_collect = !pending.is_empty() && out.len() < limits.max_output_buffer;
        tokio::select! {
            ready = stream.readable(), if can_read => {
                if ready.is_err() {
                    break;
                }
                match reader.try_read(&stream, &mut inbuf) {
                    Ok(0) => {
                        closing = true;
                        peer_closed = true;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            ready = stream.writable(), if !out.is_empty() => {
                if ready.is_err() {
                    break;
                }
            }
            _ = std::future::poll_fn(|cx| pending.front_mut().map_or(Poll::Pending, |s| s.poll_ready(cx))), if can_collect => {}
            // Shutting down: read nothing more, answer what was read, then close.
            _ = shutdown.changed(), if !closing => closing = true,
        }
    }
}

/// How long a closing connection keeps discarding input so its last reply is not lost.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Closes after the last reply (QUIT, a protocol error) without losing it: closing a socket
/// with unread input makes the kernel send a reset, which can destroy the reply still in
/// flight. So send FIN first, then discard what the client still sends, for a bounded time.
async fn linger_close(stream: &mut TcpStream) {
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

/// Moves the replies at the front of the FIFO that are ready into the output buffer.
fn move_ready(pending: &mut VecDeque<Slot>, out: &mut BytesMut, max_output: usize) {
    let mut cx = Context::from_waker(Waker::noop());
    while out.len() < max_output {
        let Some(front) = pending.front_mut() else {
            return;
        };
        if front.poll_ready(&mut cx).is_pending() {
            return;
        }
        if let Some(Slot::Ready(bytes)) = pending.pop_front() {
            out.extend_from_slice(&bytes);
        }
    }
}

/// Plans one request and starts carrying it out; returns the slot its reply will fill.
async fn dispatch(
    proxy: &Proxy,
    topology: &Topology,
    session: &mut Session,
    req: Request,
    closing: &mut bool,
) -> Slot {
    proxy.stats.commands.fetch_add(1, Ordering::Relaxed);
    let plan = command::plan(&req, &topology.router);
    if !session.authenticated {
        let allowed = matches!(
            plan,
            Plan::Error(_) | Plan::Local(Local::Auth | Local::Hello | Local::Quit | Local::Reset)
        );
        if !allowed {
            return Slot::Ready(Bytes::from_static(b"-NOAUTH Authentication required.\r\n"));
        }
    }
    match plan {
        Plan::Forward(shard) => forward(topology, session, shard, &req).await,
        Plan::AnyShard => forward(topology, session, topology.any_shard(), &req).await,
        Plan::Split { merge, parts } => fan_out(topology, session, merge, parts, None).await,
        Plan::Broadcast(merge) => {
            let (request, info) = if merge == Merge::Info {
                let mut cmd = BytesMut::new();
                encode::command(&mut cmd, [&b"INFO"[..], b"keyspace"].into_iter());
                let info = info::Request::new(proxy, topology, &req);
                (cmd.freeze(), Some(info))
            } else {
                (request_bytes(&req), None)
            };
            let parts = (0..topology.shards.len())
                .map(|shard| Part {
                    shard,
                    request: request.clone(),
                    positions: Vec::new(),
                })
                .collect();
            fan_out(topology, session, merge, parts, info).await
        }
        Plan::Local(local) => {
            let reply = crate::local::answer(proxy, session, local, &req);
            if local == Local::Quit {
                *closing = true;
            }
            Slot::Ready(reply)
        }
        Plan::Error(msg) => Slot::Ready(encode::error_bytes(&msg)),
    }
}

/// Sends each part to its shard; the slot is ready when every part has answered.
async fn fan_out(
    topology: &Topology,
    session: &Session,
    merge: Merge,
    parts: Vec<Part>,
    info: Option<info::Request>,
) -> Slot {
    let mut replies = Vec::with_capacity(parts.len());
    for part in parts {
        let conn = topology.shards[part.shard]
            .primary
            .conn(session.proto, session.id);
        replies.push(PartReply {
            rx: Some(conn.send(part.request).await),
            reply: None,
            positions: part.positions,
        });
    }
    Slot::Merging(Box::new(Merging {
        merge,
        parts: replies,
        proto: session.proto,
        info,
    }))
}

async fn forward(topology: &Topology, session: &Session, shard: usize, req: &Request) -> Slot {
    let conn = topology.shards[shard]
        .primary
        .conn(session.proto, session.id);
    Slot::Waiting(conn.send(request_bytes(req)).await)
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

impl Session {
    pub fn reply(&self, value: Value) -> Bytes {
        value.to_bytes(self.proto)
    }
}
