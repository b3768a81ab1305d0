//! Where replies go: a oneshot channel, or a session's inbox.
//!
//! A request forwarded to one shard, the common case by far, is answered through its session's
//! [`Inbox`]: one per session, made once, where a oneshot channel would be allocated, polled and
//! freed for every request. The node connection puts the reply in under the number (ticket) the
//! session gave the request, and wakes the session: a run of replies to one session read
//! together goes in at once ([`Deliveries`]), and a wake already given and not yet taken is not
//! given again, so a batch of replies wakes the session once. The session takes the replies out
//! in the order it gave the tickets, which is the order it owes them to its client. A big reply
//! may arrive as a [`Stream`] of pieces instead (see `backend::stream`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::oneshot;

use super::stream::{self, Feed, Stream};
use super::{BackendError, Reply};

/// What answers a ticket: the whole reply, or the stream its pieces come through.
#[derive(Debug)]
pub enum Arrival {
    Reply(Reply),
    Stream(Stream),
}

/// A session's replies from its node connections, by ticket.
#[derive(Debug, Default)]
pub struct Inbox {
    arrived: Mutex<Vec<(u64, Arrival)>>,
    waker: AtomicWaker,
    /// The session has ended: nobody takes replies any more.
    closed: AtomicBool,
}

impl Inbox {
    fn put(&self, ticket: u64, arrival: Arrival) {
        self.lock().push((ticket, arrival));
        self.waker.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Arrival)>> {
        self.arrived.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request's claim on one reply of an inbox. Dropped unanswered (its connection task ended),
/// it answers with an error, as a dropped oneshot sender does.
#[derive(Debug)]
pub struct Ticket {
    inbox: Arc<Inbox>,
    number: u64,
    answered: bool,
}

impl Ticket {
    /// Which session the ticket is from: the same for all of a session's tickets, and
    /// different from every other session's while it lasts.
    pub(super) fn session(&self) -> usize {
        Arc::as_ptr(&self.inbox) as usize
    }

    fn send(mut self, reply: Reply) {
        self.answered = true;
        self.inbox.put(self.number, Arrival::Reply(reply));
    }

    /// Answers with a stream, and returns the end its pieces are fed into.
    fn stream(mut self) -> Feed {
        self.answered = true;
        let (feed, stream) = stream::stream();
        // A session that has ended takes nothing: its end of the stream is dropped at once,
        // so that the pieces are too.
        if !self.inbox.closed.load(Ordering::Relaxed) {
            self.inbox.put(self.number, Arrival::Stream(stream));
        }
        feed
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.answered {
            self.inbox.put(self.number, Arrival::Reply(Err(ended())));
        }
    }
}

/// The error for a request whose connection task ended without answering it.
pub fn ended() -> BackendError {
    BackendError::Lost {
        node: Arc::from("backend"),
        reason: "the connection task ended".into(),
    }
}

/// Where a request's reply goes.
#[derive(Debug)]
pub enum ReplyTo {
    Channel(oneshot::Sender<Reply>),
    Inbox(Ticket),
}

impl ReplyTo {
    pub fn send(self, reply: Reply) {
        match self {
            ReplyTo::Channel(tx) => {
                let _ = tx.send(reply);
            }
            ReplyTo::Inbox(ticket) => ticket.send(reply),
        }
    }

    /// Answers with a stream of pieces, if the reply goes to an inbox: a oneshot's receiver
    /// takes whole replies only.
    pub fn into_stream(self) -> Result<Feed, ReplyTo> {
        match self {
            ReplyTo::Inbox(ticket) => Ok(ticket.stream()),
            channel => Err(channel),
        }
    }

    /// Nobody waits for the reply any more (the client went away).
    pub fn is_closed(&self) -> bool {
        match self {
            ReplyTo::Channel(tx) => tx.is_closed(),
            ReplyTo::Inbox(ticket) => ticket.inbox.closed.load(Ordering::Relaxed),
        }
    }
}

/// Whole replies on their way to their sessions' inboxes, as a node connection reads them. A
/// run of replies to one session (its pipeline's, read from the node together) is put in with
/// one turn of the inbox's lock and one wake-up, rather than one each. What is gathered goes
/// in at [`Deliveries::flush`], which the connection calls once it has handed out what it read.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// The run's first ticket, answered: the inbox the gathered replies go to is its own (kept
    /// this way, the run takes no reference count of its own on it).
    first: Option<Ticket>,
    replies: Vec<(u64, Arrival)>,
}

impl Deliveries {
    /// Answers `reply_to` with `reply`: at once on a channel, at the next flush in an inbox.
    pub fn send(&mut self, reply_to: ReplyTo, reply: Reply) {
        let mut ticket = match reply_to {
            ReplyTo::Inbox(ticket) => ticket,
            channel => return channel.send(reply),
        };
        ticket.answered = true;
        let number = ticket.number;
        let same = self
            .first
            .as_ref()
            .is_some_and(|first| Arc::ptr_eq(&first.inbox, &ticket.inbox));
        if !same {
            self.flush();
            self.first = Some(ticket);
        }
        self.replies.push((number, Arrival::Reply(reply)));
    }

    /// Puts what was gathered in its inbox, and wakes its session.
    pub fn flush(&mut self) {
        if let Some(first) = self.first.take() {
            first.inbox.lock().append(&mut self.replies);
            first.inbox.waker.wake();
        }
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The session's side of its inbox: gives tickets out, and takes replies in by ticket.
#[derive(Debug)]
pub struct Arrivals {
    inbox: Arc<Inbox>,
    /// The next ticket to give out.
    next: u64,
    /// The oldest ticket not yet taken; `got[i]` is ticket `base + i`'s reply, once arrived.
    base: u64,
    got: VecDeque<Option<Arrival>>,
    /// The inbox's replies are swapped into this, so its lock is held for a swap only.
    scratch: Vec<(u64, Arrival)>,
}

impl Default for Arrivals {
    fn default() -> Self {
        Arrivals {
            inbox: Arc::new(Inbox::default()),
            next: 0,
            base: 0,
            got: VecDeque::new(),
            scratch: Vec::new(),
        }
    }
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.inbox.closed.store(true, Ordering::Relaxed);
        // Streams that came and were not taken stop keeping their pieces.
        self.inbox.lock().clear();
    }
}

impl Arrivals {
    /// A ticket for the next request; its number is what [`Arrivals::poll_take`] is asked for.
    pub fn issue(&mut self) -> (u64, Ticket) {
        let number = self.next;
        self.next += 1;
        let ticket = Ticket {
            inbox: self.inbox.clone(),
            number,
            answered: false,
        };
        (number, ticket)
    }

    /// Ready with ticket `number`'s reply once it has arrived. Tickets must be taken in the
    /// order they were given out; the ones skipped are given up.
    pub fn poll_take(&mut self, number: u64, cx: &mut Context<'_>) -> Poll<Arrival> {
        if let Some(reply) = self.take(number) {
            return Poll::Ready(reply);
        }
        // The waker goes in first: a reply put in after this wakes the session, and one put
        // in before it is collected now. One look at the inbox either way.
        self.inbox.waker.register(cx.waker());
        self.collect();
        match self.take(number) {
            Some(reply) => Poll::Ready(reply),
            None => Poll::Pending,
        }
    }

    fn collect(&mut self) {
        {
            let mut arrived = self.inbox.lock();
            if arrived.is_empty() {
                return;
            }
            std::mem::swap(&mut *arrived, &mut self.scratch);
        }
        for (number, reply) in self.scratch.drain(..) {
            let Some(i) = number.checked_sub(self.base) else {
                // A ticket given up.
                continue;
            };
            let i = i as usize;
            if self.got.len() <= i {
                self.got.resize_with(i + 1, || None);
            }
            self.got[i] = Some(reply);
        }
    }

    fn take(&mut self, number: u64) -> Option<Arrival> {
        let i = number.checked_sub(self.base)? as usize;
        let reply = self.got.get_mut(i)?.take()?;
        if i == 0 {
            self.got.pop_front();
        } else {
            self.got.drain(..=i);
        }
        self.base = number + 1;
        Some(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::task::Waker;

    fn ok(s: &'static str) -> Reply {
        Ok(Bytes::from_static(s.as_bytes()))
    }

    fn whole(arrival: Poll<Arrival>) -> Option<Reply> {
        match arrival {
            Poll::Ready(Arrival::Reply(reply)) => Some(reply),
            _ => None,
        }
    }

    #[test]
    fn replies_are_taken_by_ticket_whatever_order_they_arrive_in() {
        let mut arrivals = Arrivals::default();
        let mut cx = Context::from_waker(Waker::noop());
        let (a, ta) = arrivals.issue();
        let (b, tb) = arrivals.issue();
        let (c, tc) = arrivals.issue();
        assert!(arrivals.poll_take(a, &mut cx).is_pending());
        // Replies from two connections: b's first.
        ReplyTo::Inbox(tb).send(ok("b"));
        ReplyTo::Inbox(ta).send(ok("a"));
        assert_eq!(whole(arrivals.poll_take(a, &mut cx)), Some(ok("a")));
        assert_eq!(whole(arrivals.poll_take(b, &mut cx)), Some(ok("b")));
        assert!(arrivals.poll_take(c, &mut cx).is_pending());
        // A ticket dropped unanswered answers with an error.
        drop(tc);
        let Some(Err(e)) = whole(arrivals.poll_take(c, &mut cx)) else {
            panic!("no error for a dropped ticket");
        };
        assert!(e.to_string().contains("the connection task ended"), "{e}");
        assert!(arrivals.got.is_empty());
    }

    #[test]
    fn gathered_replies_go_in_when_the_session_changes_or_at_the_flush() {
        let (mut a, mut b) = (Arrivals::default(), Arrivals::default());
        let mut cx = Context::from_waker(Waker::noop());
        let (a1, ta1) = a.issue();
        let (a2, ta2) = a.issue();
        let (a3, ta3) = a.issue();
        let (b1, tb1) = b.issue();
        let mut out = Deliveries::default();
        out.send(ReplyTo::Inbox(ta1), ok("a1"));
        out.send(ReplyTo::Inbox(ta2), ok("a2"));
        assert!(
            a.poll_take(a1, &mut cx).is_pending(),
            "gathered, not yet in"
        );
        // A reply to another session puts the first one's run in.
        out.send(ReplyTo::Inbox(tb1), ok("b1"));
        assert_eq!(whole(a.poll_take(a1, &mut cx)), Some(ok("a1")));
        assert_eq!(whole(a.poll_take(a2, &mut cx)), Some(ok("a2")));
        assert!(b.poll_take(b1, &mut cx).is_pending());
        // A channel is answered at once, and leaves the run gathered.
        let (tx, mut rx) = oneshot::channel();
        out.send(ReplyTo::Channel(tx), ok("c"));
        assert_eq!(rx.try_recv().ok(), Some(ok("c")));
        assert!(b.poll_take(b1, &mut cx).is_pending());
        out.send(ReplyTo::Inbox(ta3), ok("a3"));
        assert_eq!(whole(b.poll_take(b1, &mut cx)), Some(ok("b1")));
        assert!(a.poll_take(a3, &mut cx).is_pending());
        out.flush();
        assert_eq!(whole(a.poll_take(a3, &mut cx)), Some(ok("a3")));
        // The tickets were answered once: nothing more (no error for a dropped ticket) came.
        for arrivals in [&mut a, &mut b] {
            arrivals.collect();
            assert!(arrivals.got.is_empty() && arrivals.scratch.is_empty());
        }
    }

    #[test]
    fn a_reply_wakes_the_session_and_a_closed_session_is_seen() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut arrivals = Arrivals::default();
        let (a, ta) = arrivals.issue();
        let (_, tb) = arrivals.issue();
        assert!(arrivals.poll_take(a, &mut cx).is_pending());
        let (ta, tb) = (ReplyTo::Inbox(ta), ReplyTo::Inbox(tb));
        assert!(!ta.is_closed());
        // Two replies in a row wake the session once.
        ta.send(ok("a"));
        tb.send(ok("b"));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        let (_, tc) = arrivals.issue();
        let tc = ReplyTo::Inbox(tc);
        drop(arrivals);
        assert!(tc.is_closed());
    }
}
