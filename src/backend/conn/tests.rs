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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (task, conn) = task(&settings(), Proto::Resp2, None, 0, 4, None);
        conn.side.lock().out = Some(Arc::new(Stuck));
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
