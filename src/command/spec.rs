//! What the proxy knows about one Redis command: arity, flags and where its keys are.
//!
//! The key positions follow Redis 7's own "key specs" model (the ninth element of `COMMAND INFO`), so that a
//! command whose keys move (`ZUNIONSTORE dest numkeys k1 k2`, `XREAD ... STREAMS k1 k2 id1 id2`)
//! is described by data, not by a special case in the router. The table itself lives in
//! `table.rs` and is generated from a real redis-server by `tools/gen_command_table.py`.

/// One command (or one subcommand, named `container|sub`, such as `object|encoding`).
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// Lower-case name; subcommands are `container|sub`.
    pub name: &'static str,
    /// Redis arity: positive = exact argument count including the name, negative = at least -n.
    pub arity: i16,
    /// Bit set of `flags::*`.
    pub flags: u32,
    /// Where the keys are; empty for keyless commands.
    pub keys: &'static [KeySpec],
}

/// Command flags the proxy acts on (a subset of Redis's).
pub mod flags {
    pub const WRITE: u32 = 1 << 0;
    pub const READONLY: u32 = 1 << 1;
    pub const ADMIN: u32 = 1 << 2;
    pub const BLOCKING: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const MOVABLEKEYS: u32 = 1 << 6;
    pub const FAST: u32 = 1 << 7;
    pub const DENYOOM: u32 = 1 << 8;
    pub const LOADING: u32 = 1 << 9;
    pub const STALE: u32 = 1 << 10;
    pub const NO_AUTH: u32 = 1 << 11;
    /// The command has subcommands (`CLIENT`, `OBJECT`, ...): look up `name|sub` instead.
    pub const CONTAINER: u32 = 1 << 12;
}

/// One Redis key spec: where the search starts, then how keys are found from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: BeginSearch,
    pub find: FindKeys,
    /// The spec does not name real keys (Redis's `not_key`), e.g. channels: ignored for routing.
    pub not_key: bool,
    /// Redis flags the spec `incomplete`: it may miss keys (e.g. `SORT ... BY` patterns).
    pub incomplete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// Keys start at this argument index (0 = the command name).
    Index(u16),
    /// Keys start after `keyword`, searched for from argument `start_from`
    /// (negative: counted from the end and searched backwards).
    Keyword {
        keyword: &'static str,
        start_from: i16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys from the begin index to `last_key` (relative to begin; negative counts from the end
    /// of the arguments, -1 = last), every `step` arguments. With `last_key == -1`, `limit`
    /// keeps only 1/limit of the remaining arguments (0 and 1 = no limit).
    Range {
        last_key: i16,
        step: u16,
        limit: u16,
    },
    /// The argument at `key_num_idx` (relative to begin) holds the number of keys; the first
    /// key is at `first_key` (relative to begin), then every `step` arguments.
    KeyNum {
        key_num_idx: u16,
        first_key: u16,
        step: u16,
    },
}
