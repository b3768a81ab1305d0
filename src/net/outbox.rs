//! What a connection has to write, in order, without copying big values.
//!
//! Small replies and requests are copied together into one buffer, so that many of them leave
//! in one system call. A value of [`BIG`] bytes or more is not copied: it is queued as the
//! `Bytes` it already is (the slice of the read buffer it arrived in) and written from there
//! with the rest in one vectored write. A 200 MiB value passing through the proxy so takes
//! 200 MiB of its memory, not twice that.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};

use super::socket::{Socket, Watermark};

/// From this size on, a piece is queued rather than copied.
pub const BIG: usize = 64 * 1024;

/// Pieces handed to one vectored write.
const SLICES: usize = 64;

#[derive(Debug, Default)]
pub struct Outbox {
    /// Whole pieces to go before `tail`: big values, and the small ones copied before them.
    queued: VecDeque<Bytes>,
    queued_len: usize,
    /// Small pieces copied together, after everything in `queued`.
    tail: BytesMut,
    mark: Watermark,
}

impl Outbox {
    pub fn len(&self) -> usize {
        self.queued_len + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.tail.is_empty()
    }

    /// Bytes allocated for what is waiting (CLIENT LIST's `omem` side).
    pub fn capacity(&self) -> usize {
        self.queued_len + self.tail.capacity()
    }

    /// The buffer small pieces are copied into, to encode into it directly.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Copies `bytes` in.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
    }

    /// Adds `bytes`: copied when small, queued as it is when big.
    pub fn put(&mut self, bytes: &Bytes) {
        if bytes.len() < BIG {
            self.tail.extend_from_slice(bytes);
            return;
        }
        if !self.tail.is_empty() {
            let before = self.tail.split().freeze();
            self.queued_len += before.len();
            self.queued.push_back(before);
        }
        self.queued_len += bytes.len();
        self.queued.push_back(bytes.clone());
    }

    /// Writes what the socket takes now, without waiting; returns how much. `WouldBlock` is
    /// `Ok(0)`.
    pub fn write_to(&mut self, stream: &impl Socket) -> io::Result<usize> {
        let written = if self.queued.is_empty() {
            stream.try_write(&self.tail)
        } else {
            let mut slices = [IoSlice::new(&[]); SLICES];
            let mut n = 0;
            for piece in self.queued.iter().take(SLICES - 1) {
                slices[n] = IoSlice::new(piece);
                n += 1;
            }
            // The tail comes after every queued piece: only with all of them.
            if n == self.queued.len() {
                slices[n] = IoSlice::new(&self.tail);
                n += 1;
            }
            stream.try_write_vectored(&slices[..n])
        };
        let mut n = match written {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let total = n;
        while n > 0 {
            let Some(front) = self.queued.front_mut() else {
                self.tail.advance(n);
                break;
            };
            let step = n.min(front.len());
            front.advance(step);
            self.queued_len -= step;
            n -= step;
            if front.is_empty() {
                self.queued.pop_front();
            }
        }
        self.mark.check(&mut self.tail);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_piece_is_queued_not_copied_and_order_is_kept() {
        let mut out = Outbox::default();
        out.extend(b"+a\r\n");
        let big = Bytes::from(vec![b'x'; BIG]);
        out.put(&big);
        out.put(&Bytes::from_static(b"+b\r\n"));
        assert_eq!(out.len(), 8 + BIG);
        // The big piece is the caller's own memory, not a copy.
        assert_eq!(out.queued.len(), 2);
        assert_eq!(out.queued[1].as_ptr(), big.as_ptr());
        assert_eq!(&out.tail[..], b"+b\r\n");
    }

    #[tokio::test]
    async fn what_is_written_comes_out_in_order_through_short_writes() {
        use tokio::io::AsyncReadExt;
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let mut out = Outbox::default();
        let mut want = Vec::new();
        // More pieces than one vectored write takes, big and small in turn.
        for i in 0..(SLICES * 2) {
            let piece = if i % 2 == 0 {
                Bytes::from(vec![b'a' + (i % 26) as u8; BIG + i])
            } else {
                Bytes::from(format!("+{i}\r\n"))
            };
            want.extend_from_slice(&piece);
            out.put(&piece);
        }
        assert_eq!(out.len(), want.len());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        });
        while !out.is_empty() {
            a.writable().await.unwrap();
            out.write_to(&a).unwrap();
        }
        drop(a);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes out of order");
    }
}
