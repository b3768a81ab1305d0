//! The replies a client is owed, oldest first, and the barrier that makes a request run alone.
//!
//! Each request read becomes an [`Owed`] slot at the back of the FIFO; replies leave from the
//! front only, so they go back in request order whatever shard answers first.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::slot::Slot;
use super::state::Session;
use crate::backend::{Arrivals, BackendError, Taken};
use crate::command::{CommandId, Local, Plan, TxCommand};
use crate::net::outbox::Outbox;
use crate::resp::Request;
use crate::telemetry::Telemetry;

/// A planned request, with the flags that say whether it writes (WAIT asks the shards written
/// to) or only reads.
pub(super) struct Planned {
    pub(super) plan: Plan,
    /// Redis's flags for the command (`spec::flags`).
    pub(super) flags: u32,
    /// What the command is counted as, and when it was read.
    pub(super) cmd: CommandId,
    pub(super) since: Instant,
}

/// A reply the client is owed, and the command it is counted under once it is ready
/// (pub/sub messages and protocol errors are not commands).
struct Owed {
    slot: Slot,
    counted: Option<Counted>,
}

/// What a reply is counted under: the command, when it was read, and whether it was refused
/// before it ran.
#[derive(Clone, Copy)]
pub(super) struct Counted {
    cmd: CommandId,
    since: Instant,
    rejected: bool,
}

impl Counted {
    pub(super) fn of(planned: &Planned) -> Counted {
        Counted {
            cmd: planned.cmd,
            since: planned.since,
            rejected: matches!(planned.plan, Plan::Error(_)),
        }
    }

    /// Counts the reply `bytes`, given at `now`.
    fn record(self, telemetry: &Telemetry, now: Instant, bytes: &[u8]) {
        let error = matches!(bytes.first(), Some(b'-' | b'!')).then_some(bytes);
        // Refused before running: by the plan, or before authentication or by a user's
        // permissions.
        let rejected = self.rejected
            || error.is_some_and(|e| e.starts_with(b"-NOAUTH") || e.starts_with(b"-NOPERM"));
        let took = now.saturating_duration_since(self.since);
        telemetry.record(self.cmd, took, error, rejected);
    }
}

/// Set after a request that must finish before any later one starts (HELLO switching the
/// protocol, WATCH, a blocking command, SUBSCRIBE; see [`runs_alone`]): nothing is dispatched
/// until every request so far is answered. Such a request also waits for every earlier one
/// before being dispatched itself: it is `held` meanwhile.
pub(super) enum Barrier {
    Open,
    Draining {
        held: Option<Box<(Request, Planned)>>,
    },
}

/// The FIFO of owed replies.
pub(super) struct Pipeline {
    owed: VecDeque<Owed>,
    /// Bytes of pub/sub messages waiting in `owed`.
    message_bytes: usize,
    pub(super) barrier: Barrier,
}

impl Pipeline {
    pub(super) fn new() -> Pipeline {
        Pipeline {
            owed: VecDeque::new(),
            message_bytes: 0,
            barrier: Barrier::Open,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.owed.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.owed.is_empty()
    }

    pub(super) fn message_bytes(&self) -> usize {
        self.message_bytes
    }

    /// The reply to a command, counted under it once ready.
    pub(super) fn push(&mut self, slot: Slot, counted: Counted) {
        self.owed.push_back(Owed {
            slot,
            counted: Some(counted),
        });
    }

    /// A reply that is no command's (a protocol error).
    pub(super) fn push_uncounted(&mut self, slot: Slot) {
        self.owed.push_back(Owed {
            slot,
            counted: None,
        });
    }

    /// The reply owed under ticket `number` counts under no command after all (see
    /// `upload::Pumped::Malformed`).
    pub(super) fn uncount(&mut self, number: u64) {
        if let Some(owed) = self
            .owed
            .iter_mut()
            .find(|o| matches!(o.slot, Slot::Ticket(n) if n == number))
        {
            owed.counted = None;
        }
    }

    /// A pub/sub message that must wait behind a subscription confirmation.
    pub(super) fn push_message(&mut self, frame: bytes::Bytes) {
        self.message_bytes += frame.len();
        self.push_uncounted(Slot::Message(frame));
    }

    /// Whether the front reply is a subscription waiting for its shards to confirm it.
    pub(super) fn front_is_gated(&self) -> bool {
        matches!(self.owed.front().map(|o| &o.slot), Some(Slot::Gated { .. }))
    }

    /// Ready when the front reply is.
    pub(super) fn poll_front(&mut self, arrivals: &mut Arrivals, cx: &mut Context<'_>) -> Poll<()> {
        self.owed
            .front_mut()
            .map_or(Poll::Pending, |o| o.slot.poll_ready(arrivals, cx))
    }

    pub(super) fn is_draining(&self) -> bool {
        matches!(self.barrier, Barrier::Draining { .. })
    }

    /// Forgets the request waiting to run alone: it is never answered, the session closes.
    pub(super) fn drop_held(&mut self) {
        if let Barrier::Draining { held } = &mut self.barrier {
            *held = None;
        }
    }

    pub(super) fn holds(&self) -> bool {
        matches!(self.barrier, Barrier::Draining { held: Some(_) })
    }

    /// Moves the replies at the front that are ready into `out`, up to `max_output` bytes;
    /// returns when, if it moved a reply to a command. An error is a streamed reply that broke
    /// off after part of it was moved: the client's connection must close.
    pub(super) fn move_ready(
        &mut self,
        telemetry: &Telemetry,
        arrivals: &mut Arrivals,
        out: &mut Outbox,
        max_output: usize,
    ) -> Result<Option<Instant>, BackendError> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut now = None;
        while out.len() < max_output {
            if self.poll_front(arrivals, &mut cx).is_pending() {
                return Ok(now);
            }
            if let Some(Owed {
                slot: Slot::Streaming(stream),
                ..
            }) = self.owed.front()
            {
                let taken = stream.take(|piece| {
                    out.put(piece);
                    out.len() < max_output
                });
                match taken {
                    Taken::More => return Ok(now),
                    Taken::Broken(e) => return Err(e),
                    Taken::Done => {}
                }
            }
            let Some(owed) = self.owed.pop_front() else {
                return Ok(now);
            };
            match owed.slot {
                Slot::Streaming(_) => {
                    if let Some(counted) = owed.counted {
                        let now = *now.get_or_insert_with(Instant::now);
                        // A reply long enough to stream is no error.
                        counted.record(telemetry, now, b"$");
                    }
                }
                Slot::Ready(bytes) => {
                    if let Some(counted) = owed.counted {
                        let now = *now.get_or_insert_with(Instant::now);
                        counted.record(telemetry, now, &bytes);
                    }
                    out.put(&bytes);
                }
                Slot::Message(bytes) => {
                    self.message_bytes -= bytes.len();
                    out.put(&bytes);
                }
                _ => {}
            }
        }
        Ok(now)
    }
}

/// Whether a request must run alone: after every earlier request is answered, and before any
/// later one starts.
pub(super) fn runs_alone(plan: &Plan, session: &Session) -> bool {
    let in_multi = session.tx.is_some();
    // After a failed AUTH, nothing more is read until its delay has passed (see
    // `auth_outcome`), and the replies so far go out first.
    if session.auth_failures > 0 && session.auth_penalty_until > tokio::time::Instant::now() {
        return true;
    }
    match plan {
        // RESP2 and RESP3 requests use different backend connections, so a request after
        // HELLO could overtake one before it.
        Plan::Local(Local::Hello | Local::Reset) => true,
        // The watch and the commands around it run on different connections; Redis runs
        // them in order, and so must the proxy for WATCH conflicts to mean the same.
        Plan::Watch(_) => !in_multi,
        Plan::Transaction(TxCommand::Exec | TxCommand::Discard) => session.pinned.is_some(),
        // They block the client's connection on Redis: nothing after them runs before them.
        Plan::Blocking { .. } | Plan::WaitReplicas { .. } => !in_multi,
        // A message published after a confirmation must reach the client.
        Plan::PubSub(_) => !in_multi,
        _ => false,
    }
}
