//! Key-to-shard lookup: hash (with hash tag) plus ring search, per hash function.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardis::routing::{Distribution, HashFn, HashTag, RingMember, Router};

fn bench(c: &mut Criterion) {
    let keys: Vec<String> = (0..1000).map(|i| format!("user:{i}:profile")).collect();
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(keys.len() as u64));
    for shards in [3usize, 32] {
        let members: Vec<RingMember> = (0..shards)
            .map(|i| RingMember {
                name: format!("shard{i}"),
                weight: 1,
            })
            .collect();
        for (hash, name) in [
            (HashFn::Xxh3, "xxh3"),
            (HashFn::Fnv1a64, "fnv1a_64"),
            (HashFn::Md5, "md5"),
        ] {
            let router = Router::new(hash, Distribution::Ketama, HashTag::parse("{}"), &members);
            g.bench_function(format!("{name}_ketama_{shards}_shards_1000_keys"), |b| {
                b.iter(|| {
                    keys.iter()
                        .map(|k| router.shard_of(k.as_bytes()))
                        .sum::<usize>()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
