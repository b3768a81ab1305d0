//! MULTI / EXEC / DISCARD and WATCH, with the semantics Redis Cluster users know: everything a
//! transaction touches lives on one shard.
//!
//! Between MULTI and EXEC the proxy queues the commands itself and answers `+QUEUED`, after the
//! checks Redis makes when queueing (unknown command, arity) plus the proxy's own (every key on
//! one shard, else `-CROSSSLOT`). A queueing error marks the transaction, and EXEC then answers
//! `-EXECABORT` as Redis does. EXEC sends `MULTI`, the queued commands and `EXEC` to the shard
//! as one contiguous write, so nothing interleaves, and the client gets EXEC's reply.
//!
//! WATCH pins the session to a dedicated connection to its keys' shard, since the watch lives
//! on the connection; the transaction then runs on that connection, and EXEC, DISCARD or
//! UNWATCH unpin it (closing that connection drops the watch).

use bytes::{Bytes, BytesMut};

use crate::backend::NodeConn;
use crate::command::CROSSSLOT;
use crate::resp::encode;

pub const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// Commands queued since MULTI.
#[derive(Default)]
pub struct Transaction {
    /// The shard every keyed command so far belongs to.
    pub shard: Option<usize>,
    queued: BytesMut,
    count: u32,
    /// A command failed to queue: EXEC will abort.
    pub dirty: bool,
}

/// A dedicated connection holding this session's WATCH.
pub struct Pinned {
    pub shard: usize,
    pub conn: NodeConn,
}

impl Transaction {
    /// Queues `request` for `shard` (`None`: keyless, runs wherever the others do). The reply
    /// is `+QUEUED`, or the error that marks the transaction. The queue is held in the proxy,
    /// so it counts against `max_queued` bytes (the client's query buffer limit).
    pub fn queue(
        &mut self,
        request: &Bytes,
        shard: Option<usize>,
        watched: Option<usize>,
        max_queued: usize,
    ) -> Bytes {
        if self.queued.len() + request.len() > max_queued {
            return self.fail(&format!(
                "ERR shardis: transaction too large (more than {max_queued} bytes queued; limits.max_query_buffer)"
            ));
        }
        if let Some(shard) = shard {
            let fixed = self.shard.or(watched);
            if fixed.is_some_and(|s| s != shard) {
                return self.fail(CROSSSLOT);
            }
            self.shard = Some(shard);
        }
        self.queued.extend_from_slice(request);
        self.count += 1;
        Bytes::from_static(b"+QUEUED\r\n")
    }

    /// Commands queued so far.
    /// Bytes of the commands queued so far.
    pub fn queued_bytes(&self) -> usize {
        self.queued.len()
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    /// Marks the transaction failed; the reply is `msg`.
    pub fn fail(&mut self, msg: &str) -> Bytes {
        self.dirty = true;
        encode::error_bytes(msg)
    }

    /// `MULTI`, the queued commands and `EXEC` as one write, and how many replies precede
    /// EXEC's.
    pub fn batch(self) -> (Bytes, u32) {
        let mut out = BytesMut::with_capacity(self.queued.len() + 32);
        out.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
        out.extend_from_slice(&self.queued);
        out.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
        (out.freeze(), self.count + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_transaction_share_a_shard() {
        let req = Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let mut tx = Transaction::default();
        assert_eq!(&tx.queue(&req, None, None, 1 << 20)[..], b"+QUEUED\r\n");
        assert_eq!(&tx.queue(&req, Some(1), None, 1 << 20)[..], b"+QUEUED\r\n");
        assert!(!tx.dirty);
        assert!(tx
            .queue(&req, Some(2), None, 1 << 20)
            .starts_with(b"-CROSSSLOT"));
        assert!(tx.dirty);
        let (batch, skip) = tx.batch();
        assert_eq!(skip, 3);
        assert!(batch.starts_with(b"*1\r\n$5\r\nMULTI\r\n*2\r\n$3\r\nGET"));
        assert!(batch.ends_with(b"*1\r\n$4\r\nEXEC\r\n"));
        // A WATCH fixes the shard before any command does.
        let mut tx = Transaction::default();
        assert!(tx
            .queue(&req, Some(0), Some(1), 1 << 20)
            .starts_with(b"-CROSSSLOT"));
        // The queue is bounded.
        let mut tx = Transaction::default();
        assert_eq!(&tx.queue(&req, None, None, 30)[..], b"+QUEUED\r\n");
        assert!(tx
            .queue(&req, None, None, 30)
            .starts_with(b"-ERR shardis: transaction too large"));
        assert!(tx.dirty);
    }
}
