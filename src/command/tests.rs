use bytes::Bytes;

use super::*;

fn args(s: &str) -> Vec<Bytes> {
    s.split(' ')
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

fn keys(cmd: &str) -> Result<Vec<usize>, MalformedKeys> {
    let a = args(cmd);
    let mut spec = lookup(&a[0]).expect("known command");
    if spec.has(spec::flags::CONTAINER) {
        spec = lookup_sub(spec, &a[1]).expect("known subcommand");
    }
    key_positions(spec, &a).map(|k| k.to_vec())
}

#[test]
fn table_is_sorted_and_complete() {
    let names: Vec<&str> = all().iter().map(|c| c.name).collect();
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
    assert!(names.len() >= 360, "{} entries", names.len());
    assert!(lookup(b"GeT").is_some());
    assert!(lookup(b"object|ENCODING").is_some());
    assert!(lookup(b"nosuchcommand").is_none());
    assert!(lookup(&[b'a'; 200]).is_none());
}

#[test]
fn every_name_is_found_by_its_hash_in_any_case() {
    let hashes: std::collections::HashSet<u64> =
        all().iter().map(|c| name_hash(c.name.as_bytes())).collect();
    assert_eq!(hashes.len(), all().len(), "two names share a hash");
    for spec in all() {
        let upper = spec.name.to_ascii_uppercase();
        assert!(
            std::ptr::eq(lookup(upper.as_bytes()).unwrap(), spec),
            "{}",
            spec.name
        );
        assert!(
            std::ptr::eq(lookup(spec.name.as_bytes()).unwrap(), spec),
            "{}",
            spec.name
        );
    }
    // A name one letter off, or a prefix, is no command.
    assert!(lookup(b"gets").is_none());
    assert!(lookup(b"ge").is_none());
    assert!(lookup(b"").is_none());
}

#[test]
fn key_positions_follow_redis_key_specs() {
    assert_eq!(keys("GET k"), Ok(vec![1]));
    assert_eq!(keys("MSET a 1 b 2"), Ok(vec![1, 3]));
    assert_eq!(keys("DEL a b c"), Ok(vec![1, 2, 3]));
    assert_eq!(keys("RENAME a b"), Ok(vec![1, 2]));
    assert_eq!(keys("LMOVE a b LEFT RIGHT"), Ok(vec![1, 2]));
    assert_eq!(keys("ZUNIONSTORE d 2 a b WEIGHTS 1 2"), Ok(vec![1, 3, 4]));
    assert_eq!(keys("SINTERCARD 2 a b LIMIT 1"), Ok(vec![2, 3]));
    assert_eq!(keys("XREAD COUNT 2 STREAMS s1 s2 0 0"), Ok(vec![4, 5]));
    assert_eq!(keys("BITOP AND d a b"), Ok(vec![2, 3, 4]));
    assert_eq!(keys("GEORADIUS g 0 0 1 km STORE d"), Ok(vec![1, 7]));
    assert_eq!(keys("GEORADIUS g 0 0 1 km"), Ok(vec![1]));
    assert_eq!(keys("SORT s BY w STORE d"), Ok(vec![1, 5]));
    assert_eq!(keys("OBJECT ENCODING k"), Ok(vec![2]));
    assert_eq!(keys("PING"), Ok(vec![]));
    // numkeys larger than what follows, or not a number: malformed.
    assert_eq!(keys("ZUNIONSTORE d 5 a"), Err(MalformedKeys));
    assert_eq!(keys("ZUNIONSTORE d x a"), Err(MalformedKeys));
}

#[test]
fn arity() {
    let get = lookup(b"get").unwrap();
    assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
    let mget = lookup(b"mget").unwrap();
    assert!(mget.arity_ok(2) && mget.arity_ok(10) && !mget.arity_ok(1));
}
