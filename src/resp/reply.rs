//! The backend reply framer: finds where each reply ends in the bytes a Redis node sends.
//!
//! Replies are forwarded to clients as raw bytes, so the proxy only needs frame boundaries, not
//! decoded values. The framer is iterative (a stack of element counts, never recursion) with a
//! depth limit, and it keeps its place between reads: a 100,000-element `LRANGE` reply arriving
//! in 64 KiB pieces is scanned once, not once per piece (redis-protocol restarts from the first
//! byte on every call). It understands RESP2 and RESP3, attributes included.

use bytes::Bytes;

/// Why backend bytes could not be framed. The connection they came from is then unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unexpected reply type byte 0x{0:02x}")]
    BadType(u8),
    #[error("invalid length in reply header")]
    BadLength,
    #[error("missing CRLF after a bulk reply")]
    MissingCrlf,
    #[error("reply nested deeper than {0} levels")]
    TooDeep(usize),
}

/// Deepest nesting accepted from a backend by default. Redis's own replies nest a few levels;
/// a Lua script can build deeper ones, but nothing legitimate comes near this.
pub const DEFAULT_MAX_DEPTH: usize = 512;

/// Resumable framer for one stream of replies.
#[derive(Debug)]
pub struct ReplyFramer {
    max_depth: usize,
    /// Offset of the first byte not yet accounted for in the frame being scanned.
    pos: usize,
    /// Elements still expected at each open aggregate level.
    open: Vec<u64>,
    /// How long the buffer must be for the bulk string being scanned to be complete; 0 when
    /// no bulk string is waiting for its bytes.
    wants: usize,
    /// Where the payload of the bulk string waiting for its bytes ends (its CRLF starts).
    bulk_end: Option<usize>,
}

impl ReplyFramer {
    pub fn new(max_depth: usize) -> ReplyFramer {
        ReplyFramer {
            max_depth,
            pos: 0,
            open: Vec::new(),
            wants: 0,
            bulk_end: None,
        }
    }

    /// How many bytes the buffer must hold for the bulk string the framer is in the middle of
    /// to be complete (0 if it is in none): a reader can make room for a big value at once,
    /// rather than copying it each time its buffer doubles.
    pub fn wants(&self) -> usize {
        self.wants
    }

    /// How many bytes at the front of `buf` (`len` long), part of a reply not complete yet, the
    /// framer is done with: the caller may pass them on and tell it [`ReplyFramer::taken`].
    pub fn movable(&self, len: usize) -> usize {
        match self.bulk_end {
            Some(end) => end.min(len),
            None => self.pos.min(len),
        }
    }

    /// The caller removed the first `n` bytes of the reply being framed, `n` at most what
    /// [`ReplyFramer::movable`] allowed: the next call's buffer starts after them, and the
    /// length returned when the reply is complete counts from there.
    pub fn taken(&mut self, n: usize) {
        self.pos = self.pos.saturating_sub(n);
        self.wants = self.wants.saturating_sub(n);
        if let Some(end) = &mut self.bulk_end {
            *end -= n;
        }
    }

    /// Length of the complete reply at the front of `buf`, or `Ok(None)` if it is not all there
    /// yet. `buf` must start with the same bytes on every call until a length is returned (or
    /// with what is left of them after [`ReplyFramer::taken`]); the caller then removes that
    /// many bytes and the framer starts afresh.
    pub fn frame_len(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        loop {
            let Some(element_end) = self.element(buf)? else {
                return Ok(None);
            };
            self.pos = element_end;
            // An element ended: close every aggregate it completes.
            loop {
                match self.open.last_mut() {
                    None => {
                        let len = self.pos;
                        self.pos = 0;
                        return Ok(Some(len));
                    }
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }

    /// Scans the element at `self.pos`. Returns where a scalar element ends; an aggregate header
    /// is pushed and scanning goes on into its children.
    fn element(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if let Some(end) = self.bulk_end {
            return self.bulk_tail(buf, end);
        }
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let Some(cr) = find_crlf(buf, self.pos + 1) else {
                return Ok(None);
            };
            let line = &buf[self.pos + 1..cr];
            let after_line = cr + 2;
            match kind {
                b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => return Ok(Some(after_line)),
                b'$' | b'!' | b'=' => {
                    let len = parse_len(line)?;
                    let Ok(len) = usize::try_from(len) else {
                        // `$-1`: the RESP2 null bulk string.
                        return Ok(Some(after_line));
                    };
                    return self.bulk_tail(buf, after_line.saturating_add(len));
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = parse_len(line)?;
                    let Ok(n) = u64::try_from(n) else {
                        // `*-1`: the RESP2 null array.
                        return Ok(Some(after_line));
                    };
                    let children = match kind {
                        b'%' => n * 2,
                        // An attribute map is followed by the value it describes.
                        b'|' => n * 2 + 1,
                        _ => n,
                    };
                    if children == 0 {
                        return Ok(Some(after_line));
                    }
                    if self.open.len() >= self.max_depth {
                        return Err(FrameError::TooDeep(self.max_depth));
                    }
                    self.open.push(children);
                    self.pos = after_line;
                }
                other => return Err(FrameError::BadType(other)),
            }
        }
    }
}

impl ReplyFramer {
    /// Where the bulk string whose payload ends at `end` ends, once all of it is there.
    fn bulk_tail(&mut self, buf: &[u8], end: usize) -> Result<Option<usize>, FrameError> {
        if buf.len() < end.saturating_add(2) {
            self.wants = end.saturating_add(2);
            self.bulk_end = Some(end);
            return Ok(None);
        }
        self.wants = 0;
        self.bulk_end = None;
        if &buf[end..end + 2] != b"\r\n" {
            return Err(FrameError::MissingCrlf);
        }
        Ok(Some(end + 2))
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    let cr = rest.windows(2).position(|w| w == b"\r\n")?;
    Some(from + cr)
}

fn parse_len(line: &[u8]) -> Result<i64, FrameError> {
    match super::request::parse_i64(line) {
        Some(n) if n >= -1 && n <= u32::MAX as i64 * 16 => Ok(n),
        _ => Err(FrameError::BadLength),
    }
}

/// Length of the complete reply at the front of `buf`, scanned in one go.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    ReplyFramer::new(DEFAULT_MAX_DEPTH).frame_len(buf)
}

/// Whether a complete reply is an error (`-ERR ...` or RESP3 `!<len>`).
pub fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-' | b'!'))
}

/// The value of an integer reply (`:<n>\r\n`).
pub fn integer(reply: &[u8]) -> Option<i64> {
    let body = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    super::request::parse_i64(body)
}

/// The payload of a bulk or verbatim string reply (`$<n>\r\n...`, `=<n>\r\ntxt:...`).
pub fn bulk_payload(reply: &Bytes) -> Option<Bytes> {
    let kind = *reply.first()?;
    if kind != b'$' && kind != b'=' {
        return None;
    }
    let cr = find_crlf(reply, 1)?;
    let len = usize::try_from(parse_len(&reply[1..cr]).ok()?).ok()?;
    let start = cr + 2;
    let payload = reply.get(start..start + len)?;
    let payload = if kind == b'=' {
        payload.get(4..)? // "txt:"
    } else {
        payload
    };
    Some(reply.slice_ref(payload))
}

/// The elements of an array reply (`*<n>`, or RESP3 `~<n>` and push `><n>`), each as its own
/// raw frame. `None` when `reply` is not an array or is malformed.
pub fn array_elements(reply: &Bytes) -> Option<Vec<Bytes>> {
    let kind = *reply.first()?;
    if kind != b'*' && kind != b'~' && kind != b'>' {
        return None;
    }
    let cr = find_crlf(reply, 1)?;
    let n = usize::try_from(parse_len(&reply[1..cr]).ok()?).ok()?;
    let mut at = cr + 2;
    let mut out = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let len = frame_len(&reply[at..]).ok()??;
        out.push(reply.slice(at..at + len));
        at += len;
    }
    (at == reply.len()).then_some(out)
}

#[cfg(test)]
mod tests;
