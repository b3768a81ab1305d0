use super::*;

fn whole(buf: &[u8]) -> Option<usize> {
    frame_len(buf).unwrap()
}

#[test]
fn frames_every_resp2_and_resp3_type() {
    let frames: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR x\r\n",
        b":42\r\n",
        b"$3\r\nfoo\r\n",
        b"$-1\r\n",
        b"$0\r\n\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
        b"_\r\n",
        b",3.14\r\n",
        b"#t\r\n",
        b"(12345678901234567890\r\n",
        b"!3\r\nERR\r\n",
        b"=7\r\ntxt:abc\r\n",
        b"%1\r\n+k\r\n:1\r\n",
        b"~2\r\n:1\r\n:2\r\n",
        b">2\r\n+a\r\n+b\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
    ];
    for frame in frames {
        assert_eq!(
            whole(frame),
            Some(frame.len()),
            "{:?}",
            String::from_utf8_lossy(frame)
        );
        // Any strict prefix is incomplete, not an error.
        for cut in 0..frame.len() {
            assert_eq!(
                whole(&frame[..cut]),
                None,
                "prefix {cut} of {:?}",
                String::from_utf8_lossy(frame)
            );
        }
        // Trailing bytes of the next reply are not part of this one.
        let two = [*frame, b"+OK\r\n"].concat();
        assert_eq!(whole(&two), Some(frame.len()));
    }
}

#[test]
fn resumes_where_it_stopped() {
    let mut reply = b"*3\r\n".to_vec();
    for i in 0..3 {
        reply.extend_from_slice(format!("$5\r\nval-{i}\r\n").as_bytes());
    }
    let mut framer = ReplyFramer::new(DEFAULT_MAX_DEPTH);
    for cut in 1..reply.len() {
        assert_eq!(framer.frame_len(&reply[..cut]).unwrap(), None, "cut {cut}");
    }
    assert_eq!(framer.frame_len(&reply).unwrap(), Some(reply.len()));
    // And starts afresh for the next reply.
    assert_eq!(framer.frame_len(b":1\r\n").unwrap(), Some(4));
}

#[test]
fn depth_is_limited_without_recursion() {
    let deep = "*1\r\n".repeat(1_000_000);
    let err = ReplyFramer::new(64).frame_len(deep.as_bytes()).unwrap_err();
    assert_eq!(err, FrameError::TooDeep(64));
}

#[test]
fn garbage_is_an_error() {
    assert_eq!(
        frame_len(b"hello\r\n").unwrap_err(),
        FrameError::BadType(b'h')
    );
    assert_eq!(frame_len(b"$x\r\n").unwrap_err(), FrameError::BadLength);
    assert_eq!(
        frame_len(b"$1\r\nab\r\n").unwrap_err(),
        FrameError::MissingCrlf
    );
}

#[test]
fn helpers_read_merged_values() {
    assert_eq!(integer(b":-7\r\n"), Some(-7));
    assert_eq!(integer(b"+7\r\n"), None);
    assert!(is_error(b"-ERR\r\n") && is_error(b"!1\r\nx\r\n") && !is_error(b"+OK\r\n"));
    let arr = Bytes::from_static(b"*3\r\n$1\r\na\r\n$-1\r\n_\r\n");
    let els = array_elements(&arr).unwrap();
    assert_eq!(els, vec![&b"$1\r\na\r\n"[..], b"$-1\r\n", b"_\r\n"]);
    assert_eq!(array_elements(&Bytes::from_static(b":1\r\n")), None);
    assert_eq!(
        bulk_payload(&Bytes::from_static(b"$3\r\nabc\r\n")).unwrap(),
        &b"abc"[..]
    );
    assert_eq!(
        bulk_payload(&Bytes::from_static(b"=7\r\ntxt:abc\r\n")).unwrap(),
        &b"abc"[..]
    );
}

#[test]
fn the_framer_says_how_long_a_bulk_string_it_is_in_needs_the_buffer() {
    let mut framer = ReplyFramer::new(8);
    // A bulk string alone, and one inside an array after a complete element.
    assert_eq!(framer.frame_len(b"$100000\r\nabc"), Ok(None));
    assert_eq!(framer.wants(), 9 + 100_000 + 2);
    let mut framer = ReplyFramer::new(8);
    assert_eq!(framer.frame_len(b"*2\r\n:1\r\n$5\r\nab"), Ok(None));
    assert_eq!(framer.wants(), 8 + 4 + 5 + 2);
    assert_eq!(
        framer.frame_len(b"*2\r\n:1\r\n$5\r\nabcde\r\n"),
        Ok(Some(19))
    );
    assert_eq!(framer.wants(), 0);
    // A header still arriving asks for nothing yet; a length past any real value is refused.
    let mut framer = ReplyFramer::new(8);
    assert_eq!(framer.frame_len(b"$12"), Ok(None));
    assert_eq!(framer.wants(), 0);
    assert_eq!(
        framer.frame_len(b"$9223372036854775807\r\n"),
        Err(FrameError::BadLength)
    );
}

/// Feeds `input` to a framer `cut` bytes at a time, passing on what it allows after each piece
/// (at most `take` bytes at once), as a connection streaming a big reply does. Returns each
/// reply, as the bytes passed on for it.
fn stream_through(input: &[u8], cut: usize, take: usize) -> Vec<Vec<u8>> {
    let mut framer = ReplyFramer::new(8);
    let mut buf: Vec<u8> = Vec::new();
    let mut replies = Vec::new();
    let mut passed: Vec<u8> = Vec::new();
    for piece in input.chunks(cut.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(len) = framer.frame_len(&buf).unwrap() {
            passed.extend(buf.drain(..len));
            replies.push(std::mem::take(&mut passed));
        }
        let n = framer.movable(buf.len()).min(take);
        passed.extend(buf.drain(..n));
        framer.taken(n);
    }
    assert!(buf.is_empty() && passed.is_empty(), "input left over");
    replies
}

#[test]
fn a_reply_passed_on_in_pieces_comes_out_whole() {
    let big = format!("${}\r\n{}\r\n", 300, "v".repeat(300));
    let replies = [
        big.as_bytes(),
        b"*3\r\n:1\r\n$5\r\nabcde\r\n*1\r\n$0\r\n\r\n",
        b"+OK\r\n",
        b"$-1\r\n",
    ];
    let input = replies.concat();
    for cut in [1, 2, 3, 7, 64, 1000] {
        for take in [1, 5, usize::MAX] {
            let got = stream_through(&input, cut, take);
            assert_eq!(got, replies.map(<[u8]>::to_vec), "cut {cut} take {take}");
        }
    }
    // Only whole elements and bulk payload bytes are movable: a header still arriving is not.
    let mut framer = ReplyFramer::new(8);
    assert_eq!(framer.frame_len(b"*2\r\n$3"), Ok(None));
    assert_eq!(framer.movable(8), 4);
    assert_eq!(framer.frame_len(b"*2\r\n$3\r\nab"), Ok(None));
    assert_eq!(framer.movable(10), 10);
    framer.taken(10);
    // The CRLF after the payload is checked, and is what completes the element.
    assert_eq!(framer.frame_len(b"c"), Ok(None));
    assert_eq!(framer.movable(1), 1);
    framer.taken(1);
    assert_eq!(framer.frame_len(b"\r\n:5\r\n"), Ok(Some(6)));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let mut framer = ReplyFramer::new(32);
            if let Ok(Some(len)) = framer.frame_len(&data) {
                prop_assert!(len <= data.len());
            }
        }

        #[test]
        fn replies_passed_on_in_any_pieces_come_out_whole(
            sizes in proptest::collection::vec(0usize..200, 1..6),
            cut in 1usize..50,
            take in 1usize..100,
        ) {
            let replies: Vec<Vec<u8>> = sizes
                .iter()
                .map(|&n| match n % 3 {
                    0 => format!("${n}\r\n{}\r\n", "x".repeat(n)).into_bytes(),
                    1 => format!("*2\r\n${n}\r\n{}\r\n:{n}\r\n", "y".repeat(n)).into_bytes(),
                    _ => format!("%1\r\n+k\r\n*1\r\n${n}\r\n{}\r\n", "z".repeat(n)).into_bytes(),
                })
                .collect();
            prop_assert_eq!(stream_through(&replies.concat(), cut, take), replies);
        }
    }
}
