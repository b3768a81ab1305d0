//! The client request parser: RESP arrays of bulk strings and inline commands, with hard limits.
//!
//! This is the project's own code on purpose (see DESIGN.md): redis-protocol re-parses from the
//! first byte on every call, has no length caps and does not check the CRLF after a payload. Here
//! the parser keeps its place between reads, so a 500 MB argument arriving in 16 KiB pieces is
//! scanned once, and every length a peer announces is checked against a limit *before* anything
//! is reserved for it: a `$2000000000` header costs nothing.
//!
//! A violation yields a [`ProtocolError`] whose text is what the client is sent (Redis's own
//! wording where Redis has one); the session then closes that client only.

use bytes::{Bytes, BytesMut};

/// Limits applied to every client request. Defaults follow Redis's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (`proto-max-bulk-len`, 512 MiB in Redis).
    pub max_bulk_len: usize,
    /// Longest inline command line (Redis: 64 KiB).
    pub max_inline_len: usize,
    /// Most arguments in one command, name included.
    pub max_args: usize,
    /// Most bytes one client may have buffered but not yet parsed into a command
    /// (`client-query-buffer-limit`, 1 GiB in Redis).
    pub max_query_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_args: 1024 * 1024,
            max_query_buffer: 1024 * 1024 * 1024,
        }
    }
}

/// Why a client's input was refused. `Display` is the text of the `-ERR` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("Protocol error: expected CRLF after a bulk string")]
    MissingCrlf,
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    #[error("Protocol error: too big mbulk count string")]
    MultibulkHeaderTooBig,
    #[error("Protocol error: too big bulk count string")]
    BulkHeaderTooBig,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: too many arguments (limit {0})")]
    TooManyArgs(usize),
    #[error("Protocol error: query buffer limit of {0} bytes exceeded")]
    QueryBufferFull(usize),
}

/// One parsed command. `args[0]` is the command name as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    args: Vec<Bytes>,
    /// The exact RESP bytes the client sent, kept so a request routed whole to one shard is
    /// forwarded without re-encoding. `None` for inline commands.
    raw: Option<Bytes>,
}

impl Request {
    /// Builds a request from arguments (used for requests the proxy makes itself).
    pub fn from_args(args: Vec<Bytes>) -> Request {
        Request { args, raw: None }
    }

    pub fn args(&self) -> &[Bytes] {
        &self.args
    }

    /// The exact RESP bytes the client sent, if it sent RESP (not an inline command).
    pub fn raw(&self) -> Option<&Bytes> {
        self.raw.as_ref()
    }

    pub fn name(&self) -> &[u8] {
        &self.args[0]
    }

    /// Appends this request in RESP form to `out`: the original bytes when there are any.
    pub fn write_resp(&self, out: &mut BytesMut) {
        match &self.raw {
            Some(raw) => out.extend_from_slice(raw),
            None => super::encode::command(out, self.args.iter().map(|a| &a[..])),
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        lists::give(std::mem::take(&mut self.args));
    }
}

/// Argument lists of requests gone, kept on their thread for the requests parsed next there,
/// so that a request allocates nothing of its own: a request lives from its parse to its
/// dispatch, on one worker, so a handful of lists serves a worker's every client. Lists for
/// many arguments are not kept, nor more than [`KEEP`] lists (at most 64 KiB a thread).
mod lists {
    use std::cell::RefCell;

    use bytes::Bytes;

    const KEEP: usize = 128;
    const MAX_ARGS: usize = 16;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<Bytes>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty list, one given back if there is one.
    pub(super) fn take() -> Vec<Bytes> {
        SPARE
            .try_with(|spare| spare.try_borrow_mut().ok()?.pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    pub(super) fn give(mut list: Vec<Bytes>) {
        if list.capacity() == 0 || list.capacity() > MAX_ARGS {
            return;
        }
        list.clear();
        // At thread exit the pool may be gone: the list is then freed.
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                if spare.len() < KEEP {
                    spare.push(list);
                }
            }
        });
    }
}

/// A command still arriving, whose last argument is a big payload (see
/// [`RequestParser::unfinished`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The arguments before the last, the command name first.
    pub head: Vec<Bytes>,
    /// The last argument's length.
    pub len: usize,
}

/// Longest `*<n>` or `$<n>` header line Redis accepts before the CRLF.
const MAX_HEADER_LINE: usize = 64;
/// The parser never reserves more than this ahead of data that has actually arrived.
const MAX_RESERVE_AHEAD: usize = 1024 * 1024;

/// Where the parser stands inside the command at the front of the buffer.
#[derive(Debug, Default)]
enum State {
    /// Nothing of the next command consumed yet.
    #[default]
    Start,
    /// Inside a multibulk: `remaining` arguments still to read, scanning from `pos`.
    Multibulk {
        remaining: usize,
        pos: usize,
        /// Byte ranges of the arguments read so far, relative to the command's first byte.
        spans: Vec<(usize, usize)>,
        /// Length of the bulk string whose header was read, when waiting for its payload.
        bulk: Option<usize>,
    },
    /// Inside an inline line: bytes before `scanned` hold no newline.
    Inline { scanned: usize },
}

/// Incremental request parser for one client connection.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    state: State,
    /// The argument spans of the last command, kept for the next one: one allocation per
    /// connection rather than per command.
    spare: Vec<(usize, usize)>,
}

impl RequestParser {
    pub fn new(limits: Limits) -> RequestParser {
        RequestParser {
            limits,
            state: State::Start,
            spare: Vec::new(),
        }
    }

    /// Takes the next complete command off the front of `buf`.
    ///
    /// `Ok(None)` means more input is needed; the parser remembers how far it got, so calling
    /// again after more bytes arrive does not rescan them. After an `Err` the connection must be
    /// closed: the stream position is lost.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            if let State::Start = self.state {
                // Redis skips empty lines and empty multibulks between commands.
                match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => {
                        let Some((count, header_len)) = read_header(buf, 0, true)? else {
                            return self.check_buffered(buf);
                        };
                        if count <= 0 {
                            // `*0` and `*-1` are empty requests: Redis ignores them.
                            let _ = buf.split_to(header_len);
                            continue;
                        }
                        let count = usize::try_from(count)
                            .map_err(|_| ProtocolError::InvalidMultibulkLength)?;
                        if count > self.limits.max_args {
                            return Err(if count > i32::MAX as usize {
                                ProtocolError::InvalidMultibulkLength
                            } else {
                                ProtocolError::TooManyArgs(self.limits.max_args)
                            });
                        }
                        let mut spans = std::mem::take(&mut self.spare);
                        spans.reserve(count.min(64));
                        self.state = State::Multibulk {
                            remaining: count,
                            pos: header_len,
                            spans,
                            bulk: None,
                        };
                    }
                    Some(_) => self.state = State::Inline { scanned: 0 },
                }
            }
            return match self.state {
                State::Start => unreachable!("handled above"),
                State::Multibulk { .. } => self.next_multibulk(buf),
                State::Inline { .. } => match self.next_inline(buf)? {
                    Some(Some(request)) => Ok(Some(request)),
                    // An empty line: skipped, look for the next command.
                    Some(None) => continue,
                    None => Ok(None),
                },
            };
        }
    }

    fn next_multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let State::Multibulk {
            remaining,
            pos,
            spans,
            bulk,
        } = &mut self.state
        else {
            unreachable!("called in multibulk state")
        };
        while *remaining > 0 {
            let len = match *bulk {
                Some(len) => len,
                None => {
                    match buf.get(*pos) {
                        None => return self.check_buffered(buf),
                        Some(b'$') => {}
                        Some(&other) => return Err(ProtocolError::ExpectedBulk(other as char)),
                    }
                    let Some((len, header_len)) = read_header(buf, *pos, false)? else {
                        return self.check_buffered(buf);
                    };
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|&l| l <= self.limits.max_bulk_len)
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    *pos += header_len;
                    *bulk = Some(len);
                    len
                }
            };
            let end = *pos + len;
            if buf.len() < end + 2 {
                // Reserve for what is announced, but never far ahead of what has arrived.
                let want = (end + 2 - buf.len()).min(MAX_RESERVE_AHEAD);
                buf.reserve(want);
                return self.check_buffered(buf);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            spans.push((*pos, end));
            *pos = end + 2;
            *bulk = None;
            *remaining -= 1;
        }
        let State::Multibulk { pos, mut spans, .. } = std::mem::take(&mut self.state) else {
            unreachable!("still in multibulk state")
        };
        let raw = buf.split_to(pos).freeze();
        let mut args = lists::take();
        args.extend(spans.iter().map(|&(s, e)| raw.slice(s..e)));
        // A command of many arguments does not leave its spans behind for good.
        if spans.capacity() <= 64 {
            spans.clear();
            self.spare = spans;
        }
        Ok(Some(Request {
            args,
            raw: Some(raw),
        }))
    }

    /// `Ok(Some(None))` is an empty line.
    fn next_inline(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Option<Request>>, ProtocolError> {
        let State::Inline { scanned } = &mut self.state else {
            unreachable!("called in inline state")
        };
        let Some(nl) = buf[*scanned..].iter().position(|&b| b == b'\n') else {
            *scanned = buf.len();
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::InlineTooBig);
            }
            return Ok(None);
        };
        let nl = *scanned + nl;
        if nl > self.limits.max_inline_len {
            return Err(ProtocolError::InlineTooBig);
        }
        self.state = State::Start;
        let line = buf.split_to(nl + 1).freeze();
        let mut text = &line[..nl];
        if text.last() == Some(&b'\r') {
            text = &text[..text.len() - 1];
        }
        let args = split_inline(text)?;
        if args.is_empty() {
            return Ok(Some(None));
        }
        if args.len() > self.limits.max_args {
            return Err(ProtocolError::TooManyArgs(self.limits.max_args));
        }
        Ok(Some(Some(Request::from_args(args))))
    }

    /// The command at the front of `buf`, when all it still lacks is the payload of its last
    /// argument, which is at least `min` bytes long: the arguments before that one (copied),
    /// and the payload's length. `None` in any other state, also when the payload is all there.
    /// Asked after [`next`](Self::next) said more input is needed.
    pub fn unfinished(&self, buf: &[u8], min: usize) -> Option<Unfinished> {
        let State::Multibulk {
            remaining: 1,
            pos,
            spans,
            bulk: Some(len),
        } = &self.state
        else {
            return None;
        };
        if *len < min || buf.len() >= pos + len {
            return None;
        }
        Some(Unfinished {
            head: spans
                .iter()
                .map(|&(s, e)| Bytes::copy_from_slice(&buf[s..e]))
                .collect(),
            len: *len,
        })
    }

    /// Hands over the [`unfinished`](Self::unfinished) command at the front of `buf`: takes
    /// its bytes up to where the last payload starts off `buf` and returns them. The caller
    /// passes the payload and its CRLF on itself; the parser starts afresh after them.
    pub fn hand_over(&mut self, buf: &mut BytesMut) -> Bytes {
        let State::Multibulk { pos, mut spans, .. } = std::mem::take(&mut self.state) else {
            unreachable!("hand_over after unfinished said yes")
        };
        if spans.capacity() <= 64 {
            spans.clear();
            self.spare = spans;
        }
        buf.split_to(pos).freeze()
    }

    fn check_buffered(&self, buf: &BytesMut) -> Result<Option<Request>, ProtocolError> {
        if buf.len() > self.limits.max_query_buffer {
            return Err(ProtocolError::QueryBufferFull(self.limits.max_query_buffer));
        }
        Ok(None)
    }
}

/// Reads a `*<n>\r\n` (`multibulk`) or `$<n>\r\n` header at `at`.
/// `Ok(None)`: the line is not complete yet.
fn read_header(
    buf: &[u8],
    at: usize,
    multibulk: bool,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let (invalid, too_big) = if multibulk {
        (
            ProtocolError::InvalidMultibulkLength,
            ProtocolError::MultibulkHeaderTooBig,
        )
    } else {
        (
            ProtocolError::InvalidBulkLength,
            ProtocolError::BulkHeaderTooBig,
        )
    };
    let window = &buf[at + 1..buf.len().min(at + 1 + MAX_HEADER_LINE + 2)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.len() > MAX_HEADER_LINE {
            return Err(too_big);
        }
        return Ok(None);
    };
    // Past the limit, even when the line ends right at the edge of the window (the '\n' after
    // it would lie outside the window, and the header would wait for more input forever).
    if cr > MAX_HEADER_LINE {
        return Err(too_big);
    }
    match window.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => {
            let n = parse_i64(&window[..cr]).ok_or(invalid)?;
            Ok(Some((n, 1 + cr + 2)))
        }
        Some(_) => Err(invalid),
    }
}

/// Parses a decimal integer the way Redis's `string2ll` does: optional `-`, no `+`, no leading
/// zeros, no spaces, no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] => return (!neg).then_some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        n = if neg {
            n.checked_mul(10)?.checked_sub(d)?
        } else {
            n.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(n)
}

/// Splits an inline command line into arguments the way Redis's `sdssplitargs` does: spaces
/// separate, `"..."` understands `\n \r \t \b \a \\ \" \xHH`, `'...'` understands `\'`, and a
/// closing quote must be followed by a space or the end of the line.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        let mut quote: Option<u8> = None;
        loop {
            match quote {
                None => match line.get(i) {
                    None => break,
                    Some(c) if c.is_ascii_whitespace() => break,
                    Some(&q @ (b'"' | b'\'')) => {
                        quote = Some(q);
                        i += 1;
                    }
                    Some(&c) => {
                        arg.push(c);
                        i += 1;
                    }
                },
                Some(q) => {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    if c == q {
                        // The closing quote must end the argument.
                        if line.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    if c == b'\\' && i + 1 < line.len() {
                        let next = line[i + 1];
                        if q == b'"' {
                            if next == b'x'
                                && i + 3 < line.len()
                                && line[i + 2].is_ascii_hexdigit()
                                && line[i + 3].is_ascii_hexdigit()
                            {
                                arg.push(hex(line[i + 2]) << 4 | hex(line[i + 3]));
                                i += 4;
                                continue;
                            }
                            arg.push(match next {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            i += 2;
                            continue;
                        }
                        if next == b'\'' {
                            arg.push(b'\'');
                            i += 2;
                            continue;
                        }
                    }
                    arg.push(c);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests;
