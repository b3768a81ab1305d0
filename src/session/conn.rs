//! The client's socket with its two buffers: what was read and not yet parsed, and what is
//! to be written.

use std::io;

use bytes::BytesMut;

use crate::net::outbox::Outbox;
use crate::net::socket::{Reader, Socket, Watermark};
use crate::proxy::clients::Buffers;
use crate::telemetry::Telemetry;

/// How long a closing connection keeps discarding input so its last reply is not lost.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct ClientConn<S> {
    pub(super) stream: S,
    reader: Reader,
    /// Read, not yet parsed.
    pub(super) inbuf: BytesMut,
    /// Replies in order, not yet written.
    pub(super) out: Outbox,
    /// The client closed its side: nothing more to read, so no lingering needed.
    peer_closed: bool,
    in_mark: Watermark,
}

/// What a read brought.
pub(super) enum Read {
    /// Bytes, now in `inbuf`.
    Data,
    /// Nothing after all (the readiness was stale).
    Nothing,
    /// The client closed its side.
    Closed,
}

impl<S: Socket> ClientConn<S> {
    pub(super) fn new(stream: S) -> ClientConn<S> {
        ClientConn {
            stream,
            reader: Reader::default(),
            inbuf: BytesMut::new(),
            out: Outbox::default(),
            peer_closed: false,
            in_mark: Watermark::default(),
        }
    }

    /// Writes what the socket takes of `out` now, without waiting. An error means the
    /// connection is broken.
    pub(super) fn flush(&mut self, telemetry: &Telemetry) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let n = self.out.write_to(&self.stream)?;
        telemetry.count_output(n);
        Ok(())
    }

    /// Reads what has arrived into `inbuf`, without waiting. An error means the connection is
    /// broken.
    pub(super) fn read(&mut self, telemetry: &Telemetry) -> io::Result<Read> {
        match self.reader.try_read(&self.stream, &mut self.inbuf) {
            Ok(0) => Ok(Read::Closed),
            Ok(n) => {
                telemetry.count_input(n);
                Ok(Read::Data)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::Nothing),
            Err(e) => Err(e),
        }
    }

    /// Gives back what a big request made `inbuf` grow to, once it is parsed.
    pub(super) fn parsed(&mut self) {
        self.in_mark.check(&mut self.inbuf);
    }

    pub(super) fn peer_closed(&mut self) {
        self.peer_closed = true;
    }

    /// The buffers as CLIENT LIST shows them, with `owed` replies of which `message_bytes`
    /// are pub/sub messages.
    pub(super) fn buffers(&self, owed: usize, message_bytes: usize) -> Buffers {
        Buffers {
            qbuf: self.inbuf.len(),
            qbuf_free: self.inbuf.capacity() - self.inbuf.len(),
            multi_mem: 0,
            obl: self.out.len(),
            out_capacity: self.out.capacity(),
            oll: owed,
            omem: message_bytes,
            writing: !self.out.is_empty(),
        }
    }

    /// Closes after the last reply (QUIT, a protocol error) without losing it: closing a
    /// socket with unread input makes the kernel send a reset, which can destroy the reply
    /// still in flight. So send FIN first, then discard what the client still sends, for a
    /// bounded time. A client that closed first needs none of this.
    pub(super) async fn close(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.peer_closed || self.stream.shutdown().await.is_err() {
            return;
        }
        let mut sink = [0u8; 16 * 1024];
        let _ = tokio::time::timeout(LINGER, async {
            while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}
