//! Carrying out a lock command on its shard's primary.
//!
//! The script is queued on the client's own connection to the primary before the next request
//! of the client is, so a client's lock commands and its other commands run in the order it
//! sent them. What comes after the reply (reading the script's answer, undoing a grant the
//! replicas did not confirm) runs in a task of its own, and the client's reply slot waits for
//! it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::scripts;
use crate::backend::{BackendError, NodeConn, Reply, Wait};
use crate::command::lock::{FenceToken, LockCommand, LockOp, EPOCH_KEY, STATE_KEY};
use crate::resp::{encode, reply, Proto, Value};
use crate::topology::{failed, Shard};

/// Sends `cmd` to `shard`'s primary; the receiver gets the client's reply, in `proto`.
pub async fn dispatch(
    shard: &Arc<Shard>,
    proto: Proto,
    client_id: u64,
    cmd: LockCommand,
) -> oneshot::Receiver<Reply> {
    let conn = match shard.writer(proto, client_id) {
        Ok(conn) => conn,
        Err(e) => return failed(e),
    };
    let view = shard.view();
    let key = cmd.key.clone();
    let (script, argv, ack): (&str, Vec<Bytes>, Option<u8>) = match &cmd.op {
        LockOp::Acquire {
            owner,
            ttl_ms,
            set_form,
        } => {
            if let Some(left) = shard.lock_freeze_left() {
                shard.lock_stats.frozen.fetch_add(1, Ordering::Relaxed);
                return ready(if *set_form {
                    Value::Null.to_bytes(proto)
                } else {
                    encode::error_bytes(&format!(
                        "TRYAGAIN shard '{}' is in a new epoch (failover or ring change): no lock is granted on it for another {} ms",
                        shard.name,
                        left.as_millis()
                    ))
                });
            }
            let refresh = if *set_form { "0" } else { "1" };
            let argv = vec![
                owner.clone(),
                num(*ttl_ms),
                num(view.epoch),
                Bytes::from_static(refresh.as_bytes()),
            ];
            // Every healthy replica must have the grant before it is answered.
            (scripts::GRANT, argv, Some(shard.healthy_replicas()))
        }
        LockOp::Extend {
            owner,
            token,
            ttl_ms,
        } => {
            let mut argv = holder(owner, *token);
            argv.push(num(*ttl_ms));
            (scripts::EXTEND, argv, Some(shard.acks()))
        }
        LockOp::Release { owner, token } => {
            (scripts::RELEASE, holder(owner, *token), Some(shard.acks()))
        }
        LockOp::Status => (scripts::STATUS, Vec::new(), None),
        LockOp::Token { owner } => (scripts::TOKEN, vec![owner.clone()], None),
        LockOp::Fence { token, command } => {
            let argv = [num(token.epoch()), num(token.counter())]
                .into_iter()
                .chain(command.iter().cloned())
                .collect();
            (scripts::FENCE, argv, Some(shard.acks()))
        }
    };
    let started = Instant::now();
    let rx = conn
        .send_acked(eval(script, &key, &argv), 0, Wait::Default, ack)
        .await;
    let (tx, out) = oneshot::channel();
    let shard = shard.clone();
    tokio::spawn(async move {
        let reply = rx.await.unwrap_or_else(|_| {
            Err(BackendError::Lost {
                node: Arc::from("backend"),
                reason: "the connection task ended".into(),
            })
        });
        let answer = finish(&shard, &conn, &cmd, reply, started, proto).await;
        let _ = tx.send(answer);
    });
    out
}

/// Turns the script's reply into the client's.
async fn finish(
    shard: &Shard,
    conn: &NodeConn,
    cmd: &LockCommand,
    reply: Reply,
    started: Instant,
    proto: Proto,
) -> Reply {
    let stats = &shard.lock_stats;
    let frame = match (reply, &cmd.op) {
        (Ok(frame), _) if reply::is_error(&frame) => {
            if matches!(cmd.op, LockOp::Fence { .. }) && frame.starts_with(b"-STALETOKEN") {
                stats.stale.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(frame);
        }
        (Ok(frame), _) => frame,
        (
            Err(BackendError::NotAcknowledged {
                applied, got, ms, ..
            }),
            LockOp::Acquire {
                owner, set_form, ..
            },
        ) => match grant(&applied) {
            // Granted on the primary only: a failover could lose it, so it is taken back.
            Some(Grant::New(token)) => {
                undo(conn, &cmd.key, owner, token).await;
                stats.not_replicated.fetch_add(1, Ordering::Relaxed);
                return Ok(if *set_form {
                    Value::Null.to_bytes(proto)
                } else {
                    encode::error_bytes(&format!(
                        "NOTREPLICATED lock grant not confirmed by the shard's healthy replicas ({got} within {ms} ms); it was undone"
                    ))
                });
            }
            // The owner already held it, replicated: it still does; only the renewal may be
            // lost in a failover.
            Some(Grant::Refreshed(_)) => {
                stats.not_replicated.fetch_add(1, Ordering::Relaxed);
                return Ok(encode::error_bytes(&format!(
                    "NOTREPLICATED lease renewal not confirmed by the shard's healthy replicas ({got} within {ms} ms); the lock is still yours with its earlier TTL on the replicas"
                )));
            }
            // Nothing was granted: the script's answer stands.
            _ => applied,
        },
        (Err(e), _) => return Err(e),
    };
    let value = match &cmd.op {
        LockOp::Acquire {
            owner,
            ttl_ms,
            set_form,
        } => match grant(&frame) {
            Some(Grant::New(token) | Grant::Refreshed(token)) => {
                let validity = remaining(*ttl_ms, started);
                if validity == 0 {
                    // The lease ran out before the answer could go back: worth nothing.
                    undo(conn, &cmd.key, owner, token).await;
                    return Ok(if *set_form {
                        Value::Null.to_bytes(proto)
                    } else {
                        encode::error_bytes(
                            "TRYAGAIN the lease expired before the grant could be answered",
                        )
                    });
                }
                stats.grants.fetch_add(1, Ordering::Relaxed);
                if *set_form {
                    return Ok(Bytes::from_static(encode::OK));
                }
                Value::Array(vec![Value::Int(token.get() as i64), Value::Int(validity)])
            }
            Some(Grant::Held) => {
                stats.contended.fetch_add(1, Ordering::Relaxed);
                Value::Null
            }
            Some(Grant::EpochMismatch(node)) => {
                stats.frozen.fetch_add(1, Ordering::Relaxed);
                if *set_form {
                    Value::Null
                } else {
                    return Ok(encode::error_bytes(&format!(
                        "TRYAGAIN shard '{}' primary records epoch {node}, not the proxy's: it is changing primaries",
                        shard.name
                    )));
                }
            }
            None => return Ok(unexpected()),
        },
        LockOp::Extend { ttl_ms, .. } => match reply::integer(&frame) {
            Some(1) => Value::Int(remaining(*ttl_ms, started)),
            Some(_) => Value::Int(0),
            None => return Ok(unexpected()),
        },
        LockOp::Status => match &integers_after_bulk(&frame)[..] {
            [] => Value::Null,
            [(owner, nums)] if nums.len() == 3 => {
                let token = u64::try_from(nums[0])
                    .ok()
                    .zip(u64::try_from(nums[1]).ok())
                    .and_then(|(e, c)| FenceToken::new(e, c))
                    .map_or(0, FenceToken::get);
                Value::Array(vec![
                    Value::Bulk(owner.clone()),
                    Value::Int(token as i64),
                    Value::Int(nums[2]),
                ])
            }
            _ => return Ok(unexpected()),
        },
        LockOp::Token { .. } => match integers(&frame).as_deref() {
            Some([]) => Value::Null,
            Some(&[e, c]) => match FenceToken::new(e as u64, c as u64) {
                Some(t) => Value::Int(t.get() as i64),
                None => return Ok(unexpected()),
            },
            _ => return Ok(unexpected()),
        },
        // Integer replies, or the wrapped command's own: as they are.
        LockOp::Release { .. } | LockOp::Fence { .. } => return Ok(frame),
    };
    Ok(value.to_bytes(proto))
}

/// What the grant script answered.
#[derive(Debug, PartialEq, Eq)]
enum Grant {
    New(FenceToken),
    /// The same owner already held it: its token, with the lease renewed.
    Refreshed(FenceToken),
    Held,
    /// The primary records another epoch (or none) for the shard.
    EpochMismatch(i64),
}

fn grant(frame: &Bytes) -> Option<Grant> {
    let n = integers(frame)?;
    let token = || FenceToken::new(*n.get(1)? as u64, *n.get(2)? as u64);
    Some(match n.first()? {
        1 => Grant::New(token()?),
        2 => Grant::Refreshed(token()?),
        0 => Grant::Held,
        -1 => Grant::EpochMismatch(*n.get(1)?),
        _ => return None,
    })
}

/// Takes back a grant that must not stand; it is the same hold or nothing is done.
async fn undo(conn: &NodeConn, key: &Bytes, owner: &Bytes, token: FenceToken) {
    let argv = holder(owner, token);
    let rx = conn
        .send_acked(
            eval(scripts::RELEASE, key, &argv),
            0,
            Wait::Default,
            Some(0),
        )
        .await;
    match rx.await {
        Ok(Ok(frame)) if !reply::is_error(&frame) => {}
        other => tracing::warn!(
            token = token.get(),
            "could not undo an unconfirmed lock grant (it expires with its TTL): {other:?}"
        ),
    }
}

/// `EVAL script 3 key <state> <epoch> argv...`.
fn eval(script: &str, key: &Bytes, argv: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(script.len() + 64);
    let head = [
        &b"EVAL"[..],
        script.as_bytes(),
        b"3",
        key,
        STATE_KEY,
        EPOCH_KEY,
    ];
    encode::command(
        &mut out,
        head.into_iter()
            .chain(argv.iter().map(|a| &a[..]))
            .collect::<Vec<_>>()
            .into_iter(),
    );
    out.freeze()
}

fn holder(owner: &Bytes, token: FenceToken) -> Vec<Bytes> {
    vec![owner.clone(), num(token.epoch()), num(token.counter())]
}

fn num(n: u64) -> Bytes {
    Bytes::from(itoa::Buffer::new().format(n).to_owned())
}

/// What is left of a `ttl_ms` lease that started no later than `started`, in whole ms.
fn remaining(ttl_ms: u64, started: Instant) -> i64 {
    let elapsed = started.elapsed();
    let left = Duration::from_millis(ttl_ms).saturating_sub(elapsed);
    left.as_millis() as i64
}

/// An array reply of integers.
fn integers(frame: &Bytes) -> Option<Vec<i64>> {
    reply::array_elements(frame)?
        .iter()
        .map(|e| reply::integer(e))
        .collect()
}

/// STATUS's `{owner, epoch, counter, pttl}` (or `{}`); a PTTL of -1 (no TTL) stays -1.
fn integers_after_bulk(frame: &Bytes) -> Vec<(Bytes, Vec<i64>)> {
    let Some(items) = reply::array_elements(frame) else {
        return vec![(Bytes::new(), Vec::new())];
    };
    let Some((first, rest)) = items.split_first() else {
        return Vec::new();
    };
    let owner = reply::bulk_payload(first).unwrap_or_default();
    let nums = rest
        .iter()
        .map(|e| reply::integer(e).unwrap_or(0))
        .collect();
    vec![(owner, nums)]
}

fn unexpected() -> Bytes {
    encode::error_bytes("ERR unexpected reply from the lock script")
}

fn ready(bytes: Bytes) -> oneshot::Receiver<Reply> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(Ok(bytes));
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_replies_are_read() {
        let t = FenceToken::new(3, 7).unwrap();
        let frame = |s: &str| Bytes::from(s.to_string());
        assert_eq!(
            grant(&frame("*3\r\n:1\r\n:3\r\n:7\r\n")),
            Some(Grant::New(t))
        );
        assert_eq!(
            grant(&frame("*3\r\n:2\r\n:3\r\n:7\r\n")),
            Some(Grant::Refreshed(t))
        );
        assert_eq!(grant(&frame("*3\r\n:0\r\n:0\r\n:0\r\n")), Some(Grant::Held));
        assert_eq!(
            grant(&frame("*2\r\n:-1\r\n:-1\r\n")),
            Some(Grant::EpochMismatch(-1))
        );
        assert_eq!(grant(&frame("*3\r\n:1\r\n:3\r\n:0\r\n")), None);
        assert_eq!(grant(&frame("$1\r\nx\r\n")), None);
    }

    #[test]
    fn status_replies_are_read() {
        let f = Bytes::from_static(b"*4\r\n$1\r\nA\r\n:1\r\n:5\r\n:900\r\n");
        assert_eq!(
            integers_after_bulk(&f),
            vec![(Bytes::from_static(b"A"), vec![1, 5, 900])]
        );
        assert!(integers_after_bulk(&Bytes::from_static(b"*0\r\n")).is_empty());
    }

    #[test]
    fn eval_names_the_state_and_epoch_keys() {
        let bytes = eval("return 1", &Bytes::from_static(b"lock:x"), &[num(5)]);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("*7\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\n3\r\n$6\r\nlock:x\r\n")
        );
        assert!(text.contains("__shardis__:locks") && text.contains("__shardis__:epoch"));
        assert!(text.ends_with("$1\r\n5\r\n"));
    }
}
