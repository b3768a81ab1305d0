//! Reply builders: the bytes the proxy itself sends, in the client's protocol.
//!
//! Replies on the hot path (`+OK`, integers, errors, the command re-encoding used when a request
//! is split) are written directly. Structured replies the proxy composes (HELLO, CONFIG GET, INFO)
//! are built as a [`Value`] and encoded by redis-protocol, in RESP2 or RESP3 as the client asked.

use bytes::{BufMut, Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as Frame2;
use redis_protocol::resp3::types::{BytesFrame as Frame3, VerbatimStringFormat};

/// The protocol a client speaks (HELLO 2 or HELLO 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

/// A reply the proxy composes itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(&'static str),
    Int(i64),
    Bulk(Bytes),
    /// Null: `$-1` in RESP2 and `_` in RESP3.
    Null,
    Array(Vec<Value>),
    /// A map in RESP3, a flat array of key, value, key, value ... in RESP2.
    Map(Vec<(Value, Value)>),
    /// Text that RESP3 sends as a verbatim string (`=`, format `txt`), RESP2 as a bulk string.
    Verbatim(Bytes),
    /// A double in RESP3 (`,`), its decimal text as a bulk string in RESP2 (as Redis sends it).
    Double(f64),
    /// An error reply inside a structure (the text after `-`).
    Error(Bytes),
}

impl Value {
    pub fn bulk(s: impl Into<Bytes>) -> Value {
        Value::Bulk(s.into())
    }

    /// Appends this value, encoded for `proto`, to `out`.
    pub fn encode(&self, proto: Proto, out: &mut BytesMut) {
        // Encoding an in-memory frame into a growable buffer cannot fail.
        match proto {
            Proto::Resp2 => {
                redis_protocol::resp2::encode::extend_encode(out, &self.to_resp2(), false)
                    .expect("encoding a frame into a growable buffer");
            }
            Proto::Resp3 => {
                redis_protocol::resp3::encode::complete::extend_encode(
                    out,
                    &self.to_resp3(),
                    false,
                )
                .expect("encoding a frame into a growable buffer");
            }
        }
    }

    pub fn to_bytes(&self, proto: Proto) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(proto, &mut out);
        out.freeze()
    }

    fn to_resp2(&self) -> Frame2 {
        match self {
            Value::Simple(s) => Frame2::SimpleString(Bytes::from_static(s.as_bytes())),
            Value::Int(n) => Frame2::Integer(*n),
            Value::Bulk(b) | Value::Verbatim(b) => Frame2::BulkString(b.clone()),
            Value::Null => Frame2::Null,
            Value::Double(d) => Frame2::BulkString(Bytes::from(d.to_string())),
            Value::Error(e) => Frame2::Error(error_text(e).into()),
            Value::Array(items) => Frame2::Array(items.iter().map(Value::to_resp2).collect()),
            Value::Map(pairs) => Frame2::Array(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [k.to_resp2(), v.to_resp2()])
                    .collect(),
            ),
        }
    }

    fn to_resp3(&self) -> Frame3 {
        match self {
            Value::Simple(s) => Frame3::SimpleString {
                data: Bytes::from_static(s.as_bytes()),
                attributes: None,
            },
            Value::Int(n) => Frame3::Number {
                data: *n,
                attributes: None,
            },
            Value::Bulk(b) => Frame3::BlobString {
                data: b.clone(),
                attributes: None,
            },
            Value::Verbatim(b) => Frame3::VerbatimString {
                data: b.clone(),
                format: VerbatimStringFormat::Text,
                attributes: None,
            },
            Value::Null => Frame3::Null,
            Value::Double(d) => Frame3::Double {
                data: *d,
                attributes: None,
            },
            Value::Error(e) => Frame3::SimpleError {
                data: error_text(e).into(),
                attributes: None,
            },
            Value::Array(items) => Frame3::Array {
                data: items.iter().map(Value::to_resp3).collect(),
                attributes: None,
            },
            Value::Map(pairs) => Frame3::Map {
                data: pairs
                    .iter()
                    .map(|(k, v)| (k.to_resp3(), v.to_resp3()))
                    .collect(),
                attributes: None,
            },
        }
    }
}

/// An error's text fit for a simple error line: CR and LF (a blob error may hold them) become
/// spaces, so it cannot break the framing.
fn error_text(e: &[u8]) -> String {
    String::from_utf8_lossy(e).replace(['\r', '\n'], " ")
}

pub const OK: &[u8] = b"+OK\r\n";

/// `-<msg>\r\n`. `msg` starts with the error code (`ERR`, `CROSSSLOT`, ...); CR and LF inside it
/// are replaced by spaces so a message can never break the framing.
pub fn error(out: &mut BytesMut, msg: &str) {
    out.reserve(msg.len() + 3);
    out.put_u8(b'-');
    for b in msg.bytes() {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

pub fn error_bytes(msg: &str) -> Bytes {
    let mut out = BytesMut::new();
    error(&mut out, msg);
    out.freeze()
}

/// `:<n>\r\n`
pub fn integer(out: &mut BytesMut, n: i64) {
    out.put_u8(b':');
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
    out.put_slice(b"\r\n");
}

/// Encodes a command as a RESP array of bulk strings, as a client would send it.
pub fn command<'a>(out: &mut BytesMut, args: impl ExactSizeIterator<Item = &'a [u8]>) {
    let mut num = itoa::Buffer::new();
    out.put_u8(b'*');
    out.put_slice(num.format(args.len()).as_bytes());
    out.put_slice(b"\r\n");
    for arg in args {
        out.reserve(arg.len() + 16);
        out.put_u8(b'$');
        out.put_slice(num.format(arg.len()).as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_is_flat_in_resp2_and_a_map_in_resp3() {
        let v = Value::Map(vec![(Value::bulk("proto"), Value::Int(3))]);
        assert_eq!(
            &v.to_bytes(Proto::Resp2)[..],
            b"*2\r\n$5\r\nproto\r\n:3\r\n"
        );
        assert_eq!(
            &v.to_bytes(Proto::Resp3)[..],
            b"%1\r\n$5\r\nproto\r\n:3\r\n"
        );
    }

    #[test]
    fn null_and_verbatim_follow_the_protocol() {
        assert_eq!(&Value::Null.to_bytes(Proto::Resp2)[..], b"$-1\r\n");
        assert_eq!(&Value::Null.to_bytes(Proto::Resp3)[..], b"_\r\n");
        let v = Value::Verbatim(Bytes::from_static(b"a:1"));
        assert_eq!(&v.to_bytes(Proto::Resp2)[..], b"$3\r\na:1\r\n");
        assert_eq!(&v.to_bytes(Proto::Resp3)[..], b"=7\r\ntxt:a:1\r\n");
    }

    #[test]
    fn error_text_cannot_break_framing() {
        assert_eq!(&error_bytes("ERR a\r\nb")[..], b"-ERR a  b\r\n");
    }

    #[test]
    fn command_encoding() {
        let mut out = BytesMut::new();
        command(&mut out, [&b"GET"[..], b"k"].into_iter());
        assert_eq!(&out[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
