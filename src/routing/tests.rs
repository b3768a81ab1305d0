use super::*;

fn members(names: &[&str]) -> Vec<RingMember> {
    names
        .iter()
        .map(|n| RingMember {
            name: n.to_string(),
            weight: 1,
        })
        .collect()
}

fn shares(router: &Router, keys: usize) -> Vec<usize> {
    let mut counts = vec![0; router.shard_count()];
    for i in 0..keys {
        counts[router.shard_of(format!("key:{i}").as_bytes())] += 1;
    }
    counts
}

#[test]
fn fnv1a_64_matches_twemproxy_reference_values() {
    // 32-bit FNV-1a with the 64-bit constants truncated, as twemproxy computes it.
    assert_eq!(HashFn::Fnv1a64.hash(b""), 0x8422_2325);
    let mut h: u32 = 0x8422_2325;
    for &b in b"foo" {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x1b3);
    }
    assert_eq!(HashFn::Fnv1a64.hash(b"foo"), h);
    // A high byte is sign-extended before the XOR.
    let high = (0x8422_2325u32 ^ 0xffff_ff80).wrapping_mul(0x1b3);
    assert_eq!(HashFn::Fnv1a64.hash(&[0x80]), high);
}

#[test]
fn hash_tag_takes_the_first_non_empty_tag() {
    let tag = HashTag::parse("{}").unwrap();
    assert_eq!(tag.hashed_part(b"user:{42}:name"), b"42");
    assert_eq!(tag.hashed_part(b"{}x{y}"), b"{}x{y}");
    assert_eq!(tag.hashed_part(b"a{b"), b"a{b");
    assert_eq!(tag.hashed_part(b"a}b{c}"), b"c");
    assert!(HashTag::parse("{").is_none());
    assert!(HashTag::parse("{}}").is_none());
}

#[test]
fn three_equal_shards_each_get_25_to_42_percent() {
    // fnv1a_64 with modula is left out: twemproxy's 32-bit FNV is poorly spread modulo 3 on
    // sequential keys (one shard gets about 44%), and shardis reproduces it exactly.
    let combos = [
        (HashFn::Xxh3, Distribution::Ketama),
        (HashFn::Xxh3, Distribution::Modula),
        (HashFn::Fnv1a64, Distribution::Ketama),
        (HashFn::Md5, Distribution::Ketama),
        (HashFn::Md5, Distribution::Modula),
    ];
    for (hash, dist) in combos {
        {
            let router = Router::new(hash, dist, None, &members(&["a", "b", "c"]));
            for (shard, count) in shares(&router, 100_000).into_iter().enumerate() {
                assert!(
                    (25_000..=42_000).contains(&count),
                    "{hash:?}/{dist:?}: shard {shard} got {count} of 100000"
                );
            }
        }
    }
}

#[test]
fn adding_a_fourth_shard_moves_about_a_quarter_of_keys() {
    let three = Router::new(
        HashFn::Xxh3,
        Distribution::Ketama,
        None,
        &members(&["a", "b", "c"]),
    );
    let four = Router::new(
        HashFn::Xxh3,
        Distribution::Ketama,
        None,
        &members(&["a", "b", "c", "d"]),
    );
    let keys = 100_000;
    let mut moved = 0;
    for i in 0..keys {
        let key = format!("key:{i}");
        let (before, after) = (
            three.shard_of(key.as_bytes()),
            four.shard_of(key.as_bytes()),
        );
        if before != after {
            // Keys only ever move to the new shard.
            assert_eq!(after, 3, "{key} moved between old shards");
            moved += 1;
        }
    }
    assert!(
        (18_000..=32_000).contains(&moved),
        "{moved} of {keys} keys moved; expected close to a quarter"
    );
}

#[test]
fn weights_scale_shares() {
    let ring = vec![
        RingMember {
            name: "a".into(),
            weight: 1,
        },
        RingMember {
            name: "b".into(),
            weight: 3,
        },
    ];
    for dist in [Distribution::Ketama, Distribution::Modula] {
        let router = Router::new(HashFn::Xxh3, dist, None, &ring);
        let counts = shares(&router, 100_000);
        assert!(
            (65_000..=85_000).contains(&counts[1]),
            "{dist:?}: weight-3 shard got {}",
            counts[1]
        );
    }
}

#[test]
fn ketama_point_count_follows_twemproxy() {
    // 160 points per server for equal weights.
    let ring = Ring::new(Distribution::Ketama, &members(&["a", "b", "c"]));
    assert_eq!(ring.points.len(), 480);
}
