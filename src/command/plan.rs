//! Planning: what to do with one parsed request.
//!
//! A plan is decided from the request and the router alone, with no I/O, so every routing rule
//! is unit-tested here. The client session carries plans out.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::spec::flags::{ADMIN, CONTAINER, PUBSUB, READONLY, WRITE};
use super::{is_blocking, key_positions, lookup, lookup_sub, CommandId, CommandSpec};
use crate::config::Policy;
use crate::resp::{encode, Request};
use crate::routing::Router;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Forward the request unchanged to this shard.
    Forward(usize),
    /// Forward unchanged to any one reachable shard: the command is keyless and every shard
    /// answers it the same way (COMMAND, TIME, `... HELP`).
    AnyShard,
    /// Send one sub-request per shard, then merge the replies.
    Split { merge: Merge, parts: Vec<Part> },
    /// Send the request unchanged to every shard, then merge the replies.
    Broadcast(Merge),
    /// The proxy answers itself.
    Local(Local),
    /// Refused or invalid: the reply is this error (the text after `-`).
    Error(String),
    /// A command that may block its connection (BLPOP, XREAD BLOCK ...): sent on a connection
    /// of its own to this shard, so it stalls nobody else. `timeout: None` blocks forever.
    Blocking {
        shard: usize,
        timeout: Option<Duration>,
    },
    /// WAIT numreplicas timeout: asked of every shard this client wrote to.
    WaitReplicas { timeout: Option<Duration> },
    /// SCAN, with a cursor that also names the shard being scanned.
    Scan,
    /// MULTI, EXEC, DISCARD, UNWATCH: the session's transaction state decides.
    Transaction(TxCommand),
    /// WATCH, all of whose keys live on this shard: pins the session to a connection there.
    Watch(usize),
    /// A subscription command: the session's subscriber connections carry it.
    PubSub(PubSubCommand),
    /// A fenced-lock command (or a SET under the lock prefix), for the shard of its key.
    Lock(Box<crate::command::lock::LockCommand>),
}

/// The transaction commands other than WATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxCommand {
    Multi,
    Exec,
    Discard,
    Unwatch,
}

/// The subscription commands, named by what they subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubCommand {
    Subscribe,
    Unsubscribe,
    PSubscribe,
    PUnsubscribe,
    SSubscribe,
    SUnsubscribe,
}

/// One shard's share of a split request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub shard: usize,
    /// The sub-request, RESP-encoded.
    pub request: Bytes,
    /// For MGET: where each of this part's keys stands in the original request (0-based).
    pub positions: Vec<usize>,
}

/// How the replies of a split or broadcast request are combined into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// MGET: an array of `len` values in the original key order.
    Mget { len: usize },
    /// MSET: `+OK` when every part says so, else the first error.
    AllOk,
    /// FLUSHDB / FLUSHALL, sent as a script that keeps shardis' own keys (the epoch record
    /// and the lock state): `+OK` when every shard says so.
    Flush,
    /// SCRIPT KILL / FUNCTION KILL, sent to every primary: `+OK` when one killed something,
    /// `-NOTBUSY` when none was running one, else the first other error.
    Kill,
    /// DEL, UNLINK, EXISTS, TOUCH: integers summed.
    SumIntegers,
    /// DBSIZE: each shard's count less shardis' own keys there, summed.
    DbSize,
    /// INFO: the proxy's own sections, with the shards' keyspace summed.
    Info,
    /// KEYS: the arrays concatenated.
    Concat,
    /// PUBSUB CHANNELS / SHARDCHANNELS: the arrays joined without duplicates.
    Union,
    /// RANDOMKEY: one of the shards' keys, null only when every shard is empty.
    RandomKey,
    /// SCRIPT LOAD, FUNCTION LOAD / LIST / DUMP: every shard must answer the same; that answer.
    Same,
    /// SCRIPT EXISTS: per script, 1 only when every shard has it.
    AllExist,
    /// PUBSUB NUMSUB / SHARDNUMSUB: `[channel, count, ...]` with the counts summed.
    NumSub,
    /// PUBSUB NUMPAT: each shard counts every pattern a proxy subscriber holds; the largest.
    Max,
    /// WAIT: the replicas that acknowledged on every shard, so the smallest count. LASTSAVE:
    /// the time by which every primary had saved.
    Min,
    /// CONFIG GET: every primary's parameters, the proxy's own values where it decides.
    ConfigGet,
    /// SLOWLOG GET: every primary's entries, newest first, at most `count` (`None`: all).
    SlowlogGet { count: Option<usize> },
    /// LATENCY LATEST: per event, the latest spike over every primary.
    LatencyLatest,
    /// MEMORY STATS: sizes summed over the primaries, ratios the largest.
    MemoryStats,
    /// FUNCTION STATS: a script running anywhere, the engines' counts.
    FunctionStats,
    /// CONFIG SET / RESETSTAT, SLOWLOG RESET, LATENCY RESET: run on every node of every shard,
    /// `+OK` only when every node accepted it.
    EveryNode,
}

/// Commands the proxy answers from its own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Ping,
    Echo,
    Quit,
    Select,
    Hello,
    Auth,
    Reset,
    ClientSetName,
    ClientGetName,
    ClientId,
    ClientSetInfo,
    ClientList,
    ClientInfo,
    ClientKill,
    /// CLIENT NO-EVICT: accepted; the proxy never evicts its clients anyway.
    ClientNoEvict,
    /// `SHARDIS RELOAD`: re-read the configuration file (as SIGHUP does).
    Reload,
    /// ROLE: the proxy is a primary to its clients.
    Role,
    /// ACL WHOAMI: the user the session authenticated as.
    AclWhoami,
}

pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Decides what to do with `req`.
pub fn plan(req: &Request, router: &Router, policy: &Policy) -> Plan {
    plan_and_flags(req, router, policy).0
}

/// [`plan`], with the command's flags (`spec::flags`; 0 when it is not a known command), so
/// the caller need not look the command up again.
pub fn plan_and_flags(req: &Request, router: &Router, policy: &Policy) -> (Plan, u32, CommandId) {
    plan_args(req.args(), router, policy)
}

/// [`plan_and_flags`] for a command given as its arguments.
pub fn plan_args(args: &[Bytes], router: &Router, policy: &Policy) -> (Plan, u32, CommandId) {
    if let Some((plan, id)) = crate::command::lock::plan(args, router, policy) {
        let flags = match &plan {
            Plan::Lock(l) if !l.op.writes() => READONLY,
            _ => WRITE,
        };
        return (plan, flags, id);
    }
    if args[0].eq_ignore_ascii_case(b"shardis") {
        return (admin(args), ADMIN, CommandId::admin());
    }
    match resolve(args) {
        Ok(spec) => (
            route(spec, args, router, policy),
            spec.flags,
            CommandId::of(spec),
        ),
        Err((plan, id)) => (plan, 0, id),
    }
}

/// `SHARDIS <subcommand>`: the proxy's own administration.
fn admin(args: &[Bytes]) -> Plan {
    match args.get(1) {
        None => Plan::Error(wrong_arity("shardis")),
        Some(sub) if sub.eq_ignore_ascii_case(b"reload") && args.len() == 2 => {
            Plan::Local(Local::Reload)
        }
        Some(sub) if sub.eq_ignore_ascii_case(b"reload") => {
            Plan::Error(wrong_arity("shardis|reload"))
        }
        Some(sub) => Plan::Error(format!(
            "ERR unknown subcommand '{}'. Try SHARDIS RELOAD.",
            printable(sub, 128)
        )),
    }
}

/// Which command of the table (or subcommand) `args` names, as [`plan_args`] would count it.
pub fn identify(args: &[Bytes]) -> CommandId {
    match resolve(args) {
        Ok(spec) => CommandId::of(spec),
        Err((_, id)) => id,
    }
}

/// The command (or subcommand) `args` names, with its arity checked; else the plan that
/// answers without one.
fn resolve(args: &[Bytes]) -> Result<&'static CommandSpec, (Plan, CommandId)> {
    let Some(spec) = lookup(&args[0]) else {
        return Err((Plan::Error(unknown_command(args)), CommandId::unknown()));
    };
    let id = CommandId::of(spec);
    if !spec.arity_ok(args.len()) {
        return Err((Plan::Error(wrong_arity(spec.name)), id));
    }
    if !spec.has(CONTAINER) || args.len() == 1 {
        return Ok(spec);
    }
    // CLIENT SETINFO (Redis 7.2, sent by redis-py 5) is answered here even though the
    // table, taken from Redis 7.0, does not list it.
    if spec.name == "client" && args[1].eq_ignore_ascii_case(b"setinfo") {
        let plan = if args.len() == 4 {
            Plan::Local(Local::ClientSetInfo)
        } else {
            Plan::Error(wrong_arity("client|setinfo"))
        };
        return Err((plan, CommandId::client_setinfo()));
    }
    let Some(sub) = lookup_sub(spec, &args[1]) else {
        let msg = format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            printable(&args[1], 128),
            spec.name.to_ascii_uppercase()
        );
        // As on Redis, counted under no command.
        return Err((Plan::Error(msg), CommandId::unknown()));
    };
    if !sub.arity_ok(args.len()) {
        return Err((Plan::Error(wrong_arity(sub.name)), CommandId::of(sub)));
    }
    Ok(sub)
}

/// Routes a resolved command.
fn route(spec: &'static CommandSpec, args: &[Bytes], router: &Router, policy: &Policy) -> Plan {
    let keys = key_positions(spec, args);
    if let Some(&k) = keys.as_ref().ok().and_then(|keys| {
        keys.iter()
            .find(|&&k| crate::command::lock::is_reserved(&args[k]))
    }) {
        return Plan::Error(crate::command::lock::reserved_key(&args[k]));
    }
    if let Some(at) = names_reserved(spec.name, args) {
        return Plan::Error(format!(
            "ERR shardis does not run '{}' with {} that names its reserved keys ('{}...')",
            spec.name,
            if at == 0 { "code" } else { "an argument" },
            String::from_utf8_lossy(RESERVED_NAME)
        ));
    }
    if let Some(plan) = special(spec, args, router, policy) {
        return plan;
    }
    if let Some(reason) = refusal(spec) {
        return Plan::Error(format!(
            "ERR shardis does not support '{}': {reason}",
            spec.name
        ));
    }
    let keys = match keys {
        Ok(keys) => keys,
        // Malformed (a bad numkeys, say): the command cannot run, so let the shard of its
        // first argument answer with Redis's own error text. Nothing is executed.
        Err(_) => return Plan::Forward(router.shard_of(args.get(1).map_or(&b""[..], |a| a))),
    };
    if keys.is_empty() {
        // Keyless scripts and functions run on one shard, chosen as for COMMAND: every shard
        // has the same scripts, and such a script may touch no key anyway.
        let keyless_ok = matches!(
            spec.name,
            "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro"
        );
        // `numkeys 0` where Redis wants at least one key (SINTERCARD, ZUNION, LMPOP ...):
        // nothing can run, so one shard answers with Redis's own error text.
        let numkeys_zero = spec
            .keys
            .iter()
            .any(|ks| matches!(ks.find, super::spec::FindKeys::KeyNum { .. }));
        return if keyless_ok
            || numkeys_zero
            || spec.name.starts_with("command")
            || spec.name.ends_with("|help")
        {
            Plan::AnyShard
        } else {
            Plan::Error(format!(
                "ERR shardis does not support '{}': it names no key to route by",
                spec.name
            ))
        };
    }
    match spec.name {
        "mget" => split(
            args,
            router,
            1,
            Merge::Mget {
                len: args.len() - 1,
            },
            "MGET",
        ),
        "mset" => split(args, router, 2, Merge::AllOk, "MSET"),
        "del" | "unlink" | "exists" | "touch" => {
            let name = spec.name.to_ascii_uppercase();
            split(args, router, 1, Merge::SumIntegers, &name)
        }
        _ => match same_shard(args, &keys, router) {
            Plan::Forward(shard) if is_blocking(spec, args) => Plan::Blocking {
                shard,
                timeout: block_timeout(spec.name, args),
            },
            plan => plan,
        },
    }
}

/// How long a blocking command may block, from its own arguments: `None` for forever (0).
/// A malformed timeout gets Redis's error at once, so any finite value does for it.
fn block_timeout(name: &str, args: &[Bytes]) -> Option<Duration> {
    let seconds = |arg: Option<&Bytes>| -> Option<Duration> {
        let secs: f64 = std::str::from_utf8(arg?).ok()?.parse().ok()?;
        // NaN and infinities are Redis's "timeout is not a float" errors, not durations.
        secs.is_finite()
            .then(|| Duration::from_secs_f64(secs.clamp(0.0, 1e9)))
    };
    let timeout = match name {
        "blmpop" | "bzmpop" => seconds(args.get(1)),
        "xread" | "xreadgroup" => super::xread_block_at(args)
            .and_then(|at| args.get(at + 1))
            .and_then(|ms| crate::resp::parse_i64(ms))
            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
        // BLPOP, BRPOP, BZPOPMIN, BZPOPMAX, BRPOPLPUSH, BLMOVE: the last argument.
        _ => seconds(args.last()),
    };
    match timeout {
        Some(t) if t.is_zero() => None,
        Some(t) => Some(t),
        None => Some(Duration::ZERO),
    }
}

/// Commands with a fixed plan of their own.
fn special(spec: &CommandSpec, args: &[Bytes], router: &Router, policy: &Policy) -> Option<Plan> {
    Some(match spec.name {
        "multi" => Plan::Transaction(TxCommand::Multi),
        "exec" => Plan::Transaction(TxCommand::Exec),
        "discard" => Plan::Transaction(TxCommand::Discard),
        "unwatch" => Plan::Transaction(TxCommand::Unwatch),
        "watch" => {
            let keys: Vec<usize> = (1..args.len()).collect();
            match same_shard(args, &keys, router) {
                Plan::Forward(shard) => Plan::Watch(shard),
                other => other,
            }
        }
        "subscribe" => Plan::PubSub(PubSubCommand::Subscribe),
        "unsubscribe" => Plan::PubSub(PubSubCommand::Unsubscribe),
        "psubscribe" => Plan::PubSub(PubSubCommand::PSubscribe),
        "punsubscribe" => Plan::PubSub(PubSubCommand::PUnsubscribe),
        "ssubscribe" => Plan::PubSub(PubSubCommand::SSubscribe),
        "sunsubscribe" => Plan::PubSub(PubSubCommand::SUnsubscribe),
        // A channel lives on the shard its name hashes to, as a key would.
        "publish" | "spublish" => Plan::Forward(router.shard_of(&args[1])),
        "pubsub|channels" | "pubsub|shardchannels" => Plan::Broadcast(Merge::Union),
        "pubsub|numsub" | "pubsub|shardnumsub" => Plan::Broadcast(Merge::NumSub),
        "pubsub|numpat" => Plan::Broadcast(Merge::Max),
        "wait" => Plan::WaitReplicas {
            timeout: match crate::resp::parse_i64(&args[2]) {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms.max(0) as u64)),
                None => Some(Duration::ZERO),
            },
        },
        "sort" | "sort_ro" => return sort_patterns_refused(args, router),
        "set" if policy.locks.in_namespace(&args[1]) => {
            crate::command::lock::plan_set(args, router, policy)
        }
        "scan" => Plan::Scan,
        "keys" if policy.allow_keys => Plan::Broadcast(Merge::Concat),
        "keys" => Plan::Error(
            "ERR shardis does not support 'keys': it walks every key of every shard, blocking each; use SCAN, or set [commands] allow_keys = true to allow it"
                .into(),
        ),
        "randomkey" => Plan::Broadcast(Merge::RandomKey),
        "flushdb" | "flushall" if policy.allow_flush => Plan::Broadcast(Merge::Flush),
        // A runaway script is stopped where it runs, without a failover.
        "script|kill" | "function|kill" => Plan::Broadcast(Merge::Kill),
        "flushdb" | "flushall" => Plan::Error(format!(
            "ERR shardis does not support '{}': it empties every shard; set [commands] allow_flush = true to allow it",
            spec.name
        )),
        // Every primary gets the same scripts and functions, so EVALSHA and FCALL work
        // wherever a key lands.
        "script|load" | "function|load" | "function|list" | "function|dump" => {
            Plan::Broadcast(Merge::Same)
        }
        "script|exists" => Plan::Broadcast(Merge::AllExist),
        "script|flush" | "function|delete" | "function|flush" | "function|restore" => {
            Plan::Broadcast(Merge::AllOk)
        }
        "ping" => Plan::Local(Local::Ping),
        "echo" => Plan::Local(Local::Echo),
        "quit" => Plan::Local(Local::Quit),
        "select" => Plan::Local(Local::Select),
        "hello" => Plan::Local(Local::Hello),
        "auth" => Plan::Local(Local::Auth),
        "reset" => Plan::Local(Local::Reset),
        "client|setname" => Plan::Local(Local::ClientSetName),
        "client|getname" => Plan::Local(Local::ClientGetName),
        "client|id" => Plan::Local(Local::ClientId),
        "client|list" => Plan::Local(Local::ClientList),
        "client|info" => Plan::Local(Local::ClientInfo),
        "client|kill" => Plan::Local(Local::ClientKill),
        "client|no-evict" => Plan::Local(Local::ClientNoEvict),
        "config|get" => Plan::Broadcast(Merge::ConfigGet),
        "config|set" | "config|resetstat" | "slowlog|reset" | "latency|reset" => {
            return Some(node_admin(spec.name, args, policy))
        }
        "slowlog|get" => Plan::Broadcast(Merge::SlowlogGet {
            count: match args.get(2).map(|n| crate::resp::parse_i64(n)) {
                None => Some(10),
                Some(Some(n)) if n >= 0 => Some(n as usize),
                // -1 is all of them; anything else the nodes refuse with Redis's text.
                _ => None,
            },
        }),
        "slowlog|len" => Plan::Broadcast(Merge::SumIntegers),
        "latency|latest" => Plan::Broadcast(Merge::LatencyLatest),
        "memory|stats" => Plan::Broadcast(Merge::MemoryStats),
        "function|stats" => Plan::Broadcast(Merge::FunctionStats),
        "lastsave" => Plan::Broadcast(Merge::Min),
        "role" => Plan::Local(Local::Role),
        "acl|whoami" => Plan::Local(Local::AclWhoami),
        // They read no server state: any node answers as the proxy would.
        "acl|cat" | "acl|genpass" => Plan::AnyShard,
        "info" => Plan::Broadcast(Merge::Info),
        "dbsize" => Plan::Broadcast(Merge::DbSize),
        // COMMAND with no subcommand (a container whose arity allows that).
        "time" | "lolwut" | "command" => Plan::AnyShard,
        // Redis refuses an odd MSET by arity; split, it would fail on only some shards.
        "mset" | "msetnx" if args.len() % 2 == 0 => Plan::Error(wrong_arity(spec.name)),
        // COPY ... DB n: database 0 is served. Redis reads every DB option (the last wins), so
        // each one must be 0; Redis itself answers one that is not a number.
        "copy" => {
            let other = (3..args.len())
                .filter(|&at| args[at].eq_ignore_ascii_case(b"db"))
                .filter_map(|at| crate::resp::parse_i64(args.get(at + 1)?))
                .find(|&n| n != 0);
            match other {
                Some(n) => Plan::Error(format!(
                    "ERR shardis does not support '{}' with DB {n}: {}",
                    spec.name, ONE_DB
                )),
                None => return None,
            }
        }
        _ => return None,
    })
}

const ONE_DB: &str = "only database 0 is served";

/// Parameters CONFIG SET may not change through the proxy, beside credentials
/// ([`is_credential`]), `tls-*` and [`PROXY_ANSWERED`]: the nodes' listeners (the proxy would
/// lose its own connections), and where a node writes its files (the classic way to turn
/// CONFIG SET into writing any file the server's user may).
const CONFIG_SET_REFUSED: &[&str] = &[
    "tls-port",
    "unixsocket",
    "dir",
    "dbfilename",
    "appenddirname",
    "appendfilename",
    "logfile",
];

/// The CONFIG parameters the proxy answers itself in CONFIG GET (what the client talks to),
/// and so refuses in CONFIG SET: a node's value would change behind the proxy's back.
pub const PROXY_ANSWERED: &[&str] = &["port", "bind", "databases", "maxclients", "timeout"];

/// Whether a CONFIG parameter holds a credential (`requirepass`, `masterauth`, `masteruser`,
/// `tls-key-file-pass`, Valkey's `primaryauth` ...): never shown by CONFIG GET through the
/// proxy, never set through it.
pub fn is_credential(name: &[u8]) -> bool {
    let name = name.to_ascii_lowercase();
    [&b"pass"[..], b"auth", b"user"]
        .iter()
        .any(|end| name.ends_with(end))
}

/// CONFIG SET / RESETSTAT, SLOWLOG RESET, LATENCY RESET: on every node, when allowed.
fn node_admin(name: &str, args: &[Bytes], policy: &Policy) -> Plan {
    if !policy.allow_node_admin {
        return Plan::Error(format!(
            "ERR shardis does not support '{name}': it changes every node; set [commands] allow_node_admin = true to allow it"
        ));
    }
    if name == "config|set" {
        // CONFIG SET name value [name value ...]
        for param in args[2..].iter().step_by(2) {
            let lower = String::from_utf8_lossy(param).to_ascii_lowercase();
            if CONFIG_SET_REFUSED.contains(&lower.as_str())
                || PROXY_ANSWERED.contains(&lower.as_str())
                || lower.starts_with("tls-")
                || is_credential(param)
            {
                return Plan::Error(format!(
                    "ERR shardis does not support 'config|set' of '{}': the proxy depends on it, it answers it itself, or it names credentials or files on the nodes",
                    printable(param, 64)
                ));
            }
        }
    }
    Plan::Broadcast(Merge::EveryNode)
}

/// SORT's BY and GET patterns read keys the command does not declare: each must form keys on
/// the sorted key's shard (a hash tag of its own, as in Redis Cluster), and none of shardis'
/// own. No SORT answer is ever computed from another shard's absence of the keys.
fn sort_patterns_refused(args: &[Bytes], router: &Router) -> Option<Plan> {
    let home = router.shard_of(&args[1]);
    for (option, pattern) in super::sort_patterns(args) {
        let fixed = super::pattern_fixed_part(&pattern);
        let reserved = crate::command::lock::RESERVED;
        if reserved.starts_with(fixed) || fixed.starts_with(reserved) {
            return Some(Plan::Error(format!(
                "ERR {option} option of SORT denied: pattern '{}' could form shardis' reserved keys",
                printable(&pattern, 64)
            )));
        }
        if router.pattern_shard(&pattern) != Some(home) {
            return Some(Plan::Error(format!(
                "ERR {option} option of SORT denied in Cluster mode when keys formed by the pattern may be in different slots."
            )));
        }
    }
    None
}

/// Why a command is refused, if it is.
fn refusal(spec: &CommandSpec) -> Option<&'static str> {
    let name = spec.name;
    // A byte scan: names are short, and `split('|')` set up a searcher on every request.
    let container = match name.bytes().position(|b| b == b'|') {
        Some(bar) => &name[..bar],
        None => name,
    };
    Some(match container {
        "script" | "function" => "it would act on one shard only (SCRIPT DEBUG)",
        "latency" if name != "latency|help" => {
            "it describes one node; ask the nodes (LATENCY LATEST and RESET are merged over them)"
        }
        "memory" if !matches!(name, "memory|usage" | "memory|help") => {
            "it describes one node; ask the nodes (MEMORY STATS is merged over them)"
        }
        "swapdb" | "move" => ONE_DB,
        "cluster" | "readonly" | "readwrite" | "asking" => "shardis is not a Redis Cluster",
        "client" => {
            "it is a per-connection server feature the proxy does not carry (see the README)"
        }
        "config" => "this subcommand is not proxied",
        "migrate" | "monitor" | "sync" | "psync" | "replconf" => {
            "administrative commands are not allowed through the proxy"
        }
        _ if spec.has(PUBSUB) => "this pub/sub command is not proxied",
        _ if spec.has(ADMIN) => "administrative commands are not allowed through the proxy",
        _ => return None,
    })
}

/// What scripts must not be handed: shardis' reserved key names (the epoch record, the lock
/// state), which a script could otherwise read or rewrite. The check is on what is sent, code
/// and arguments; a script that builds the name at run time gets past it (see the README).
const RESERVED_NAME: &[u8] = b"__shardis__";

/// For a command that runs script code: where it names the reserved prefix, if it does (0 for
/// the code itself, else the argument's position). The code of EVAL, SCRIPT LOAD, FUNCTION LOAD
/// and RESTORE, and every argument of EVAL, EVALSHA and FCALL (their `ARGV` can name keys as
/// well as their `KEYS`).
fn names_reserved(name: &str, args: &[Bytes]) -> Option<usize> {
    let has = |a: &Bytes| a.windows(RESERVED_NAME.len()).any(|w| w == RESERVED_NAME);
    let code = match name {
        "eval" | "eval_ro" => Some(1),
        "script|load" | "function|restore" => Some(2),
        "function|load" => Some(args.len() - 1),
        _ => None,
    };
    if code.is_some_and(|at| args.get(at).is_some_and(has)) {
        return Some(0);
    }
    let runs = matches!(
        name,
        "eval" | "eval_ro" | "evalsha" | "evalsha_ro" | "fcall" | "fcall_ro"
    );
    if runs {
        return args.iter().skip(2).position(has).map(|i| i + 2);
    }
    None
}

/// Routes a command whose keys must all live on one shard.
fn same_shard(args: &[Bytes], keys: &[usize], router: &Router) -> Plan {
    let shard = router.shard_of(&args[keys[0]]);
    if keys[1..]
        .iter()
        .all(|&k| router.shard_of(&args[k]) == shard)
    {
        Plan::Forward(shard)
    } else {
        Plan::Error(CROSSSLOT.to_string())
    }
}

/// Splits a command made of `group`-sized runs of arguments, each starting with a key
/// (`MGET k k`, `MSET k v k v`), into one sub-command per shard.
fn split(args: &[Bytes], router: &Router, group: usize, merge: Merge, name: &str) -> Plan {
    let runs = args[1..].chunks(group);
    let shards: Vec<usize> = runs.clone().map(|run| router.shard_of(&run[0])).collect();
    if shards.iter().all(|&s| s == shards[0]) {
        return Plan::Forward(shards[0]);
    }
    let mut by_shard: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, &shard) in shards.iter().enumerate() {
        match by_shard.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, runs)) => runs.push(i),
            None => by_shard.push((shard, vec![i])),
        }
    }
    let runs: Vec<&[Bytes]> = runs.collect();
    let parts = by_shard
        .into_iter()
        .map(|(shard, positions)| {
            let mut request = BytesMut::new();
            let sub_args = std::iter::once(name.as_bytes()).chain(
                positions
                    .iter()
                    .flat_map(|&i| runs[i].iter().map(|a| &a[..])),
            );
            let sub_args: Vec<&[u8]> = sub_args.collect();
            encode::command(&mut request, sub_args.into_iter());
            Part {
                shard,
                request: request.freeze(),
                positions,
            }
        })
        .collect();
    Plan::Split { merge, parts }
}

/// Redis's own text for an unknown command.
pub fn unknown_command(args: &[Bytes]) -> String {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        printable(&args[0], 128)
    );
    for arg in args[1..].iter() {
        if msg.len() >= 256 {
            break;
        }
        msg.push('\'');
        msg.push_str(&printable(arg, 128));
        msg.push_str("' ");
    }
    msg
}

pub fn wrong_arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// A client-supplied argument made safe to quote in an error line.
pub fn printable(arg: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&arg[..arg.len().min(max)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
