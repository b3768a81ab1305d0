//! Commands: the Redis 7 command table, where each command's keys are, and how it is routed.

pub mod lock;
mod plan;
pub mod spec;
mod table;

pub use plan::{
    identify, is_credential, plan, plan_and_flags, plan_args, printable, wrong_arity, Local, Merge,
    Part, Plan, PubSubCommand, TxCommand, CROSSSLOT, PROXY_ANSWERED,
};
pub use spec::CommandSpec;

use spec::{flags, BeginSearch, FindKeys};

/// Longest command name in the table, plus room for `container|sub`.
const MAX_NAME: usize = 64;

/// Looks up a command (or `container|sub`) by name, ignoring ASCII case.
///
/// Every request is looked up, so this hashes the name once and finds the hash in an
/// open-addressed table (one probe, nearly always), then compares one name: a binary search
/// over the names cost about 400 instructions per request, mostly in `memcmp`, and one over
/// their hashes about 250.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut lower = [0u8; MAX_NAME];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let hash = name_hash(lower);
    let index = name_index();
    let mut at = hash as usize & index.mask;
    loop {
        let (h, entry) = index.slots[at];
        if entry == 0 {
            return None;
        }
        if h == hash {
            let spec = &table::COMMANDS[usize::from(entry - 1)];
            return (spec.name.as_bytes() == lower).then_some(spec);
        }
        at = (at + 1) & index.mask;
    }
}

/// The table's names by hash: slot `hash & mask`, or the first free one after it, holds
/// `(hash, entry + 1)`; 0 marks a free slot. No two names share a hash (a test checks), so a
/// hash finds at most one entry. At most a quarter of the slots are taken, so a search stops
/// after a probe or two.
struct NameIndex {
    mask: usize,
    slots: Box<[(u64, u16)]>,
}

fn name_index() -> &'static NameIndex {
    static INDEX: std::sync::OnceLock<NameIndex> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        let size = (table::COMMANDS.len() * 4).next_power_of_two();
        let mask = size - 1;
        let mut slots = vec![(0u64, 0u16); size].into_boxed_slice();
        for (i, spec) in table::COMMANDS.iter().enumerate() {
            let hash = name_hash(spec.name.as_bytes());
            let mut at = hash as usize & mask;
            while slots[at].1 != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = (hash, i as u16 + 1);
        }
        NameIndex { mask, slots }
    })
}

/// The hash [`lookup`] finds a table entry by.
fn name_hash(name: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name)
}

/// Looks up the subcommand `sub` of a container command such as `OBJECT` or `CLIENT`.
pub fn lookup_sub(container: &CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    let mut name = Vec::with_capacity(container.name.len() + 1 + sub.len());
    name.extend_from_slice(container.name.as_bytes());
    name.push(b'|');
    name.extend_from_slice(sub);
    lookup(&name)
}

/// Every command and subcommand the table knows.
pub fn all() -> &'static [CommandSpec] {
    table::COMMANDS
}

/// Which command a request named, for statistics: an entry of the table, one of the proxy's
/// own commands (locks), or `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandId(u16);

impl CommandId {
    /// The table entry `spec`, which must come from the table ([`lookup`]).
    pub fn of(spec: &'static CommandSpec) -> CommandId {
        let offset = spec as *const CommandSpec as usize - table::COMMANDS.as_ptr() as usize;
        let index = offset / std::mem::size_of::<CommandSpec>();
        debug_assert!(index < table::COMMANDS.len());
        CommandId(index as u16)
    }

    /// One of the proxy's own commands, by its place in [`crate::command::lock::COMMANDS`].
    pub fn own(index: usize) -> CommandId {
        CommandId((table::COMMANDS.len() + index) as u16)
    }

    /// `SHARDIS ...`, the proxy's administration command.
    pub fn admin() -> CommandId {
        CommandId((table::COMMANDS.len() + crate::command::lock::COMMANDS.len()) as u16)
    }

    /// CLIENT SETINFO (Redis 7.2), which the command table, taken from Redis 7.0, lacks.
    pub fn client_setinfo() -> CommandId {
        CommandId(Self::admin().0 + 1)
    }

    pub fn unknown() -> CommandId {
        CommandId(Self::admin().0 + 2)
    }

    /// How many ids there are.
    pub fn count() -> usize {
        Self::unknown().index() + 1
    }

    /// The table entry, for a command of the table.
    pub fn spec(self) -> Option<&'static CommandSpec> {
        table::COMMANDS.get(self.index())
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn from_index(index: usize) -> CommandId {
        CommandId(index as u16)
    }

    /// Redis's lower-case name (`client|list` for a subcommand), or `unknown`.
    pub fn name(self) -> &'static str {
        let i = self.index();
        let own = crate::command::lock::COMMANDS;
        match table::COMMANDS.get(i) {
            Some(spec) => spec.name,
            None if self == Self::admin() => "shardis",
            None if self == Self::client_setinfo() => "client|setinfo",
            None => own
                .get(i - table::COMMANDS.len())
                .map_or("unknown", |c| c.0),
        }
    }
}

impl CommandSpec {
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Whether `argc` arguments (name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let arity = self.arity as isize;
        let argc = argc as isize;
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }
}

/// The arguments of a command were not what its key specs describe (a bad `numkeys`, a key
/// position past the end): the command is malformed and Redis will reject it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedKeys;

/// Where a command's keys are: held inline for up to four, so that planning a GET or a SET
/// allocates nothing for them.
pub type KeyPositions = smallvec::SmallVec<[usize; 4]>;

/// Positions in `args` of every key the command names, following Redis's key-spec rules
/// (`getKeysUsingKeySpecs`). `SORT ... STORE dest` is the one command whose destination Redis
/// does not describe by a spec; it is found here by its keyword.
pub fn key_positions(
    spec: &CommandSpec,
    args: &[bytes::Bytes],
) -> Result<KeyPositions, MalformedKeys> {
    let argc = args.len() as i64;
    let mut keys = KeyPositions::new();
    for ks in spec.keys.iter().filter(|ks| !ks.not_key) {
        let first = match ks.begin {
            BeginSearch::Index(i) => i64::from(i),
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => {
                let start = if start_from > 0 {
                    i64::from(start_from)
                } else {
                    argc + i64::from(start_from)
                };
                let end = if start_from > 0 { argc - 1 } else { 0 };
                let mut i = start;
                let mut found = None;
                while i != end {
                    if i >= argc || i < 1 {
                        break;
                    }
                    if args[i as usize].eq_ignore_ascii_case(keyword.as_bytes()) {
                        found = Some(i + 1);
                        break;
                    }
                    i += if start <= end { 1 } else { -1 };
                }
                match found {
                    Some(first) => first,
                    // An optional keyword (GEORADIUS ... STORE) that is absent: no keys here.
                    None => continue,
                }
            }
        };
        let (first, last, step) = match ks.find {
            FindKeys::Range {
                last_key,
                step,
                limit,
            } => {
                let last_key = i64::from(last_key);
                let last = if last_key >= 0 {
                    first + last_key
                } else if limit <= 1 {
                    argc + last_key
                } else {
                    first + ((argc - first) / i64::from(limit) + last_key)
                };
                (first, last, i64::from(step))
            }
            FindKeys::KeyNum {
                key_num_idx,
                first_key,
                step,
            } => {
                let at = first + i64::from(key_num_idx);
                let numkeys = args
                    .get(at as usize)
                    .and_then(|n| crate::resp::parse_i64(n))
                    .filter(|&n| n >= 0 && n <= argc)
                    .ok_or(MalformedKeys)?;
                if numkeys == 0 {
                    continue;
                }
                let first = first + i64::from(first_key);
                (first, first + numkeys - 1, i64::from(step))
            }
        };
        if last >= argc || last < first || first >= argc || step < 1 {
            return Err(MalformedKeys);
        }
        let mut i = first;
        while i <= last {
            keys.push(i as usize);
            i += step;
        }
    }
    if spec.name == "sort" {
        // SORT key [... STORE dest]: every destination is a key too (Redis keeps the last).
        keys.extend(sort_options(args).stores);
    }
    Ok(keys)
}

/// Whether the spec describes a command that may block its connection.
pub fn is_blocking(spec: &CommandSpec, args: &[bytes::Bytes]) -> bool {
    if !spec.has(flags::BLOCKING) {
        return false;
    }
    match spec.name {
        // XREAD and XREADGROUP block only when asked to.
        "xread" | "xreadgroup" => xread_block_at(args).is_some(),
        _ => true,
    }
}

/// Where the BLOCK option of XREAD / XREADGROUP is: among the options before STREAMS, not
/// inside `GROUP group consumer` or among the stream names.
pub fn xread_block_at(args: &[bytes::Bytes]) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        let arg = &args[i];
        if arg.eq_ignore_ascii_case(b"streams") {
            return None;
        }
        if arg.eq_ignore_ascii_case(b"block") {
            return Some(i);
        }
        i += if arg.eq_ignore_ascii_case(b"group") {
            3
        } else {
            1
        };
    }
    None
}

/// A SORT / SORT_RO's options as Redis reads them (`args[0]` is the command): each option's
/// arguments are skipped, so a pattern that reads `store` is not taken for the STORE option.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SortOptions {
    /// BY and GET patterns, with the option each came from.
    pub patterns: Vec<(&'static str, bytes::Bytes)>,
    /// Where every STORE destination is.
    pub stores: Vec<usize>,
}

pub fn sort_options(args: &[bytes::Bytes]) -> SortOptions {
    let mut out = SortOptions::default();
    let mut i = 2;
    while i < args.len() {
        let arg = &args[i];
        let has = |n: usize| i + n < args.len();
        if arg.eq_ignore_ascii_case(b"by") && has(1) {
            out.patterns.push(("BY", args[i + 1].clone()));
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"get") && has(1) {
            out.patterns.push(("GET", args[i + 1].clone()));
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"limit") && has(2) {
            i += 3;
        } else if arg.eq_ignore_ascii_case(b"store") && has(1) {
            out.stores.push(i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

/// The patterns of a SORT / SORT_RO that read other keys: BY and GET patterns with a `*`
/// (Redis reads no key for one without: BY sorts nothing, GET gives nil, and `GET #` is the
/// element itself), with the option each came from.
pub fn sort_patterns(args: &[bytes::Bytes]) -> Vec<(&'static str, bytes::Bytes)> {
    let mut patterns = sort_options(args).patterns;
    patterns.retain(|(_, p)| p.contains(&b'*'));
    patterns
}

/// What every key a SORT pattern forms starts with: the part before its `*`.
pub fn pattern_fixed_part(pattern: &[u8]) -> &[u8] {
    match pattern.iter().position(|&b| b == b'*') {
        Some(at) => &pattern[..at],
        None => pattern,
    }
}

#[cfg(test)]
mod tests;
