//! SCAN across shards: one call walks on to the next shard while a page is short.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::slot::{self, Cursors, Slot};
use super::state::Session;
use crate::backend::{BackendError, Reply};
use crate::proxy::Proxy;
use crate::resp::{encode, Proto, Request};
use crate::topology::{failed, Topology};

/// SCAN cursor [MATCH p] [COUNT n] [TYPE t]: from the shard the cursor names, going on to the
/// next shards in the same call while the shards finish with fewer than COUNT keys (10 unless
/// given), so a page spans shard boundaries; `0` comes back once the last shard is done. The
/// first step is sent here, in request order (a SCAN after a SET on the same connection sees
/// it); the steps on further shards follow when it answers.
pub(super) async fn scan(proxy: &Proxy, session: &Session, req: &Request) -> Slot {
    let args = req.args();
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return Slot::error("ERR invalid cursor");
    };
    let count = args[2..]
        .chunks(2)
        .find(|w| w.len() == 2 && w[0].eq_ignore_ascii_case(b"count"))
        .and_then(|w| crate::resp::parse_i64(&w[1]))
        .filter(|&n| n > 0)
        .map_or(10, |n| n as usize);
    let topology = proxy.topology();
    let mut step = ScanStep {
        proto: session.proto,
        lane: session.lane,
        options: args[2..].to_vec(),
        cursors: Cursors {
            shards: topology.shards.len(),
            generation: topology.generation,
        },
        count,
    };
    let Ok((shard, cursor)) = step.cursors.decode(cursor) else {
        return Slot::error(
            "ERR invalid cursor: the shards changed since it was handed out (a reload); start the scan again from 0",
        );
    };
    let first = step.send(&topology, shard, cursor).await;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(step.collect(&topology, shard, first).await);
    });
    Slot::Waiting(rx)
}

/// One SCAN call across shards.
struct ScanStep {
    proto: Proto,
    /// The session's lane, picking its connection.
    lane: u64,
    /// MATCH, COUNT, TYPE as the client gave them.
    options: Vec<Bytes>,
    cursors: Cursors,
    count: usize,
}

impl ScanStep {
    /// Sends `SCAN cursor options...` to `shard`.
    async fn send(
        &self,
        topology: &Topology,
        shard: usize,
        cursor: u64,
    ) -> oneshot::Receiver<Reply> {
        let position = itoa::Buffer::new().format(cursor).to_owned();
        let mut request = BytesMut::new();
        let all: Vec<&[u8]> = [&b"SCAN"[..], position.as_bytes()]
            .into_iter()
            .chain(self.options.iter().map(|a| &a[..]))
            .collect();
        encode::command(&mut request, all.into_iter());
        match topology.shards[shard].writer(self.proto, self.lane) {
            Ok(conn) => conn.send(request.freeze()).await,
            Err(e) => failed(e),
        }
    }

    /// The client's page: `first` (the reply of `shard`), then further shards while they
    /// finish short of COUNT; at most one step per shard.
    async fn collect(
        &mut self,
        topology: &Topology,
        mut shard: usize,
        first: oneshot::Receiver<Reply>,
    ) -> Reply {
        let mut keys = Vec::new();
        let mut rx = first;
        loop {
            let frame = rx.await.unwrap_or_else(|_| {
                Err(BackendError::Lost {
                    node: Arc::from(topology.shards[shard].name.to_string()),
                    reason: "the connection task ended".into(),
                })
            })?;
            if crate::resp::reply::is_error(&frame) {
                return Ok(frame);
            }
            let Some((next, page)) = slot::scan_page(&frame) else {
                return Ok(encode::error_bytes(
                    "ERR unexpected SCAN reply from a shard",
                ));
            };
            keys.extend(page);
            let shards = self.cursors.shards;
            let cursor = if next != 0 {
                self.cursors.encode(next, shard)
            } else if shard + 1 == shards {
                Some(0)
            } else if keys.len() >= self.count {
                self.cursors.encode(0, shard + 1)
            } else {
                shard += 1;
                rx = self.send(topology, shard, 0).await;
                continue;
            };
            return Ok(match cursor {
                Some(cursor) => slot::scan_reply(cursor, &keys),
                None => encode::error_bytes(
                    "ERR shard SCAN cursor too large to combine with a shard number",
                ),
            });
        }
    }
}
