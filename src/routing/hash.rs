//! Key hash functions. Each yields the 32-bit value the ring is searched with.
//!
//! `fnv1a_64` and `md5` reproduce twemproxy 0.5.0 bit for bit. Its `hash_fnv1a_64` keeps only
//! 32 bits of state and widens each key byte from a C `char`, which is signed on x86-64, so a
//! byte >= 0x80 enters the hash sign-extended. shardis follows the x86-64 build (Debian's
//! `nutcracker` there); an arm64 twemproxy, where `char` is unsigned, places keys containing
//! such bytes differently from its own x86-64 build.

use md5::{Digest, Md5};

/// The hash applied to a key (or its hash-tag part) before the ring lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFn {
    /// XXH3 64-bit, low 32 bits. The default: fast and well distributed.
    Xxh3,
    /// twemproxy's `fnv1a_64`, for key placement identical to nutcracker's.
    Fnv1a64,
    /// twemproxy's `md5`: the first four digest bytes, little-endian.
    Md5,
}

impl HashFn {
    pub fn parse(name: &str) -> Option<HashFn> {
        match name {
            "xxh3" => Some(HashFn::Xxh3),
            "fnv1a_64" => Some(HashFn::Fnv1a64),
            "md5" => Some(HashFn::Md5),
            _ => None,
        }
    }

    #[inline]
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashFn::Xxh3 => xxhash_rust::xxh3::xxh3_64(key) as u32,
            HashFn::Fnv1a64 => fnv1a_64_twemproxy(key),
            HashFn::Md5 => md5_word(key, 0),
        }
    }
}

/// twemproxy's `hash_fnv1a_64`: the 64-bit FNV constants truncated to 32 bits, and each byte
/// widened as a signed `char` (so 0x80 becomes 0xffffff80) before the XOR.
fn fnv1a_64_twemproxy(key: &[u8]) -> u32 {
    const INIT: u32 = 0xcbf2_9ce4_8422_2325_u64 as u32;
    const PRIME: u32 = 0x0000_0100_0000_01b3_u64 as u32;
    let mut hash = INIT;
    for &b in key {
        hash ^= b as i8 as i32 as u32;
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// Word `n` (0..4) of the MD5 digest of `data`, little-endian: ketama's point function.
pub(super) fn md5_word(data: &[u8], n: usize) -> u32 {
    let digest = Md5::digest(data);
    let w = &digest[n * 4..n * 4 + 4];
    u32::from_le_bytes([w[0], w[1], w[2], w[3]])
}
