//! Fuzzes the backend reply framer, `shardis::resp::ReplyFramer`.
//!
//! The input is what a Redis node sends on one connection. It is framed the way the backend
//! connection does it (`deliver` in `src/backend/conn.rs`): one framer per connection, kept across
//! reads; `frame_len` on the read buffer until it says `Ok(None)`, each complete frame split off
//! the front (the framer then starts afresh), more bytes appended to the same buffer; an error
//! ends the connection. That three ways:
//!
//! - whole: all the bytes in the buffer at once;
//! - split: in two pieces, cut at a point derived from the data;
//! - trickle: one byte at a time.
//!
//! Checked, besides "never panics":
//!
//! - a returned length is > 0 and at most the bytes buffered; a frame ends with CRLF;
//! - the three ways give the same frames and end the same way (the same error, or the same
//!   remainder): the framer resumes where it stopped, and what it decides depends only on bytes
//!   it has already seen;
//! - a frame framed again on its own, by a fresh framer and by `reply::frame_len` (default depth),
//!   has the same length; a proper prefix of it is `Ok(None)`, never an error or a shorter frame,
//!   and the same framer given the whole frame next then finds its length;
//! - the helpers the proxy applies to frames (`array_elements`, `bulk_payload`, `integer`,
//!   `is_error`) do not panic; `array_elements` splits an array into exactly its announced
//!   elements, and `bulk_payload` returns a bulk string's announced payload.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shardis::resp::{parse_i64, reply, FrameError, ReplyFramer};

/// A small depth limit, so that short inputs reach it (`*1\r\n` nine times).
const MAX_DEPTH: usize = 8;

/// How a run ended.
#[derive(Debug, PartialEq)]
enum End {
    /// `Ok(None)` with these bytes not yet framed.
    NeedMore(Bytes),
    /// The first error; the connection would be dropped.
    Failed(FrameError),
}

#[derive(Debug)]
struct Run {
    frames: Vec<Bytes>,
    end: End,
}

/// Feeds `chunks` one after the other to one framer, as the backend reader does.
fn run<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Run {
    let mut framer = ReplyFramer::new(MAX_DEPTH);
    let mut rbuf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        rbuf.extend_from_slice(chunk);
        loop {
            match framer.frame_len(&rbuf) {
                Ok(Some(len)) => {
                    assert!(
                        len > 0 && len <= rbuf.len(),
                        "frame length {len} with {} bytes buffered",
                        rbuf.len()
                    );
                    frames.push(rbuf.split_to(len).freeze());
                }
                Ok(None) => break,
                Err(e) => {
                    return Run {
                        frames,
                        end: End::Failed(e),
                    }
                }
            }
        }
    }
    Run {
        frames,
        end: End::NeedMore(rbuf.freeze()),
    }
}

/// What must hold for every frame the framer finds.
fn check_frame(frame: &Bytes) {
    let len = frame.len();
    assert!(frame.ends_with(b"\r\n"), "a frame not ending in CRLF");

    // A frame delimits itself: the same length on its own, at the small depth and the default.
    assert_eq!(ReplyFramer::new(MAX_DEPTH).frame_len(frame), Ok(Some(len)));
    assert_eq!(reply::frame_len(frame), Ok(Some(len)));

    // A proper prefix is incomplete: not an error, not a shorter frame. The framer remembers
    // where it got to, and the whole frame then completes it.
    for k in [0, 1, len / 2, len - 1, cut_point(frame)] {
        if k < len {
            let mut framer = ReplyFramer::new(MAX_DEPTH);
            assert_eq!(
                framer.frame_len(&frame[..k]),
                Ok(None),
                "prefix of {k} bytes"
            );
            assert_eq!(
                framer.frame_len(frame),
                Ok(Some(len)),
                "resumed after {k} bytes"
            );
        }
    }

    // The helpers the proxy applies to complete replies.
    let _ = reply::is_error(frame);
    let _ = reply::integer(frame);
    let elements = reply::array_elements(frame);
    let payload = reply::bulk_payload(frame);

    // The header line: the type byte, then up to the first CRLF (the framer searches from 1).
    let kind = frame[0];
    let cr = 1 + frame[1..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a frame has a header line");
    let body = cr + 2;
    let announced = parse_i64(&frame[1..cr]).and_then(|n| usize::try_from(n).ok());
    match (kind, announced) {
        (b'*' | b'~' | b'>', Some(n)) => {
            let elements = elements.expect("an array frame that array_elements refuses");
            assert_eq!(elements.len(), n, "array_elements: wrong element count");
            let mut at = body;
            for element in &elements {
                assert_eq!(&frame[at..at + element.len()], &element[..]);
                assert_eq!(reply::frame_len(element), Ok(Some(element.len())));
                at += element.len();
            }
            assert_eq!(at, len, "array_elements: elements do not cover the array");
        }
        (b'$', Some(n)) => {
            assert_eq!(payload.as_deref(), Some(&frame[body..body + n]));
        }
        (b'=', Some(n)) if n >= 4 => {
            // Verbatim string: the payload after its "txt:" format prefix.
            assert_eq!(payload.as_deref(), Some(&frame[body + 4..body + n]));
        }
        (b'$' | b'=', _) => {}
        _ => assert_eq!(payload, None, "bulk_payload of a {:?} frame", kind as char),
    }
}

/// A cut point in `0..=data.len()` that changes with the data, so the fuzzer tries many.
fn cut_point(data: &[u8]) -> usize {
    let h = data.iter().fold(0usize, |h, &b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    h % (data.len() + 1)
}

fuzz_target!(|data: &[u8]| {
    let whole = run([data]);
    for frame in &whole.frames {
        check_frame(frame);
    }

    let cut = cut_point(data);
    let (head, tail) = data.split_at(cut);
    let split = run([head, tail]);
    assert_eq!(split.frames, whole.frames, "cut at {cut}: other frames");
    assert_eq!(split.end, whole.end, "cut at {cut}: ended differently");

    let trickle = run(data.chunks(1));
    assert_eq!(trickle.frames, whole.frames, "byte by byte: other frames");
    assert_eq!(trickle.end, whole.end, "byte by byte: ended differently");
});
