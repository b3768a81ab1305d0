//! Socket reads that spare the proxy one system call per request.
//!
//! Tokio keeps a socket "readable" until a read returns `WouldBlock`, so the usual loop
//! (read, handle, wait for readable, read again) makes one extra `recv` per wakeup that only
//! comes back empty. At one request per wakeup (clients that do not pipeline) that is a third of
//! the proxy's system calls. Here a read that returns less than it had room for is taken to have
//! drained the socket, and tokio's readiness is cleared on the spot. That is safe: tokio clears
//! readiness only if no new readiness event arrived since it was observed, so data that lands
//! right after the read still wakes the task.

use std::future::Future;
use std::io::{self, Read};
use std::os::fd::AsFd;

use bytes::BytesMut;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::{TcpStream, UnixStream};

/// What the client session and the backend connection loops need of a socket: readiness and
/// non-blocking reads and writes. A TCP socket, or the proxy's end of a socket pair whose
/// other end a TLS bridge serves (see `tls`).
pub trait Socket: AsFd + AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

macro_rules! socket {
    ($t:ty) => {
        impl Socket for $t {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$t>::readable(self)
            }
            fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$t>::writable(self)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$t>::try_write(self, buf)
            }
            fn try_io<R>(
                &self,
                interest: Interest,
                f: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                <$t>::try_io(self, interest, f)
            }
        }
    };
}

socket!(TcpStream);
socket!(UnixStream);

const MIN_READ: usize = 4 * 1024;
const MAX_READ: usize = 64 * 1024;

/// A reader for one socket, sizing its reads to the traffic it sees.
#[derive(Debug)]
pub struct Reader {
    size: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Reader { size: MIN_READ }
    }
}

impl Reader {
    /// Reads what is available into `buf` without blocking. `Ok(0)` is end of stream;
    /// `WouldBlock` means nothing was there.
    pub fn try_read(&mut self, stream: &impl Socket, buf: &mut BytesMut) -> io::Result<usize> {
        let start = buf.len();
        let room = self.size;
        // The read needs initialised memory (no unsafe here); zeroing a few KiB costs far less
        // than the system call this saves.
        buf.resize(start + room, 0);
        let mut got = 0;
        let result = stream.try_io(Interest::READABLE, || {
            let n = (&*SockRef::from(stream)).read(&mut buf[start..])?;
            got = n;
            if n > 0 && n < room {
                // Short read: the socket is drained. Reporting WouldBlock clears readiness.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        buf.truncate(start + got);
        // Grow the reads while they come back full, shrink them when traffic is light.
        if got == room {
            self.size = (room * 2).min(MAX_READ);
        } else if got < room / 4 {
            self.size = (room / 2).max(MIN_READ);
        }
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
            other => other,
        }
    }
}
