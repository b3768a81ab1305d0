use std::task::{Context, Poll, Waker};

use super::write_side::Out;
use super::*;
use crate::backend::{Arrival, Arrivals};
use crate::net::outbox::Outbox;

/// A socket that takes nothing yet: what a session adds stays in the write buffer.
struct Stuck;

impl Out for Stuck {
    fn write_out(&self, _: &mut Outbox) -> io::Result<usize> {
        Ok(0)
    }
}

fn settings() -> NodeSettings {
    NodeSettings {
        addr: "127.0.0.1:1".into(),
        label: Arc::from("shard 'a' node 127.0.0.1:1"),
        backend: BackendSettings::default(),
        alarm: None,
        parking: None,
        ack_timeout: Duration::from_secs(1),
        mirror: None,
        stats: Default::default(),
        gate: Default::default(),
        wake: Default::default(),
        dedicated_open: Default::default(),
    }
}

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// A single-threaded runtime, as each worker runs.
fn worker() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A connection's task, made but not run, and its handle; its write side has a socket that
/// takes nothing.
fn stuck() -> (ConnTask, NodeConn) {
    let (task, conn) = task(&settings(), Proto::Resp2, None, 0, 4, None);
    conn.side.lock().out = Some(Arc::new(Stuck));
    (task, conn)
}

/// Ticket `number`'s answer, if it has one yet.
fn answer(arrivals: &mut Arrivals, number: u64) -> Option<String> {
    let mut cx = Context::from_waker(Waker::noop());
    match arrivals.poll_take(number, &mut cx) {
        Poll::Ready(Arrival::Reply(Err(e))) => Some(e.to_string()),
        Poll::Ready(Arrival::Reply(Ok(frame))) => Some(String::from_utf8_lossy(&frame).into()),
        Poll::Ready(Arrival::Stream(_)) => Some("a stream".into()),
        Poll::Pending => None,
    }
}

/// A connection's task that ends without closing its write side (it panicked, and its
/// runtime dropped it) must answer what sessions added there, and leave them adding no more:
/// nobody would write those requests or read their replies.
#[test]
fn a_task_that_ends_unclosed_answers_its_requests_and_takes_no_more() {
    worker().block_on(async {
        let (task, conn) = stuck();
        let mut arrivals = Arrivals::default();

        let (first, ticket) = arrivals.issue();
        assert!(conn
            .send_ticketed(Bytes::from_static(PING), ticket, None)
            .is_ok());
        assert_eq!(conn.side.lock().pending.len(), 1, "taken by the write side");
        assert_eq!(answer(&mut arrivals, first), None);

        drop(task);
        let ended = answer(&mut arrivals, first).expect("the request in flight is answered");
        assert!(ended.contains("the connection task ended"), "{ended}");

        let (second, ticket) = arrivals.issue();
        assert!(conn
            .send_ticketed(Bytes::from_static(PING), ticket, None)
            .is_ok());
        assert!(
            conn.side.lock().pending.is_empty(),
            "a request added after the end"
        );
        let ended = answer(&mut arrivals, second).expect("a request after the end is answered");
        assert!(ended.contains("the connection task ended"), "{ended}");
    });
}

/// A request a session adds is timed from its first write, which reads the clock once for all
/// it carries; a request the task added meanwhile keeps its own time (here: none, as a BLPOP
/// with timeout 0 has).
#[test]
fn the_sessions_requests_are_timed_at_their_first_write() {
    worker().block_on(async {
        let (_task, conn) = stuck();
        let mut arrivals = Arrivals::default();
        for _ in 0..2 {
            let (_, ticket) = arrivals.issue();
            assert!(conn
                .send_ticketed(Bytes::from_static(PING), ticket, None)
                .is_ok());
        }
        let (blocking, _rx) = tokio::sync::oneshot::channel();
        let mut l = conn.side.lock();
        l.pending.push_back(Waiter::Client {
            reply: ReplyTo::Channel(blocking),
            due: Due::Never,
            skip: 0,
            ack: 0,
            tap: Tap::None,
            gate: 0,
        });
        let dues = |l: &WriteState| -> Vec<Due> {
            l.pending
                .iter()
                .map(|w| match w {
                    Waiter::Client { due, .. } => *due,
                    _ => panic!("only requests were added"),
                })
                .collect()
        };
        assert_eq!(
            dues(&l),
            [Due::AfterWrite, Due::AfterWrite, Due::Never],
            "not timed before they are written"
        );
        let before = Instant::now();
        l.flush().unwrap();
        let after = Instant::now();
        let timeout = BackendSettings::default().timeout;
        let dues = dues(&l);
        assert_eq!(dues[0], dues[1], "one time for the write");
        let at = dues[0].at().expect("timed once written");
        assert!(before + timeout <= at && at <= after + timeout);
        assert_eq!(dues[2], Due::Never);
    });
}
