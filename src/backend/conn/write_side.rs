//! The write side of a shared node connection, which the sessions of its worker add their
//! plain requests to themselves.
//!
//! A request handed to the connection's task through its channel costs a send, a wake-up of
//! the task, and a turn of the task's loop to take it off the channel and copy it into the
//! write buffer. A [`WriteSide`] is that write buffer and the FIFO of waiters, behind a lock
//! the session and the task each take in turn on their one thread: the session copies its
//! request in and queues its waiter itself. When one client sends one request at a time and
//! nothing else is in flight, it also writes the request to the node at once; the task then
//! runs once per request, for the reply, instead of twice. When many come together, the first
//! one wakes the task, which lets the other sessions add theirs before it writes them all in
//! one system call, as it did with the requests it took off its channel.
//!
//! A session's requests to one node keep their order: the write side takes a request only
//! while the connection's channel is empty (see [`WriteSide::offer`]), and the task adds what
//! it takes off the channel to it at once, so nothing the session sent before through the
//! channel is overtaken. That needs the session and the connection's task on one thread, as
//! each worker's single-threaded runtime has them: the channel frees its room when the task
//! takes requests off it, before the task adds them here, and a session on another thread
//! could add its next request in between.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use super::{Due, Tap, Waiter};
use crate::backend::{BackendError, Gate, NodeStats, ReplyTo, Ticket};
use crate::net::outbox::Outbox;
use crate::net::socket::Socket;

/// Nothing more is added, by the sessions or from the channel, while this much waits to be
/// written: a node that reads slowly leaves the requests in the channel, whose senders then
/// wait (a big request passed on as it arrives, see `session::upload`, so holds this, a batch
/// and its queue at most).
pub(super) const WRITE_AHEAD: usize = 1 << 20;

/// A connection's socket, as the sessions write to it.
pub(super) trait Out: Send + Sync {
    fn write_out(&self, wbuf: &mut Outbox) -> io::Result<usize>;
}

impl<S: Socket + Sync> Out for S {
    fn write_out(&self, wbuf: &mut Outbox) -> io::Result<usize> {
        wbuf.write_to(self)
    }
}

/// What the connection's task and the sessions share (see the module's notes).
pub(in crate::backend) struct WriteSide {
    state: Mutex<WriteState>,
    /// Sessions add requests here: a shared connection's. A dedicated connection's, or
    /// a mirror shard's (whose writes are copied by its task), takes none.
    takes: bool,
    /// The task, woken when sessions added requests it must write or time.
    waker: AtomicWaker,
    woken: AtomicBool,
    gate: Arc<Gate>,
    stats: Arc<NodeStats>,
    label: Arc<str>,
}

pub(super) struct WriteState {
    /// The socket, while the connection is up.
    pub(super) out: Option<Arc<dyn Out>>,
    pub(super) wbuf: Outbox,
    /// Who waits for each reply to come, in the order the requests were written.
    pub(super) pending: VecDeque<Waiter>,
    /// Requests added since the last write.
    unwritten: usize,
    /// Waiters the sessions added since the last write, which it times ([`Due::AfterWrite`]).
    untimed: usize,
    /// `backend.timeout`, which they are timed by.
    timeout: Duration,
    /// The last write carried one request: requests come one at a time.
    pub(super) alone: bool,
    /// The session that added the last request ([`Ticket::session`]); 0 when the task did.
    last: usize,
    /// The task's timer runs: a request added now is timed without waking the task.
    pub(super) ticking: bool,
}

impl WriteSide {
    pub(super) fn new(
        takes: bool,
        gate: Arc<Gate>,
        stats: Arc<NodeStats>,
        label: Arc<str>,
        timeout: Duration,
    ) -> WriteSide {
        WriteSide {
            takes,
            state: Mutex::new(WriteState {
                out: None,
                wbuf: Outbox::default(),
                pending: VecDeque::new(),
                unwritten: 0,
                untimed: 0,
                timeout,
                alone: false,
                last: 0,
                ticking: false,
            }),
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            gate,
            stats,
            label,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a plain request (no replica acknowledgements, nothing to copy), answered through
    /// `ticket`, and writes it at once when one client sends one request at a time. Gives it back
    /// when it does not take requests now: the connection is not up, its channel holds
    /// requests (`channel_empty` false), or enough waits to be written.
    pub(in crate::backend) fn offer(
        &self,
        bytes: Bytes,
        ticket: Ticket,
        channel_empty: bool,
    ) -> Result<(), (Bytes, Ticket)> {
        if !self.takes || !channel_empty {
            return Err((bytes, ticket));
        }
        let mut w = self.lock();
        if w.out.is_none() || w.wbuf.len() >= WRITE_AHEAD {
            return Err((bytes, ticket));
        }
        let session = ticket.session();
        let reply = ReplyTo::Inbox(ticket);
        let Some(gate) = self.gate.admit() else {
            drop(w);
            self.refuse(reply);
            return Ok(());
        };
        // One client's requests, one at a time: nothing else in flight, the last write carried
        // one request, and the request before this one was the same session's. With many
        // clients the next request to the node is, nearly always, another session's, and it
        // joins the task's next write.
        let one_at_a_time =
            w.alone && w.last == session && w.pending.is_empty() && w.wbuf.is_empty();
        w.last = session;
        w.wbuf.put(&bytes);
        w.pending.push_back(Waiter::Client {
            reply,
            due: Due::AfterWrite,
            skip: 0,
            ack: 0,
            tap: Tap::None,
            gate,
        });
        w.unwritten += 1;
        w.untimed += 1;
        let wake = match one_at_a_time {
            // A failed write is left to the task: it writes again, fails, and fails what is
            // in flight.
            true => w.flush().is_err() || !w.wbuf.is_empty() || !w.ticking,
            false => true,
        };
        drop(w);
        if wake {
            self.wake();
        }
        Ok(())
    }

    /// Answers a request the node's closed gate keeps from being written (see [`Gate`]).
    pub(super) fn refuse(&self, reply: ReplyTo) {
        self.stats.count(true);
        reply.send(Err(BackendError::Unavailable {
            node: self.label.clone(),
            reason: "it is no longer the shard's primary".into(),
        }));
    }

    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once sessions have added requests since the last time it was.
    pub(super) fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        // The waker goes in first: a wake after it is seen, one before it is read now.
        self.waker.register(cx.waker());
        match self.woken.swap(false, Ordering::AcqRel) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}

impl WriteState {
    /// Writes what the socket takes now, and notes whether this write carried one request.
    pub(super) fn flush(&mut self) -> io::Result<usize> {
        let Some(out) = &self.out else {
            return Ok(0);
        };
        if self.unwritten > 0 {
            self.alone = self.unwritten == 1;
            self.unwritten = 0;
        }
        if self.untimed > 0 {
            // The sessions' waiters are among the newest, since the last write.
            let at = Due::At(Instant::now() + self.timeout);
            for waiter in self.pending.iter_mut().rev() {
                if let Waiter::Client {
                    due: due @ Due::AfterWrite,
                    ..
                } = waiter
                {
                    *due = at;
                    self.untimed -= 1;
                    if self.untimed == 0 {
                        break;
                    }
                }
            }
        }
        out.write_out(&mut self.wbuf)
    }

    /// Counts a request the task added, for [`WriteState::flush`]'s tally.
    pub(super) fn added(&mut self) {
        self.unwritten += 1;
        self.last = 0;
    }

    /// The connection is lost: it takes no more requests, and what was in flight or waiting
    /// to be written is handed back to be failed.
    pub(super) fn close(&mut self) -> VecDeque<Waiter> {
        self.out = None;
        self.wbuf = Outbox::default();
        self.unwritten = 0;
        self.untimed = 0;
        self.ticking = false;
        std::mem::take(&mut self.pending)
    }
}
