//! Socket reads that spare the proxy one system call per request.
//!
//! Tokio keeps a socket "readable" until a read returns `WouldBlock`, so the usual loop
//! (read, handle, wait for readable, read again) makes one extra `recv` per wakeup that only
//! comes back empty. At one request per wakeup (clients that do not pipeline) that is a third of
//! the proxy's system calls. Here a read that returns less than it had room for is taken to have
//! drained the socket, and tokio's readiness is cleared on the spot. That is safe: tokio clears
//! readiness only if no new readiness event arrived since it was observed, so data that lands
//! right after the read still wakes the task.

use std::io;
use std::os::fd::AsFd;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::{TcpStream, UnixStream};

/// What the client session and the backend connection loops need of a socket: readiness and
/// non-blocking reads and writes. A TCP socket, or the proxy's end of a socket pair whose
/// other end a TLS bridge serves (see `tls`).
///
/// Readiness is polled (`poll_read_ready`), not awaited (`readable()`): each `readable()`
/// future joins a list of waiters under a lock and leaves it when dropped, which a `select!`
/// does every time the loop comes round. The poll form keeps one waker in the socket's slot,
/// which is all a socket served by one task needs. At one request per wakeup it spared about
/// 5% of the proxy's instructions.
pub trait Socket: AsFd + AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize>;
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

macro_rules! socket {
    ($t:ty) => {
        impl Socket for $t {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_write_ready(self, cx)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$t>::try_write(self, buf)
            }
            fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
                <$t>::try_write_vectored(self, bufs)
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
                <$t>::try_read_buf(self, buf)
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

/// How much a buffer must have held for its memory to be given back once drained.
const GROWN: usize = 1024 * 1024;

/// Gives back the memory a big value made a buffer grow to, once the value has passed.
///
/// A `BytesMut` keeps its allocation: after a 50 MiB value it would hold 50 MiB for as long as
/// the connection stays open, and reuse it for every small request after. So each buffer has
/// a `Watermark`, told how full the buffer is after each read or write ([`Watermark::check`]):
/// once a buffer that held more than [`GROWN`] is down to at most one read, what is left in it
/// moves to a buffer of its own size. It costs two comparisons otherwise.
#[derive(Debug, Default)]
pub struct Watermark {
    /// The most the buffer held since it was last given back.
    high: usize,
}

impl Watermark {
    pub fn check(&mut self, buf: &mut BytesMut) {
        self.high = self.high.max(buf.len());
        if self.high > GROWN && buf.len() <= MAX_READ {
            *buf = BytesMut::from(&buf[..]);
            self.high = buf.len();
        }
    }
}

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
        buf.reserve(self.size);
        // Tokio reads into the spare capacity as it is, uninitialised: zeroing it first, as a
        // read into a slice needs, cost a sixth of the proxy's instructions.
        let room = buf.capacity() - buf.len();
        let mut got = 0;
        let result = stream.try_io(Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            got = n;
            if n > 0 && n < room {
                // Short read: the socket is drained. Reporting WouldBlock clears readiness.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        // Grow the reads while they come back full, shrink them when traffic is light.
        if got >= self.size {
            self.size = (self.size * 2).min(MAX_READ);
        } else if got < self.size / 4 {
            self.size = (self.size / 2).max(MIN_READ);
        }
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_grown_by_a_big_value_gives_its_memory_back_once_drained() {
        let mut mark = Watermark::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&vec![b'x'; 8 * GROWN]);
        mark.check(&mut buf);
        // The value is still there: nothing moves.
        let start = buf.as_ptr();
        assert_eq!(buf.len(), 8 * GROWN);
        // Half of it passed on: still too much left to move.
        let first = buf.split_to(4 * GROWN).freeze();
        mark.check(&mut buf);
        assert_eq!(buf.as_ptr(), start.wrapping_add(4 * GROWN));
        // All of it passed on, with the start of the next request behind it: the rest moves
        // out of the big allocation.
        let second = buf.split_to(4 * GROWN - 10).freeze();
        mark.check(&mut buf);
        assert_eq!(&buf[..], &[b'x'; 10]);
        let moved = buf.as_ptr();
        assert!(
            moved < start || moved > start.wrapping_add(8 * GROWN),
            "still in the value's allocation"
        );
        assert_eq!(first.len() + second.len() + buf.len(), 8 * GROWN);
        // A buffer of everyday size is left where it is.
        let mut small = BytesMut::with_capacity(2 * GROWN);
        small.extend_from_slice(&vec![b'y'; GROWN / 2]);
        let mut mark = Watermark::default();
        mark.check(&mut small);
        let _ = small.split_to(GROWN / 2 - 3);
        let before = small.as_ptr();
        mark.check(&mut small);
        assert_eq!(small.as_ptr(), before);
    }
}
