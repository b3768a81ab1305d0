//! Parsing and routing the lock commands; no I/O.

use bytes::Bytes;

use super::{is_reserved, FenceToken, LockCommand, LockOp};
use crate::command::{plan_args, printable, wrong_arity, CommandId, Plan, CROSSSLOT};
use crate::config::Policy;
use crate::resp::parse_i64;
use crate::routing::Router;

/// Most arguments FENCED may wrap: a Lua script unpacks them onto its stack, which holds
/// about 8,000.
const MAX_WRAPPED: usize = 7_000;

/// The plan for a lock command (LOCK.*, FENCE.ADVANCE, FENCED), or `None` for any other.
/// The lock commands: name, fewest and most arguments (name included).
pub const COMMANDS: [(&str, usize, usize); 7] = [
    ("lock.acquire", 4, 4),
    ("lock.extend", 5, 5),
    ("lock.release", 4, 4),
    ("lock.status", 2, 2),
    ("lock.token", 3, 3),
    ("fence.advance", 3, 3),
    ("fenced", 4, usize::MAX),
];

pub fn plan(args: &[Bytes], router: &Router, policy: &Policy) -> Option<(Plan, CommandId)> {
    // Every command passes here: most leave at the first byte, without allocating.
    let first = args[0].first().map(u8::to_ascii_lowercase);
    if !matches!(first, Some(b'l' | b'f')) {
        return None;
    }
    let (index, &(name, min, max)) = COMMANDS
        .iter()
        .enumerate()
        .find(|(_, (name, _, _))| args[0].eq_ignore_ascii_case(name.as_bytes()))?;
    let id = CommandId::own(index);
    let arity = min..=max;
    if !arity.contains(&args.len()) {
        return Some((Plan::Error(wrong_arity(name)), id));
    }
    let plan = match parse(name, args, router, policy) {
        Ok(op) => routed(args[1].clone(), op, router),
        Err(e) => Plan::Error(e),
    };
    Some((plan, id))
}

fn parse(name: &str, args: &[Bytes], router: &Router, policy: &Policy) -> Result<LockOp, String> {
    let max_ttl = policy.locks.max_ttl.as_millis() as u64;
    Ok(match name {
        "lock.acquire" => LockOp::Acquire {
            owner: owner(&args[2])?,
            ttl_ms: ttl(&args[3], max_ttl)?,
            set_form: false,
        },
        "lock.extend" => LockOp::Extend {
            owner: owner(&args[2])?,
            token: token(&args[3])?,
            ttl_ms: ttl(&args[4], max_ttl)?,
        },
        "lock.release" => LockOp::Release {
            owner: owner(&args[2])?,
            token: token(&args[3])?,
        },
        "lock.status" => LockOp::Status,
        "lock.token" => LockOp::Token {
            owner: owner(&args[2])?,
        },
        "fence.advance" => LockOp::Fence {
            token: token(&args[2])?,
            command: Vec::new(),
        },
        _ => {
            let token = token(&args[2])?;
            let command = args[3..].to_vec();
            wrapped(&args[1], &command, router, policy)?;
            LockOp::Fence { token, command }
        }
    })
}

/// A plain `SET key value ...` on a key under the lock prefix: a grant when it is
/// `SET key owner NX PX|EX ttl` (options in any order), refused otherwise.
pub fn plan_set(args: &[Bytes], router: &Router, policy: &Policy) -> Plan {
    let max_ttl = policy.locks.max_ttl.as_millis() as u64;
    let mut nx = false;
    let mut ttl_ms: Option<u64> = None;
    let mut i = 3;
    while i < args.len() {
        let opt = args[i].to_ascii_lowercase();
        match &opt[..] {
            b"nx" => nx = true,
            b"px" | b"ex" if i + 1 < args.len() && ttl_ms.is_none() => {
                let Some(n) = parse_i64(&args[i + 1]) else {
                    return Plan::Error("ERR value is not an integer or out of range".into());
                };
                if n <= 0 {
                    return Plan::Error("ERR invalid expire time in 'set' command".into());
                }
                let ms = if opt[..] == b"ex"[..] {
                    (n as u64).saturating_mul(1000)
                } else {
                    n as u64
                };
                ttl_ms = Some(ms);
                i += 1;
            }
            b"xx" | b"get" | b"keepttl" | b"exat" | b"pxat" => {
                return not_a_grant(&args[1], policy);
            }
            _ => return Plan::Error("ERR syntax error".into()),
        }
        i += 1;
    }
    let (true, Some(ttl_ms)) = (nx, ttl_ms) else {
        return not_a_grant(&args[1], policy);
    };
    if ttl_ms > max_ttl {
        return Plan::Error(ttl_too_long(ttl_ms, max_ttl));
    }
    match owner(&args[2]) {
        Ok(owner) => routed(
            args[1].clone(),
            LockOp::Acquire {
                owner,
                ttl_ms,
                set_form: true,
            },
            router,
        ),
        Err(e) => Plan::Error(e),
    }
}

fn routed(key: Bytes, op: LockOp, router: &Router) -> Plan {
    if is_reserved(&key) {
        return Plan::Error(reserved_key(&key));
    }
    Plan::Lock(Box::new(LockCommand {
        shard: router.shard_of(&key),
        key,
        op,
    }))
}

/// Checks the command FENCED wraps: a known command whose keys are all on the lock key's
/// shard, that runs there as a plain request.
fn wrapped(
    lock_key: &Bytes,
    command: &[Bytes],
    router: &Router,
    policy: &Policy,
) -> Result<(), String> {
    if command.len() > MAX_WRAPPED {
        return Err(format!("ERR FENCED wraps at most {MAX_WRAPPED} arguments"));
    }
    let shard = router.shard_of(lock_key);
    let (plan, ..) = plan_args(command, router, policy);
    match plan {
        Plan::Forward(s) if s == shard => Ok(()),
        Plan::AnyShard => Ok(()),
        Plan::Forward(_) | Plan::Split { .. } => Err(CROSSSLOT.to_string()),
        Plan::Error(e) => Err(e),
        _ => Err(format!(
            "ERR FENCED cannot wrap '{}': it must be a command that runs on the lock's shard and does not block",
            printable(&command[0], 64).to_ascii_lowercase()
        )),
    }
}

fn owner(arg: &Bytes) -> Result<Bytes, String> {
    if arg.is_empty() {
        return Err("ERR lock owner must not be empty".into());
    }
    Ok(arg.clone())
}

fn token(arg: &[u8]) -> Result<FenceToken, String> {
    FenceToken::parse(arg).ok_or_else(|| {
        format!(
            "ERR invalid fencing token '{}': expected a token a grant returned",
            printable(arg, 32)
        )
    })
}

fn ttl(arg: &[u8], max_ms: u64) -> Result<u64, String> {
    match parse_i64(arg) {
        Some(ms) if ms > 0 && ms as u64 <= max_ms => Ok(ms as u64),
        Some(ms) if ms > 0 => Err(ttl_too_long(ms as u64, max_ms)),
        _ => Err(format!(
            "ERR invalid lock TTL '{}': expected milliseconds from 1 to {max_ms}",
            printable(arg, 32)
        )),
    }
}

fn ttl_too_long(ms: u64, max_ms: u64) -> String {
    format!("ERR lock TTL {ms} ms is longer than [locks] max_ttl ({max_ms} ms)")
}

fn not_a_grant(key: &[u8], policy: &Policy) -> Plan {
    Plan::Error(format!(
        "ERR '{}' is under the lock prefix '{}': SET on it must be a grant, SET key owner NX PX|EX ttl",
        printable(key, 64),
        printable(&policy.locks.prefix, 64)
    ))
}

/// The error for a command that names one of shardis' own keys.
pub fn reserved_key(key: &[u8]) -> String {
    format!("ERR key '{}' is reserved for shardis", printable(key, 64))
}
