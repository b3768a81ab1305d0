use bytes::Bytes;

use super::*;
use crate::resp::Request;
use crate::routing::{Distribution, HashFn, HashTag, RingMember, Router};

fn router() -> Router {
    let members: Vec<RingMember> = ["a", "b", "c"]
        .iter()
        .map(|n| RingMember {
            name: n.to_string(),
            weight: 1,
        })
        .collect();
    Router::new(
        HashFn::Xxh3,
        Distribution::Ketama,
        HashTag::parse("{}"),
        &members,
    )
}

fn plan(req: &Request, router: &Router) -> Plan {
    super::plan(req, router, &Policy::default())
}

fn req(s: &str) -> Request {
    Request::from_args(
        s.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect(),
    )
}

/// Two keys that hash to different shards.
fn apart(r: &Router) -> (String, String) {
    let a = "k0".to_string();
    let b = (1..)
        .map(|i| format!("k{i}"))
        .find(|k| r.shard_of(k.as_bytes()) != r.shard_of(a.as_bytes()))
        .unwrap();
    (a, b)
}

#[test]
fn single_key_commands_go_to_their_shard() {
    let r = router();
    assert_eq!(
        plan(&req("GET user:1"), &r),
        Plan::Forward(r.shard_of(b"user:1"))
    );
    assert_eq!(
        plan(&req("get user:1"), &r),
        Plan::Forward(r.shard_of(b"user:1"))
    );
}

#[test]
fn must_live_together_commands_need_one_shard() {
    let r = router();
    let (a, b) = apart(&r);
    for cmd in ["RENAME", "SMOVE", "LMOVE", "PFMERGE", "COPY"] {
        let text = match cmd {
            "SMOVE" => format!("SMOVE {a} {b} m"),
            "LMOVE" => format!("LMOVE {a} {b} LEFT LEFT"),
            _ => format!("{cmd} {a} {b}"),
        };
        assert_eq!(
            plan(&req(&text), &r),
            Plan::Error(CROSSSLOT.into()),
            "{text}"
        );
    }
    assert_eq!(
        plan(&req("RENAME {u}a {u}b"), &r),
        Plan::Forward(r.shard_of(b"u"))
    );
    assert_eq!(
        plan(&req(&format!("ZUNIONSTORE d 2 {a} {b}")), &r),
        Plan::Error(CROSSSLOT.into())
    );
}

#[test]
fn mget_splits_by_shard_and_remembers_positions() {
    let r = router();
    let (a, b) = apart(&r);
    let Plan::Split { merge, parts } = plan(&req(&format!("MGET {a} {b} {a}")), &r) else {
        panic!("MGET across shards is split");
    };
    assert_eq!(merge, Merge::Mget { len: 3 });
    assert_eq!(parts.len(), 2);
    let pa = parts
        .iter()
        .find(|p| p.shard == r.shard_of(a.as_bytes()))
        .unwrap();
    assert_eq!(pa.positions, vec![0, 2]);
    assert_eq!(
        &pa.request[..],
        format!("*3\r\n$4\r\nMGET\r\n$2\r\n{a}\r\n$2\r\n{a}\r\n").as_bytes()
    );
    // All on one shard: forwarded whole.
    assert_eq!(
        plan(&req(&format!("MGET {a} {a}")), &r),
        Plan::Forward(r.shard_of(a.as_bytes()))
    );
}

#[test]
fn mset_and_counting_commands_split() {
    let r = router();
    let (a, b) = apart(&r);
    let Plan::Split { merge, parts } = plan(&req(&format!("MSET {a} 1 {b} 2")), &r) else {
        panic!("split");
    };
    assert_eq!(merge, Merge::AllOk);
    assert!(parts.iter().any(|p| p
        .request
        .ends_with(format!("${}\r\n{a}\r\n$1\r\n1\r\n", a.len()).as_bytes())));
    for cmd in ["DEL", "UNLINK", "EXISTS", "TOUCH"] {
        let Plan::Split { merge, .. } = plan(&req(&format!("{cmd} {a} {b}")), &r) else {
            panic!("{cmd} split");
        };
        assert_eq!(merge, Merge::SumIntegers);
    }
    // An odd MSET gets Redis's arity error, not a partial write.
    assert_eq!(
        plan(&req(&format!("MSET {a} 1 {b}")), &r),
        Plan::Error("ERR wrong number of arguments for 'mset' command".into())
    );
    // COMMAND alone is a container with no subcommand.
    assert_eq!(plan(&req("COMMAND"), &r), Plan::AnyShard);
    assert!(matches!(plan(&req("MEMORY USAGE k"), &r), Plan::Forward(_)));
    assert_eq!(plan(&req("MEMORY HELP"), &r), Plan::AnyShard);
    assert_eq!(plan(&req("LATENCY HELP"), &r), Plan::AnyShard);
    assert_eq!(
        plan(&req("MEMORY STATS"), &r),
        Plan::Broadcast(Merge::MemoryStats)
    );
    assert_eq!(plan(&req("LASTSAVE"), &r), Plan::Broadcast(Merge::Min));
    assert_eq!(
        plan(&req("SLOWLOG GET"), &r),
        Plan::Broadcast(Merge::SlowlogGet { count: Some(10) })
    );
    assert_eq!(
        plan(&req("SLOWLOG GET -1"), &r),
        Plan::Broadcast(Merge::SlowlogGet { count: None })
    );
    assert_eq!(plan(&req("SINTERCARD 0 k"), &r), Plan::AnyShard);
    assert_eq!(plan(&req("ACL CAT"), &r), Plan::AnyShard);
    assert_eq!(plan(&req("ROLE"), &r), Plan::Local(Local::Role));
}

#[test]
fn proxy_answers_connection_commands() {
    let r = router();
    assert_eq!(plan(&req("PING"), &r), Plan::Local(Local::Ping));
    assert_eq!(plan(&req("HELLO 3"), &r), Plan::Local(Local::Hello));
    assert_eq!(
        plan(&req("CLIENT SETINFO LIB-NAME x"), &r),
        Plan::Local(Local::ClientSetInfo)
    );
    assert_eq!(
        plan(&req("CONFIG GET save"), &r),
        Plan::Broadcast(Merge::ConfigGet)
    );
    assert_eq!(plan(&req("DBSIZE"), &r), Plan::Broadcast(Merge::DbSize));
    assert_eq!(plan(&req("INFO"), &r), Plan::Broadcast(Merge::Info));
    assert_eq!(plan(&req("COMMAND DOCS get"), &r), Plan::AnyShard);
    assert_eq!(plan(&req("COMMAND"), &r), Plan::AnyShard);
}

#[test]
fn errors_name_the_command() {
    let r = router();
    let err = |s: &str| match plan(&req(s), &r) {
        Plan::Error(e) => e,
        other => panic!("{s}: {other:?}"),
    };
    assert_eq!(
        err("GET"),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        err("NOPE a b"),
        "ERR unknown command 'NOPE', with args beginning with: 'a' 'b' "
    );
    assert_eq!(
        err("OBJECT NOPE k"),
        "ERR unknown subcommand 'NOPE'. Try OBJECT HELP."
    );
    for cmd in [
        "FLUSHALL",
        "FLUSHDB ASYNC",
        "SCRIPT DEBUG YES",
        "LATENCY DOCTOR",
        "MOVE k 1",
        "CONFIG SET a b",
        "SHUTDOWN",
    ] {
        let e = err(cmd);
        assert!(
            e.starts_with("ERR shardis does not support '"),
            "{cmd}: {e}"
        );
    }
    // XREAD without BLOCK is an ordinary read.
    assert!(matches!(
        plan(&req("XREAD STREAMS s 0"), &r),
        Plan::Forward(_)
    ));
}

#[test]
fn blocking_commands_carry_their_timeout() {
    use std::time::Duration;
    let r = router();
    let shard = r.shard_of(b"l");
    assert_eq!(
        plan(&req("BLPOP l 0"), &r),
        Plan::Blocking {
            shard,
            timeout: None
        }
    );
    assert_eq!(
        plan(&req("BRPOP l 1.5"), &r),
        Plan::Blocking {
            shard,
            timeout: Some(Duration::from_millis(1500))
        }
    );
    assert_eq!(
        plan(&req("BLMPOP 2 1 l LEFT"), &r),
        Plan::Blocking {
            shard,
            timeout: Some(Duration::from_secs(2))
        }
    );
    assert_eq!(
        plan(&req("XREAD COUNT 1 BLOCK 250 STREAMS l 0"), &r),
        Plan::Blocking {
            shard,
            timeout: Some(Duration::from_millis(250))
        }
    );
    // BLOCK is an option before STREAMS, not a group, consumer or stream name.
    assert_eq!(
        plan(&req("XREADGROUP GROUP block c BLOCK 100 STREAMS l >"), &r),
        Plan::Blocking {
            shard,
            timeout: Some(Duration::from_millis(100))
        }
    );
    assert_eq!(
        plan(&req("XREAD STREAMS block 0"), &r),
        Plan::Forward(r.shard_of(b"block"))
    );
    // A timeout that is not a finite number gets Redis's own error, at once.
    assert_eq!(
        plan(&req("BLPOP l nan"), &r),
        Plan::Blocking {
            shard,
            timeout: Some(Duration::ZERO)
        }
    );
    let (a, b) = apart(&r);
    assert_eq!(
        plan(&req(&format!("BLPOP {a} {b} 1")), &r),
        Plan::Error(CROSSSLOT.into())
    );
    assert_eq!(
        plan(&req("WAIT 1 100"), &r),
        Plan::WaitReplicas {
            timeout: Some(Duration::from_millis(100))
        }
    );
}

#[test]
fn stateful_and_fan_out_commands() {
    let r = router();
    let (a, b) = apart(&r);
    assert_eq!(plan(&req("MULTI"), &r), Plan::Transaction(TxCommand::Multi));
    assert_eq!(
        plan(&req(&format!("WATCH {a} {a}")), &r),
        Plan::Watch(r.shard_of(a.as_bytes()))
    );
    assert_eq!(
        plan(&req(&format!("WATCH {a} {b}")), &r),
        Plan::Error(CROSSSLOT.into())
    );
    assert_eq!(
        plan(&req(&format!("EVAL s 2 {a} {b}")), &r),
        Plan::Error(CROSSSLOT.into())
    );
    assert_eq!(
        plan(&req(&format!("FCALL f 1 {a} arg")), &r),
        Plan::Forward(r.shard_of(a.as_bytes()))
    );
    assert_eq!(plan(&req("EVAL s 0"), &r), Plan::AnyShard);
    assert_eq!(
        plan(&req("SCRIPT LOAD s"), &r),
        Plan::Broadcast(Merge::Same)
    );
    assert_eq!(plan(&req("SCAN 0"), &r), Plan::Scan);
    assert!(matches!(plan(&req("KEYS *"), &r), Plan::Error(e) if e.contains("allow_keys")));
    assert_eq!(
        plan(&req("PUBLISH chan m"), &r),
        Plan::Forward(r.shard_of(b"chan"))
    );
    assert_eq!(
        plan(&req("SUBSCRIBE a b"), &r),
        Plan::PubSub(PubSubCommand::Subscribe)
    );
    let allow = Policy {
        allow_flush: true,
        ..Policy::default()
    };
    assert_eq!(
        super::plan(&req("FLUSHALL"), &r, &allow),
        Plan::Broadcast(Merge::Flush)
    );
    for kill in ["SCRIPT KILL", "FUNCTION KILL"] {
        assert_eq!(plan(&req(kill), &r), Plan::Broadcast(Merge::Kill), "{kill}");
    }
    let allow = Policy {
        allow_keys: true,
        ..Policy::default()
    };
    assert_eq!(
        super::plan(&req("KEYS *"), &r, &allow),
        Plan::Broadcast(Merge::Concat)
    );
}

fn lock_op(p: Plan) -> crate::command::lock::LockOp {
    match p {
        Plan::Lock(l) => l.op,
        other => panic!("not a lock plan: {other:?}"),
    }
}

fn is_error_starting(p: &Plan, prefix: &str) -> bool {
    matches!(p, Plan::Error(e) if e.starts_with(prefix))
}

#[test]
fn set_under_the_lock_prefix_is_a_grant_or_refused() {
    use crate::command::lock::LockOp;
    let r = router();
    for (cmd, ttl) in [
        ("SET lock:a me NX PX 1500", 1500),
        ("set lock:a me px 1500 nx", 1500),
        ("SET lock:a me NX EX 2", 2000),
    ] {
        assert_eq!(
            lock_op(plan(&req(cmd), &r)),
            LockOp::Acquire {
                owner: Bytes::from_static(b"me"),
                ttl_ms: ttl,
                set_form: true
            },
            "{cmd}"
        );
    }
    for cmd in [
        "SET lock:a me",
        "SET lock:a me NX",
        "SET lock:a me PX 100",
        "SET lock:a me NX PX 100 GET",
        "SET lock:a me XX PX 100",
        "SET lock:a me NX KEEPTTL",
    ] {
        assert!(
            is_error_starting(
                &plan(&req(cmd), &r),
                "ERR 'lock:a' is under the lock prefix"
            ),
            "{cmd}"
        );
    }
    assert!(is_error_starting(
        &plan(&req("SET lock:a me NX PX 0"), &r),
        "ERR invalid expire time"
    ));
    assert!(is_error_starting(
        &plan(&req("SET lock:a me NX PX x"), &r),
        "ERR value is not an integer"
    ));
    assert!(is_error_starting(
        &plan(&req("SET lock:a me NX PX 100 PX 5"), &r),
        "ERR syntax error"
    ));
    assert!(is_error_starting(
        &plan(&req("SET lock:a me NX PX 30001"), &r),
        "ERR lock TTL 30001 ms is longer"
    ));
    // Outside the prefix, and with no prefix configured, SET is SET.
    assert!(matches!(plan(&req("SET locks me"), &r), Plan::Forward(_)));
    let none = Policy {
        locks: crate::config::LockSettings {
            prefix: Bytes::new(),
            ..Default::default()
        },
        ..Policy::default()
    };
    assert!(matches!(
        super::plan(&req("SET lock:a me NX PX 5"), &r, &none),
        Plan::Forward(_)
    ));
}

#[test]
fn lock_commands_are_parsed_and_routed_by_their_key() {
    use crate::command::lock::{FenceToken, LockOp};
    let r = router();
    let p = plan(&req("LOCK.ACQUIRE lock:{u} me 100"), &r);
    assert!(matches!(&p, Plan::Lock(l) if l.shard == r.shard_of(b"u")));
    let token = FenceToken::new(0, 3).unwrap();
    assert_eq!(
        lock_op(plan(&req("lock.extend lock:{u} me 3 200"), &r)),
        LockOp::Extend {
            owner: Bytes::from_static(b"me"),
            token,
            ttl_ms: 200
        }
    );
    assert_eq!(
        lock_op(plan(&req("FENCED lock:{u} 3 SET data:{u} v"), &r)),
        LockOp::Fence {
            token,
            command: ["SET", "data:{u}", "v"]
                .map(|s| Bytes::from(s.to_string()))
                .to_vec()
        }
    );
    assert_eq!(
        lock_op(plan(&req("FENCE.ADVANCE lock:{u} 3"), &r)),
        LockOp::Fence {
            token,
            command: Vec::new()
        }
    );
    let (a, b) = apart(&r);
    let crossed = plan(&req(&format!("FENCED {a} 3 SET {b} v")), &r);
    assert_eq!(crossed, Plan::Error(CROSSSLOT.to_string()));
    for bad in [
        "FENCED lock:{u} 3 BLPOP data:{u} 0",
        "FENCED lock:{u} 3 SUBSCRIBE c",
        "FENCED lock:{u} 3 LOCK.ACQUIRE lock:{u} me 5",
        "FENCED lock:{u} 3 NOSUCH x",
        "FENCED lock:{u} 0 SET data:{u} v",
        "LOCK.ACQUIRE lock:{u} me 0",
        "LOCK.ACQUIRE lock:{u} me 40000",
        "LOCK.ACQUIRE lock:{u}  100",
        "LOCK.RELEASE lock:{u} me",
        "LOCK.ACQUIRE __shardis__:locks me 100",
    ] {
        let args: Vec<Bytes> = bad.split(' ').map(|a| Bytes::from(a.to_string())).collect();
        let p = plan(&Request::from_args(args), &r);
        assert!(
            matches!(&p, Plan::Error(e) if e.starts_with("ERR")),
            "{bad}: {p:?}"
        );
    }
}

#[test]
fn reserved_keys_cannot_be_named() {
    let r = router();
    for cmd in [
        "GET __shardis__:epoch",
        "HGETALL __shardis__:locks",
        "DEL k __shardis__:locks",
        "WATCH __shardis__:epoch",
        "EVAL x 1 __shardis__:locks",
    ] {
        assert!(
            is_error_starting(&plan(&req(cmd), &r), "ERR key '__shardis__:"),
            "{cmd}"
        );
    }
    // Nor named in the code of a script or function.
    let args = |parts: &[&str]| -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::from(p.to_string())).collect()
    };
    let forge = "return redis.call('SET','__shardis__:epoch','8388607')";
    let lib = "#!lua name=l\nredis.register_function('f', function() return redis.call('DEL', '__shardis__:locks') end)";
    for cmd in [
        args(&["EVAL", forge, "1", "k"]),
        args(&["EVAL_RO", forge, "0"]),
        args(&["SCRIPT", "LOAD", forge]),
        args(&["FUNCTION", "LOAD", "REPLACE", lib]),
        args(&["FUNCTION", "RESTORE", "payload-naming-__shardis__:x"]),
        // The name handed in as an argument.
        args(&[
            "EVAL",
            "return redis.call('HSET', ARGV[1], ARGV[2], ARGV[3])",
            "1",
            "lock:{x}",
            "__shardis__:locks",
            "lock:{x}",
            "0 0 0 0 ",
        ]),
        args(&[
            "EVALSHA",
            "0123456789012345678901234567890123456789",
            "0",
            "__shardis__:epoch",
        ]),
        args(&["FCALL", "f", "1", "k", "__shardis__:epoch"]),
    ] {
        let p = super::plan_args(&cmd, &r, &Policy::default()).0;
        assert!(
            is_error_starting(&p, "ERR shardis does not run"),
            "{cmd:?}: {p:?}"
        );
    }
    let fine = args(&["EVAL", "return redis.call('GET', KEYS[1])", "1", "k"]);
    assert!(matches!(
        super::plan_args(&fine, &r, &Policy::default()).0,
        Plan::Forward(_)
    ));
}

#[test]
fn sort_patterns_must_stay_on_the_sorted_keys_shard() {
    let r = router();
    let denied = |s: &str, option: &str| {
        let p = plan(&req(s), &r);
        assert!(
            is_error_starting(
                &p,
                &format!("ERR {option} option of SORT denied in Cluster mode when keys formed by the pattern may be in different slots.")
            ),
            "{s}: {p:?}"
        );
    };
    denied("SORT a BY weight_*", "BY");
    denied("SORT a GET user:*", "GET");
    denied("SORT_RO a BY w_* GET #", "BY");
    // A wildcard before the tag closes could move it.
    denied("SORT {a}l BY w*{a}", "BY");
    denied("SORT {a}l BY w{*}", "BY");
    // A tag of another shard.
    let other = (0..)
        .map(|i| format!("t{i}"))
        .find(|t| r.shard_of(t.as_bytes()) != r.shard_of(b"a"))
        .unwrap();
    denied(&format!("SORT {{a}}l GET {{{other}}}:*"), "GET");
    // Fine: no key read (BY nosort, a BY without *, GET #), or the sorted key's own tag.
    let home = Plan::Forward(r.shard_of(b"a"));
    for ok in [
        "SORT {a}l BY nosort",
        "SORT {a}l BY constant GET #",
        "SORT {a}l BY {a}w_* GET {a}u:* GET {a}h:*->field GET # LIMIT 0 10 DESC ALPHA",
        "SORT_RO {a}l BY {a}:w_*",
        "SORT {a}l BY {a}w_* STORE {a}dest",
    ] {
        assert_eq!(plan(&req(ok), &r), home, "{ok}");
    }
    // Never shardis' own keys, whatever the shard.
    for s in [
        "SORT {a}l GET __shardis__:*",
        "SORT {a}l BY *",
        "SORT {a}l GET __sh*",
    ] {
        assert!(is_error_starting(&plan(&req(s), &r), "ERR "), "{s}");
    }
}
