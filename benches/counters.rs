//! What a request's figures cost (its command's call, latency and histogram counts) when one
//! worker thread records them, and when two record them at once, as two workers do under load.
//! Both record the same command, as GETs spread over two workers do.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardis::command::CommandId;
use shardis::telemetry::Telemetry;

/// `threads` threads each record `each` GETs into one `Telemetry`; the time from their common
/// start until the last is done.
fn record_on(threads: usize, each: u64) -> Duration {
    let telemetry = Telemetry::default();
    let get = CommandId::from_index(0);
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (telemetry, start) = (&telemetry, &start);
            s.spawn(move || {
                start.wait();
                for n in 0..each {
                    let took = Duration::from_micros(50 + (n + t as u64) % 200);
                    telemetry.record(get, took, None, false);
                }
            });
        }
        start.wait();
        let began = Instant::now();
        // The scope joins the threads before it returns.
        began
    })
    .elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("counters");
    g.throughput(Throughput::Elements(1));
    for threads in [1, 2] {
        g.bench_function(format!("record_one_request_{threads}_threads"), |b| {
            b.iter_custom(|iters| record_on(threads, iters))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
