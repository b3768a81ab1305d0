//! A plain request/reply connection for the control plane: health checks, REPLICAOF, Sentinel.
//!
//! The data path never uses it. Replies are parsed into whole frames (redis-protocol), which is
//! fine here: the peers are the operator's own Redis nodes and sentinels, the replies are small
//! and the buffer is capped.
//!
//! Its errors say what a failure is evidence of ([`LinkError`]): a refused or reset connection
//! says the node is down; a connection or reply that did not come in time says nothing either
//! way (a node busy in a long script keeps its socket and answers late).

use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::BackendSettings;
use crate::resp::{encode, ReplyFramer};

/// Largest reply accepted on a control connection (INFO, SENTINEL REPLICAS).
const MAX_REPLY: usize = 4 * 1024 * 1024;

/// Deepest reply accepted on a control connection.
const MAX_DEPTH: usize = 16;

/// Why a control connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Refused, reset or closed by the peer, or a broken reply: evidence that the node is down
    /// or unusable.
    #[error("{0}")]
    Refused(String),
    /// No connection, or no reply, within the time allowed: silence, which a slow node and a
    /// cut-off one share.
    #[error("{0}")]
    Silent(String),
    /// The node answered, with an error, before any command could run (a node at maxclients,
    /// LOADING or BUSY during AUTH): alive.
    #[error("{0}")]
    Answered(String),
    /// This process could not open a connection (out of file descriptors): says nothing of
    /// the node.
    #[error("{0}")]
    Local(String),
}

impl From<LinkError> for String {
    fn from(e: LinkError) -> String {
        e.to_string()
    }
}

impl LinkError {
    fn io(e: std::io::Error) -> LinkError {
        match (e.kind(), e.raw_os_error()) {
            (std::io::ErrorKind::TimedOut, _) => LinkError::Silent(e.to_string()),
            // Out of file descriptors here (EMFILE, ENFILE): says nothing of the node.
            (_, Some(23 | 24)) => LinkError::Local(e.to_string()),
            _ => LinkError::Refused(e.to_string()),
        }
    }
}

pub struct Link {
    /// TCP, or the socket of a TLS bridge.
    stream: Box<dyn LinkStream>,
    rbuf: BytesMut,
    timeout: Duration,
}

trait LinkStream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> LinkStream for T {}

async fn tcp(addr: &str, timeout: Duration) -> Result<TcpStream, LinkError> {
    match tokio::time::timeout(timeout, crate::net::fds::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(match LinkError::io(e) {
            LinkError::Refused(e) => LinkError::Refused(format!("connect: {e}")),
            LinkError::Silent(e) => LinkError::Silent(format!("connect: {e}")),
            other => other,
        }),
        Err(_) => Err(LinkError::Silent(format!(
            "connect timed out after {} ms",
            timeout.as_millis()
        ))),
    }
}

impl Link {
    fn over(stream: impl LinkStream + 'static, timeout: Duration) -> Link {
        Link {
            stream: Box::new(stream),
            rbuf: BytesMut::new(),
            timeout,
        }
    }

    /// A plain connection (to a Sentinel).
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Link, LinkError> {
        Ok(Link::over(tcp(addr, timeout).await?, timeout))
    }

    /// Connects to a Redis node (over TLS with `backend.tls`), then AUTH when `backend` has a
    /// password. `timeout` bounds the connection and every reply, until
    /// [`set_timeout`](Self::set_timeout) changes the latter.
    pub async fn open(
        addr: &str,
        timeout: Duration,
        backend: &BackendSettings,
    ) -> Result<Link, LinkError> {
        let stream = tcp(addr, timeout).await?;
        let mut link = match (backend.tls, &backend.tls_ca) {
            (true, Some(ca)) => {
                let tls = crate::net::tls::connect(
                    stream,
                    addr,
                    ca,
                    backend.tls_server_name.as_deref(),
                    timeout,
                )
                .await
                .map_err(LinkError::Refused)?;
                Link::over(tls, timeout)
            }
            _ => Link::over(stream, timeout),
        };
        if let Some(auth) = backend.auth_args() {
            // Redis's error names no secret ("WRONGPASS invalid username-password pair ...").
            // A refused password makes the node unusable; any other error (maxclients,
            // LOADING) is a live node answering.
            if let OwnedFrame::Error(e) = link.call(&auth).await? {
                let refused = ["WRONGPASS", "NOPERM", "NOAUTH", "ERR AUTH", "ERR invalid"]
                    .iter()
                    .any(|p| e.starts_with(p));
                return Err(if refused {
                    LinkError::Refused(format!("AUTH refused: {e}"))
                } else {
                    LinkError::Answered(e)
                });
            }
        }
        Ok(link)
    }

    /// How long a reply may take from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends one command and reads its reply. An error reply is `Ok(OwnedFrame::Error)`.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<OwnedFrame, LinkError> {
        let mut replies = self.call_many(&[args]).await?;
        Ok(replies.remove(0))
    }

    /// Sends several commands in one write and reads their replies, in order, all within the
    /// reply timeout.
    pub async fn call_many(&mut self, commands: &[&[&[u8]]]) -> Result<Vec<OwnedFrame>, LinkError> {
        let mut out = BytesMut::new();
        for args in commands {
            encode::command(&mut out, args.iter().copied());
        }
        let timeout = self.timeout;
        let exchange = async {
            self.stream.write_all(&out).await.map_err(LinkError::io)?;
            let mut replies = Vec::with_capacity(commands.len());
            for _ in commands {
                replies.push(self.read().await?);
            }
            Ok(replies)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(LinkError::Silent(format!(
                "timed out: no reply within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// Sends a command whose replies come as a stream of frames (SUBSCRIBE).
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), LinkError> {
        let mut out = BytesMut::new();
        encode::command(&mut out, args.iter().copied());
        self.stream.write_all(&out).await.map_err(LinkError::io)
    }

    /// The next frame, however long it takes.
    pub async fn read(&mut self) -> Result<OwnedFrame, LinkError> {
        loop {
            // Framed first, depth-limited: redis-protocol's decoder recurses once per nesting
            // level, so a node (or anything listening on its port) answering a reply nested a
            // million deep would overflow the stack. What a health check reads nests a level or
            // two.
            let broken = |e: String| LinkError::Refused(e);
            let framed = ReplyFramer::new(MAX_DEPTH)
                .frame_len(&self.rbuf)
                .map_err(|e| broken(e.to_string()))?;
            if let Some(len) = framed {
                let frame = match decode(&self.rbuf[..len]).map_err(|e| broken(e.to_string()))? {
                    Some((frame, _)) => frame,
                    None => return Err(broken("the framer and the decoder disagree".into())),
                };
                let _ = self.rbuf.split_to(len);
                return Ok(frame);
            }
            if self.rbuf.len() > MAX_REPLY {
                return Err(broken(format!("reply longer than {MAX_REPLY} bytes")));
            }
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) => return Err(broken("closed by the peer".into())),
                Ok(_) => {}
                Err(e) => return Err(LinkError::io(e)),
            }
        }
    }
}

/// A bulk or simple string reply as text.
pub fn text(frame: &OwnedFrame) -> Option<String> {
    match frame {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        _ => None,
    }
}

/// An error reply's text, or `Ok` with the frame.
pub fn ok(frame: OwnedFrame) -> Result<OwnedFrame, String> {
    match frame {
        OwnedFrame::Error(e) => Err(e),
        f => Ok(f),
    }
}

/// A flat `[k1, v1, k2, v2, ...]` reply (SENTINEL MASTER) as pairs.
pub fn pairs(frame: &OwnedFrame) -> Vec<(String, String)> {
    let OwnedFrame::Array(items) = frame else {
        return Vec::new();
    };
    items
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => Some((text(k)?, text(v)?)),
            _ => None,
        })
        .collect()
}

/// `host:port` split for REPLICAOF.
pub fn split_addr(addr: &str) -> (&str, &str) {
    addr.rsplit_once(':').unwrap_or((addr, "6379"))
}
