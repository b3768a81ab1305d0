//! A big reply passed on as it arrives.
//!
//! Once a node connection holds [`BIG`](crate::net::outbox::BIG) bytes of a reply that a
//! session's inbox waits for, it stops gathering the reply: it hands the session a [`Stream`]
//! in its place and from then on feeds it each piece read, as the piece arrives. The session
//! writes the pieces to its client as they come, and sends nothing after them until the reply
//! has ended, so replies keep their order. The pieces are slices of the connection's read buffer;
//! each is freed once written, so a value the client reads as fast as the node sends it never
//! sits whole in the proxy.
//!
//! A reply that breaks off after its first piece was written cannot be answered with an error:
//! the client already has part of the reply, and anything after it would be read as the rest.
//! The session then closes the client's connection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use super::BackendError;

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    waker: AtomicWaker,
    /// The session dropped its end: the pieces still coming are dropped, not kept.
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    pieces: VecDeque<Bytes>,
    end: Option<Result<(), BackendError>>,
}

/// The connection's end: where the pieces go. Dropped before [`Feed::finish`], it ends the
/// stream with an error.
#[derive(Debug)]
pub struct Feed {
    shared: Arc<Shared>,
    ended: bool,
}

/// The session's end: the pieces of one reply, in order.
#[derive(Debug)]
pub struct Stream {
    shared: Arc<Shared>,
}

/// What a session takes from a stream at once.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// More pieces are to come.
    More,
    /// The reply is complete.
    Done,
    /// The reply broke off: the client's connection must close.
    Broken(BackendError),
}

/// A new stream, as its two ends.
pub fn stream() -> (Feed, Stream) {
    let shared = Arc::new(Shared::default());
    (
        Feed {
            shared: shared.clone(),
            ended: false,
        },
        Stream { shared },
    )
}

impl Feed {
    /// Passes `piece` on, and wakes the session.
    pub fn push(&self, piece: Bytes) {
        if self.shared.closed.load(Ordering::Relaxed) || piece.is_empty() {
            return;
        }
        self.lock().pieces.push_back(piece);
        self.shared.waker.wake();
    }

    /// Passes the reply's last piece on: the stream is complete.
    pub fn finish(mut self, last: Bytes) {
        self.push(last);
        self.end(Ok(()));
    }

    /// Ends the stream with `error`: the connection failed before the reply was complete.
    pub fn fail(mut self, error: BackendError) {
        self.end(Err(error));
    }

    fn end(&mut self, end: Result<(), BackendError>) {
        self.ended = true;
        self.lock().end = Some(end);
        self.shared.waker.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if !self.ended {
            self.end(Err(super::inbox_ended()));
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        // What came already goes now, not when the connection's end is dropped.
        self.lock().pieces.clear();
    }
}

impl Stream {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready when a piece or the end has come.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.has_news() {
            return Poll::Ready(());
        }
        self.shared.waker.register(cx.waker());
        // One that came before the waker was in place would wake no one.
        match self.has_news() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    fn has_news(&self) -> bool {
        let state = self.lock();
        !state.pieces.is_empty() || state.end.is_some()
    }

    /// Hands the pieces that have come to `put`, until it says there is no room for more;
    /// says whether the reply is complete.
    pub fn take(&self, mut put: impl FnMut(&Bytes) -> bool) -> Taken {
        let mut state = self.lock();
        while let Some(piece) = state.pieces.pop_front() {
            if !put(&piece) {
                break;
            }
        }
        if !state.pieces.is_empty() {
            return Taken::More;
        }
        match &state.end {
            None => Taken::More,
            Some(Ok(())) => Taken::Done,
            Some(Err(e)) => Taken::Broken(e.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn taken(stream: &Stream) -> (Vec<u8>, Taken) {
        let mut got = Vec::new();
        let t = stream.take(|p| {
            got.extend_from_slice(p);
            true
        });
        (got, t)
    }

    #[test]
    fn pieces_come_out_in_order_and_the_end_is_told() {
        let (feed, stream) = stream();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(stream.poll_ready(&mut cx).is_pending());
        feed.push(Bytes::from_static(b"$6\r\nab"));
        feed.push(Bytes::from_static(b"cd"));
        assert!(stream.poll_ready(&mut cx).is_ready());
        assert_eq!(taken(&stream), (b"$6\r\nabcd".to_vec(), Taken::More));
        assert!(stream.poll_ready(&mut cx).is_pending());
        feed.finish(Bytes::from_static(b"ef\r\n"));
        assert_eq!(taken(&stream), (b"ef\r\n".to_vec(), Taken::Done));
    }

    #[test]
    fn a_full_output_leaves_pieces_in_the_stream() {
        let (feed, stream) = stream();
        feed.push(Bytes::from_static(b"one"));
        feed.push(Bytes::from_static(b"two"));
        feed.finish(Bytes::new());
        let mut got = Vec::new();
        let full = |p: &Bytes| {
            got.extend_from_slice(p);
            false
        };
        assert_eq!(stream.take(full), Taken::More);
        assert_eq!(got, b"one");
        assert_eq!(taken(&stream), (b"two".to_vec(), Taken::Done));
    }

    #[test]
    fn a_feed_dropped_midway_breaks_the_stream_and_a_dropped_stream_takes_no_more() {
        let (feed, stream) = stream();
        feed.push(Bytes::from_static(b"$9\r\npart"));
        drop(feed);
        let (got, t) = taken(&stream);
        assert_eq!(got, b"$9\r\npart");
        assert!(matches!(t, Taken::Broken(_)), "{t:?}");

        let (feed, gone) = super::stream();
        let shared = gone.shared.clone();
        drop(gone);
        feed.push(Bytes::from_static(b"kept by nobody"));
        assert!(shared.state.lock().unwrap().pieces.is_empty());
    }
}
