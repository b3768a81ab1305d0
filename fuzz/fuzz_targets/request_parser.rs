//! Fuzzes the client request parser, `shardis::resp::RequestParser`.
//!
//! The input is what one client sends. It is parsed the way a client session does it (one parser
//! per connection, `next` until it says `Ok(None)`, more bytes appended to the same buffer, stop
//! at the first error), and that three ways:
//!
//! - whole: all the bytes in the buffer at once;
//! - split: in two pieces, cut at a point derived from the data;
//! - trickle: one byte at a time.
//!
//! Checked, besides "never panics":
//!
//! - every request has at least one argument and stays within the limits; a RESP request's raw
//!   bytes parse back to the same request, and an inline request's RESP form parses back to the
//!   same arguments;
//! - a request is never returned without consuming input;
//! - the three ways give the same requests and end the same way (the same error, or the same
//!   unparsed remainder): the parser resumes where it stopped, and what it decides depends only
//!   on bytes it has already seen.
//!
//! The query buffer limit is the one check that depends on how the input was cut (it is about
//! bytes held, not about the protocol), so the comparison above runs without it, and a separate
//! run with a small limit checks that the limit only ever cuts parsing short, with
//! `QueryBufferFull`.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shardis::resp::{Limits, ProtocolError, Request, RequestParser};

/// Small limits, so that short inputs reach each of them. A bulk length far past
/// `max_bulk_len` (`$2000000000`) must be refused before anything is reserved for it; one just
/// under it (`$1048576`) must make the parser wait without reserving more than a bounded amount.
#[allow(clippy::needless_update)]
fn limits() -> Limits {
    Limits {
        max_bulk_len: 1 << 20,
        max_inline_len: 256,
        max_args: 16,
        max_query_buffer: usize::MAX,
        // Any limit added later keeps its default.
        ..Limits::default()
    }
}

/// The query buffer limit of the last run: small enough for fuzz inputs to pass it.
const TIGHT_QUERY_BUFFER: usize = 128;

/// How a run ended.
#[derive(Debug, PartialEq)]
enum End {
    /// `Ok(None)` with these bytes still unparsed.
    NeedMore(Bytes),
    /// The first error; nothing was parsed after it.
    Failed(ProtocolError),
}

#[derive(Debug)]
struct Run {
    requests: Vec<Request>,
    end: End,
}

/// Feeds `chunks` one after the other to one parser, taking every complete request after each.
fn run<'a>(limits: Limits, chunks: impl IntoIterator<Item = &'a [u8]>) -> Run {
    let mut parser = RequestParser::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match parser.next(&mut buf) {
                Ok(Some(request)) => {
                    assert!(
                        buf.len() < before,
                        "a request was returned without consuming input"
                    );
                    check_request(&limits, &request);
                    requests.push(request);
                }
                Ok(None) => break,
                // The stream position is lost after an error: the session closes the client.
                Err(e) => {
                    return Run {
                        requests,
                        end: End::Failed(e),
                    }
                }
            }
        }
    }
    Run {
        requests,
        end: End::NeedMore(buf.freeze()),
    }
}

/// What must hold for every request the parser returns.
fn check_request(limits: &Limits, request: &Request) {
    let args = request.args();
    assert!(!args.is_empty(), "a request without arguments");
    assert!(
        args.len() <= limits.max_args,
        "more arguments than max_args"
    );
    assert_eq!(request.name(), &args[0][..]);
    match request.raw() {
        Some(raw) => {
            // RESP: the raw bytes are exactly this one request.
            assert!(
                raw.starts_with(b"*") && raw.ends_with(b"\r\n"),
                "raw {raw:?}"
            );
            assert!(
                args.iter().all(|a| a.len() <= limits.max_bulk_len),
                "an argument longer than max_bulk_len"
            );
            let (again, rest) = parse_one(*limits, raw);
            assert_eq!(again.as_ref(), Some(request), "raw bytes parse differently");
            assert!(rest.is_empty(), "raw bytes hold more than the request");
        }
        None => {
            // Inline: no argument is longer than the line was allowed to be, and the RESP form
            // the proxy forwards carries the same arguments.
            assert!(
                args.iter().all(|a| a.len() <= limits.max_inline_len),
                "an inline argument longer than max_inline_len"
            );
            let mut wire = BytesMut::new();
            request.write_resp(&mut wire);
            let (again, rest) = parse_one(*limits, &wire);
            let again = again.expect("the RESP form of an inline request is incomplete");
            assert_eq!(
                again.args(),
                args,
                "the RESP form of an inline request differs"
            );
            assert!(rest.is_empty(), "the RESP form holds more than the request");
        }
    }
}

/// Parses one request from `wire` with a fresh parser; returns it and what is left.
fn parse_one(limits: Limits, wire: &[u8]) -> (Option<Request>, BytesMut) {
    let mut buf = BytesMut::from(wire);
    let request = RequestParser::new(limits)
        .next(&mut buf)
        .expect("a request's own bytes must parse again");
    (request, buf)
}

/// A cut point in `0..=data.len()` that changes with the data, so the fuzzer tries many.
fn cut_point(data: &[u8]) -> usize {
    let h = data.iter().fold(0usize, |h, &b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    h % (data.len() + 1)
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let cut = cut_point(data);
    let (head, tail) = data.split_at(cut);

    let whole = run(limits, [data]);

    let split = run(limits, [head, tail]);
    assert_eq!(
        split.requests, whole.requests,
        "cut at {cut}: other requests"
    );
    assert_eq!(split.end, whole.end, "cut at {cut}: ended differently");

    let trickle = run(limits, data.chunks(1));
    assert_eq!(
        trickle.requests, whole.requests,
        "byte by byte: other requests"
    );
    assert_eq!(trickle.end, whole.end, "byte by byte: ended differently");

    let tight = Limits {
        max_query_buffer: TIGHT_QUERY_BUFFER,
        ..limits
    };
    let full = End::Failed(ProtocolError::QueryBufferFull(TIGHT_QUERY_BUFFER));

    // All of the input buffered: the limit is looked at only when the parser needs more, which
    // is at the end, so it can only turn a final "need more" with too much held into an error.
    let tight_whole = run(tight, [data]);
    assert_eq!(
        tight_whole.requests, whole.requests,
        "query buffer limit: other requests"
    );
    if tight_whole.end != whole.end {
        match &whole.end {
            End::NeedMore(rest) if rest.len() > TIGHT_QUERY_BUFFER => {
                assert_eq!(tight_whole.end, full, "query buffer limit: wrong error")
            }
            _ => panic!(
                "query buffer limit: ended {:?}, without it {:?}",
                tight_whole.end, whole.end
            ),
        }
    }

    // Cut in two: the limit may also stop parsing after the first piece. Whatever was parsed
    // until then is what the unlimited parser returned first, and the stop is QueryBufferFull.
    let tight_split = run(tight, [head, tail]);
    let n = tight_split.requests.len();
    assert!(
        n <= whole.requests.len() && tight_split.requests[..] == whole.requests[..n],
        "query buffer limit, cut at {cut}: other requests"
    );
    if n < whole.requests.len() || tight_split.end != whole.end {
        assert_eq!(
            tight_split.end, full,
            "query buffer limit, cut at {cut}: stopped for another reason"
        );
    }
});
