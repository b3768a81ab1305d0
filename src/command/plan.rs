//! Planning: what to do with one parsed request.
//!
//! A plan is decided from the request and the router alone, with no I/O, so every routing rule
//! is unit-tested here. The client session carries plans out.

use bytes::{Bytes, BytesMut};

use super::spec::flags::{ADMIN, CONTAINER, PUBSUB};
use super::{is_blocking, key_positions, lookup, lookup_sub, CommandSpec};
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
    /// DEL, UNLINK, EXISTS, TOUCH, DBSIZE: integers summed.
    SumIntegers,
    /// INFO: the proxy's own sections, with the shards' keyspace summed.
    Info,
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
    ConfigGet,
}

pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Decides what to do with `req`.
pub fn plan(req: &Request, router: &Router) -> Plan {
    let args = req.args();
    let Some(mut spec) = lookup(&args[0]) else {
        return Plan::Error(unknown_command(args));
    };
    if !spec.arity_ok(args.len()) {
        return Plan::Error(wrong_arity(spec.name));
    }
    if spec.has(CONTAINER) && args.len() > 1 {
        // CLIENT SETINFO (Redis 7.2, sent by redis-py 5) is answered here even though the
        // table, taken from Redis 7.0, does not list it.
        if spec.name == "client" && args[1].eq_ignore_ascii_case(b"setinfo") {
            return if args.len() == 4 {
                Plan::Local(Local::ClientSetInfo)
            } else {
                Plan::Error(wrong_arity("client|setinfo"))
            };
        }
        spec = match lookup_sub(spec, &args[1]) {
            Some(sub) => sub,
            None => {
                return Plan::Error(format!(
                    "ERR unknown subcommand '{}'. Try {} HELP.",
                    printable(&args[1], 128),
                    spec.name.to_ascii_uppercase()
                ))
            }
        };
        if !spec.arity_ok(args.len()) {
            return Plan::Error(wrong_arity(spec.name));
        }
    }
    if let Some(plan) = special(spec, args) {
        return plan;
    }
    if let Some(reason) = refusal(spec, args) {
        return Plan::Error(format!(
            "ERR shardis does not support '{}': {reason}",
            spec.name
        ));
    }
    let keys = match key_positions(spec, args) {
        Ok(keys) => keys,
        // Malformed (a bad numkeys, say): the command cannot run, so let the shard of its
        // first argument answer with Redis's own error text. Nothing is executed.
        Err(_) => return Plan::Forward(router.shard_of(args.get(1).map_or(&b""[..], |a| a))),
    };
    if keys.is_empty() {
        return if spec.name.starts_with("command") || spec.name.ends_with("|help") {
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
        _ => same_shard(args, &keys, router),
    }
}

/// Commands with a fixed plan of their own.
fn special(spec: &CommandSpec, args: &[Bytes]) -> Option<Plan> {
    Some(match spec.name {
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
        "config|get" => Plan::Local(Local::ConfigGet),
        "info" => Plan::Broadcast(Merge::Info),
        "dbsize" => Plan::Broadcast(Merge::SumIntegers),
        // COMMAND with no subcommand (a container whose arity allows that).
        "time" | "lolwut" | "command" => Plan::AnyShard,
        // Redis refuses an odd MSET by arity; split, it would fail on only some shards.
        "mset" | "msetnx" if args.len() % 2 == 0 => Plan::Error(wrong_arity(spec.name)),
        "copy" if args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"db")) => {
            Plan::Error(format!(
                "ERR shardis does not support '{}' with DB: {}",
                spec.name, ONE_DB
            ))
        }
        _ => return None,
    })
}

const ONE_DB: &str = "only database 0 is served";

/// Why a command is refused, if it is.
fn refusal(spec: &CommandSpec, args: &[Bytes]) -> Option<&'static str> {
    let name = spec.name;
    let container = name.split('|').next().unwrap_or(name);
    Some(match container {
        "multi" | "exec" | "discard" | "watch" | "unwatch" => {
            "transactions (MULTI/EXEC/WATCH) are not proxied"
        }
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" | "script"
        | "function" => "scripts and functions are not proxied",
        "scan" | "keys" | "randomkey" => "it would have to visit every shard",
        "flushdb" | "flushall" | "swapdb" | "move" => "it acts on whole databases",
        "cluster" | "readonly" | "readwrite" | "asking" => "shardis is not a Redis Cluster",
        "client" | "config" => "this subcommand is not proxied",
        "migrate" | "monitor" | "sync" | "psync" | "replconf" => {
            "administrative commands are not allowed through the proxy"
        }
        _ if spec.has(PUBSUB) => "pub/sub is not proxied",
        _ if is_blocking(spec, args) || name == "wait" || name == "waitaof" => {
            "blocking commands are not proxied"
        }
        _ if spec.has(ADMIN) => "administrative commands are not allowed through the proxy",
        _ => return None,
    })
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
