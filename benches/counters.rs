//! What a request's figures cost (its command's call, latency and histogram counts) when one
//! worker records them, and when two record them at once, as two workers do under load. Both
//! record the same command, as GETs spread over two workers do.

use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardis::command::CommandId;
use shardis::net::workers;
use shardis::telemetry::Telemetry;

/// The two workers, started once for the process; worker 0 is the runtime returned here.
fn runtime() -> &'static tokio::runtime::Runtime {
    static WORKERS: OnceLock<(tokio::runtime::Runtime, workers::Threads)> = OnceLock::new();
    &WORKERS
        .get_or_init(|| workers::start(2).expect("two workers"))
        .0
}

/// Workers `0..threads` each record `each` GETs into one `Telemetry`, starting together; the
/// time from the first start to the last finish.
fn record_on(threads: usize, each: u64) -> Duration {
    let rt = runtime();
    let telemetry = Arc::new(Telemetry::default());
    let start = Arc::new(Barrier::new(threads));
    let get = CommandId::of(shardis::command::lookup(b"get").expect("GET is in the table"));
    let tasks: Vec<_> = (0..threads)
        .map(|w| {
            let (telemetry, start) = (telemetry.clone(), start.clone());
            workers::spawn_on(w, async move {
                start.wait();
                let began = Instant::now();
                for n in 0..each {
                    let took = Duration::from_micros(50 + (n + w as u64) % 200);
                    telemetry.record(get, took, None, false);
                }
                (began, Instant::now())
            })
        })
        .collect();
    // Worker 0's task runs once this thread runs its runtime.
    rt.block_on(async {
        let mut spans = Vec::new();
        for task in tasks {
            spans.push(task.await.expect("the recording task"));
        }
        let first = spans.iter().map(|s| s.0).min().expect("a task");
        let last = spans.iter().map(|s| s.1).max().expect("a task");
        last - first
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("counters");
    g.throughput(Throughput::Elements(1));
    for threads in [1, 2] {
        g.bench_function(format!("record_one_request_{threads}_workers"), |b| {
            b.iter_custom(|iters| record_on(threads, iters))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
