//! Request parsing: pipelined small commands, and one big MSET arriving in 16 KiB pieces
//! (the case where a parser that restarts from the first byte goes quadratic).

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardis::resp::{encode, Limits, RequestParser};

fn pipeline(n: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    for i in 0..n {
        let key = format!("key:{i:06}");
        encode::command(
            &mut out,
            [&b"SET"[..], key.as_bytes(), b"value-of-16bytes"].into_iter(),
        );
    }
    out.to_vec()
}

fn big_mset(pairs: usize) -> Vec<u8> {
    let keys: Vec<String> = (0..pairs).map(|i| format!("key:{i:08}")).collect();
    let value = vec![b'v'; 64];
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    for k in &keys {
        args.push(k.as_bytes());
        args.push(&value);
    }
    let mut out = BytesMut::new();
    encode::command(&mut out, args.into_iter());
    out.to_vec()
}

fn parse_all(wire: &[u8], chunk: usize) -> usize {
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::with_capacity(chunk);
    let mut count = 0;
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(req) = parser.next(&mut buf).unwrap() {
            count += req.args().len();
        }
    }
    count
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    let wire = pipeline(1000);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("pipeline_1000_set_16k_reads", |b| {
        b.iter(|| parse_all(&wire, 16 * 1024))
    });
    for pairs in [1_000usize, 30_000, 60_000] {
        let wire = big_mset(pairs);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("mset_in_16k_pieces", wire.len()),
            &wire,
            |b, w| b.iter(|| parse_all(w, 16 * 1024)),
        );
        g.bench_with_input(
            BenchmarkId::new("mset_in_one_piece", wire.len()),
            &wire,
            |b, w| b.iter(|| parse_all(w, w.len())),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
