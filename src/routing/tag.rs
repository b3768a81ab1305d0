//! Hash tags: `user:{42}:name` and `user:{42}:mail` hash on `42` alone, so they share a shard.

/// A pair of delimiter bytes, `{}` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashTag {
    open: u8,
    close: u8,
}

impl HashTag {
    /// Two ASCII characters, or `None` for anything else.
    pub fn parse(spec: &str) -> Option<HashTag> {
        match spec.as_bytes() {
            &[open, close] if open.is_ascii() && close.is_ascii() => Some(HashTag { open, close }),
            _ => None,
        }
    }

    /// Where the first tag of `key` closes, when it has a non-empty one.
    pub fn closed_at(&self, key: &[u8]) -> Option<usize> {
        let start = memchr::memchr(self.open, key)?;
        let len = memchr::memchr(self.close, &key[start + 1..])?;
        (len > 0).then_some(start + 1 + len)
    }

    /// The part of `key` that is hashed: the bytes between the first `open` and the first
    /// `close` after it, when that is not empty; otherwise the whole key. This is both Redis
    /// Cluster's and twemproxy's rule.
    #[inline]
    pub fn hashed_part<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        let Some(start) = memchr::memchr(self.open, key) else {
            return key;
        };
        let rest = &key[start + 1..];
        match memchr::memchr(self.close, rest) {
            Some(end) if end > 0 => &rest[..end],
            _ => key,
        }
    }
}
