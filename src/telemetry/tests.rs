use super::names::{Kind, ALL};

#[test]
fn every_family_has_one_name_and_help_text() {
    let mut seen = std::collections::HashSet::new();
    for family in ALL {
        assert!(seen.insert(family.name), "{} twice", family.name);
        let help = family.help();
        assert!(help.len() > 10, "{}: help {help:?}", family.name);
        assert!(!help.contains(['`', '\n']), "{}: {help:?}", family.name);
        assert!(!help.starts_with(' ') && help.ends_with('.'), "{help:?}");
    }
    assert_eq!(ALL.len(), 19);
}

/// promtool's lint: counters, and only counters, end in `_total`; a unit is in the name.
#[test]
fn names_follow_the_prometheus_conventions() {
    for family in ALL {
        let name = family.name;
        assert!(name.starts_with("shardis_"), "{name}");
        assert_eq!(
            name.ends_with("_total"),
            family.kind == Kind::Counter,
            "{name}"
        );
        match family.unit {
            Some(metrics::Unit::Seconds) => assert!(name.ends_with("_seconds"), "{name}"),
            Some(metrics::Unit::Bytes) => assert!(name.contains("_bytes"), "{name}"),
            None => {}
            Some(other) => panic!("{name}: unit {other:?} not expected"),
        }
    }
}

#[test]
fn latency_buckets_hold_within_an_eighth() {
    for usec in [0u64, 1, 15, 16, 17, 100, 1_000, 12_345, 999_999, 1 << 39] {
        let top = super::bucket_top(super::bucket(usec));
        assert!(top >= usec as f64, "{usec} above its bucket's top {top}");
        assert!(top <= usec as f64 * 1.125 + 1.0, "{usec}: bucket top {top}");
    }
    // Past the last bucket, everything lands in it.
    assert_eq!(super::bucket(u64::MAX), super::BUCKETS - 1);
}

/// Every latency recorded is in its histogram, even when workers record while a scrape reads
/// the histograms on another thread.
#[test]
fn latencies_recorded_during_scrapes_are_all_counted() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::command::CommandId;

    const THREADS: usize = 3;
    const EACH: usize = 100_000;
    let telemetry = Arc::new(super::Telemetry::default());
    let cmd = CommandId::from_index(0);
    let done = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (telemetry, done) = (telemetry.clone(), done.clone());
        std::thread::spawn(move || {
            let mut scrapes = 0;
            while !done.load(Ordering::Relaxed) {
                telemetry.sample();
                telemetry.render(|| {});
                scrapes += 1;
            }
            scrapes
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let telemetry = telemetry.clone();
            std::thread::spawn(move || {
                for n in 0..EACH {
                    let took = Duration::from_micros(((n * 7 + i) % 3000) as u64);
                    telemetry.record(cmd, took, None, false);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(scraper.join().unwrap() > 0);

    let text = telemetry.render(|| {});
    let labels = format!("cmd=\"{}\"", cmd.name());
    let count = value(&text, "shardis_command_duration_seconds_count", &labels);
    assert_eq!(count, (THREADS * EACH).to_string());
}

/// The value of the series `name{labels}` in a scrape's text.
fn value<'t>(text: &'t str, name: &str, labels: &str) -> &'t str {
    let series = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// A latency counts in the buckets whose bound it does not pass (`le`), and in the sum.
#[test]
fn a_latency_counts_up_to_its_bound() {
    use std::time::Duration;

    use crate::command::CommandId;

    let telemetry = super::Telemetry::default();
    let cmd = CommandId::from_index(0);
    for usec in [50, 100, 101, 3_000_000] {
        telemetry.record(cmd, Duration::from_micros(usec), None, false);
    }
    let text = telemetry.render(|| {});
    let series = |suffix: &str, le: Option<&str>| {
        let labels = match le {
            Some(le) => format!("cmd=\"{}\",le=\"{le}\"", cmd.name()),
            None => format!("cmd=\"{}\"", cmd.name()),
        };
        value(
            &text,
            &format!("shardis_command_duration_seconds{suffix}"),
            &labels,
        )
        .to_string()
    };
    assert_eq!(series("_bucket", Some("0.0001")), "2");
    assert_eq!(series("_bucket", Some("0.00025")), "3");
    assert_eq!(series("_bucket", Some("2.5")), "3");
    assert_eq!(series("_bucket", Some("+Inf")), "4");
    assert_eq!(series("_count", None), "4");
    assert_eq!(series("_sum", None), "3.000251");
    assert!(text.contains("# TYPE shardis_command_duration_seconds histogram\n"));
}

/// Each worker counts apart: what several counted is read as one sum, in every figure a
/// request adds to, and CONFIG RESETSTAT clears every worker's counts, not the caller's.
#[test]
fn what_each_worker_counted_is_read_as_one_sum_and_reset_as_one() {
    use std::time::Duration;

    use crate::command::CommandId;

    let telemetry = super::Telemetry::default();
    let cmd = CommandId::from_index(0);
    let count = |failed: bool| {
        telemetry.count_processed(1);
        telemetry.count_input(10);
        telemetry.count_output(3);
        let error = failed.then_some(&b"-ERR no\r\n"[..]);
        telemetry.record(cmd, Duration::from_micros(40), error, false);
    };
    std::thread::scope(|s| {
        for t in 0..3 {
            s.spawn(move || {
                crate::net::workers::count_as(t + 1);
                (0..100).for_each(|n| count(t == 0 && n < 5))
            });
        }
    });
    count(false);

    let figures = telemetry.figures(cmd);
    assert_eq!(
        (figures.calls, figures.failed, figures.usec),
        (301, 5, 301 * 40)
    );
    assert_eq!(telemetry.processed(), 301);
    assert_eq!((telemetry.net_input(), telemetry.net_output()), (3010, 903));
    assert_eq!(telemetry.error_replies(), 5);
    let top = super::bucket_top(super::bucket(40));
    assert_eq!(telemetry.percentiles(cmd, [50.0]), Some([top]));
    let labels = format!("cmd=\"{}\"", cmd.name());
    let text = telemetry.render(|| {});
    assert_eq!(
        value(&text, "shardis_command_duration_seconds_count", &labels),
        "301"
    );
    assert_eq!(telemetry.all_commands().count(), 1);

    telemetry.reset();
    let figures = telemetry.figures(cmd);
    assert_eq!((figures.calls, figures.failed, figures.usec), (0, 0, 0));
    assert_eq!(
        telemetry.processed() + telemetry.net_input() + telemetry.net_output(),
        0
    );
    assert_eq!(telemetry.percentiles(cmd, [50.0]), None);
    assert_eq!(telemetry.all_commands().count(), 0);
}
