//! What the proxy counts. The endpoint that shows it is the listener's
//! (`crate::server::http`); this module knows nothing of the proxy's state.
//!
//! The figures live in the proxy's own atomics (per command here, per node in the backend, per
//! shard in the topology), which INFO reads directly. What every request adds to (its command's
//! figures, the bytes read and written) is counted per worker and summed when read (see
//! [`Telemetry`]), so workers never write to the same cache line as they serve requests. A
//! scrape copies the same atomics into a `metrics` recorder (counters set to their absolute
//! value, gauges set) and renders it, so INFO and `/metrics` show one set of numbers. Latency
//! histograms are counted by bucket in atomics too, and written out beside what the recorder
//! renders (see [`Latencies`]). Every metric name is a constant in [`names`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::command::CommandId;
use crate::net::workers::PerWorker;

/// Every metric the proxy exports, in one place. Each name's doc comment is also its HELP
/// text on `/metrics` (see [`names::ALL`]).
pub mod names {
    /// What kind of series a family holds.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Counter,
        Gauge,
        Histogram,
    }

    /// One metric family: its name, kind, unit and HELP text.
    #[derive(Debug)]
    pub struct Family {
        pub name: &'static str,
        pub kind: Kind,
        pub unit: Option<metrics::Unit>,
        /// The name's doc comment, lines joined.
        doc: &'static str,
    }

    impl Family {
        /// The HELP text: the doc comment without its Markdown backticks.
        pub fn help(&self) -> String {
            self.doc.trim().replace('`', "")
        }
    }

    /// Declares each name as a constant, and [`ALL`] from the same lines, so that no family
    /// goes without HELP text.
    macro_rules! families {
        (@unit) => { None };
        (@unit $unit:ident) => { Some(metrics::Unit::$unit) };
        ($(
            $(#[doc = $doc:literal])+
            $konst:ident: $kind:ident $(in $unit:ident)? = $name:literal;
        )+) => {
            $(
                $(#[doc = $doc])+
                pub const $konst: &str = $name;
            )+

            /// Every family, with its kind, unit and HELP text.
            pub const ALL: &[Family] = &[$(
                Family {
                    name: $name,
                    kind: Kind::$kind,
                    unit: families!(@unit $($unit)?),
                    doc: concat!($($doc),+),
                },
            )+];
        };
    }

    families! {
        /// Commands answered, by command (`cmd`, Redis's lower-case name; `unknown` for a name
        /// Redis does not know).
        COMMANDS: Counter = "shardis_commands_total";
        /// Commands answered with an error reply, by command (`cmd`).
        COMMAND_ERRORS: Counter = "shardis_command_errors_total";
        /// Seconds from reading a command to its reply being ready to write, by command
        /// (`cmd`).
        COMMAND_DURATION: Histogram in Seconds = "shardis_command_duration_seconds";
        /// Requests a node answered or failed (sub-requests of a split command count once per
        /// node), by `shard` and `node`.
        BACKEND_REQUESTS: Counter = "shardis_backend_requests_total";
        /// Requests a node answered with an error reply or did not answer at all (timeout,
        /// connection lost), by `shard` and `node`.
        BACKEND_ERRORS: Counter = "shardis_backend_errors_total";
        /// Shared backend connections currently open, by `shard` and `node`.
        BACKEND_CONNECTIONS: Gauge = "shardis_backend_connections";
        /// 1 while the health checks see a node up, else 0, by `shard` and `node`.
        NODE_UP: Gauge = "shardis_node_up";
        /// 1 for the node that is its shard's primary now, 0 for its replicas, by `shard` and
        /// `node`.
        NODE_PRIMARY: Gauge = "shardis_node_primary";
        /// Primary changes, by `shard`.
        FAILOVERS: Counter = "shardis_failovers_total";
        /// The shard's epoch (grows with every failover), by `shard`.
        EPOCH: Gauge = "shardis_shard_epoch";
        /// 1 while something keeps the shard from serving as it should, by `shard` and
        /// `problem` (`two_primaries`, `no_primary`, `no_replica_in_sync`,
        /// `primary_unreachable`, `primary_down`, `epochs_exhausted`); absent while there is
        /// nothing.
        SHARD_PROBLEM: Gauge = "shardis_shard_problem";
        /// Clients connected now.
        CLIENTS: Gauge = "shardis_connected_clients";
        /// Client connections accepted since start (refused ones included).
        CLIENT_CONNECTIONS: Counter = "shardis_client_connections_total";
        /// Client connections refused at `max_clients`.
        CLIENTS_REJECTED: Counter = "shardis_rejected_connections_total";
        /// Bytes read from clients.
        NET_INPUT: Counter in Bytes = "shardis_net_input_bytes_total";
        /// Bytes written to clients.
        NET_OUTPUT: Counter in Bytes = "shardis_net_output_bytes_total";
        /// Lock grants, by `shard`.
        LOCK_GRANTS: Counter = "shardis_lock_grants_total";
        /// Lock requests refused, by `shard` and `reason` (`contended`, `frozen`,
        /// `not_replicated`, `stale_token`).
        LOCK_REJECTIONS: Counter = "shardis_lock_rejections_total";
        /// Configuration reloads, by `result` (`ok`, `error`).
        RELOADS: Counter = "shardis_config_reloads_total";
    }
}

/// Histogram bucket bounds for command latency, in seconds (100 µs to 2.5 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One command's figures as one worker counted them (see [`Figures`] for their sum).
#[derive(Default)]
struct CommandStats {
    calls: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    usec: AtomicU64,
    /// Its latency histogram on `/metrics`.
    latencies: OnceLock<Box<Latencies>>,
    /// Counts by latency, for INFO latencystats: see [`bucket`].
    buckets: OnceLock<Box<[AtomicU64]>>,
}

/// A command's latency histogram on `/metrics`: how many latencies fell in each bucket of
/// [`LATENCY_BUCKETS`] (the last counts those above them all), and their sum.
///
/// The Prometheus exporter's own histograms are not used for it. They keep every value
/// recorded until a scrape (or an upkeep) folds them into buckets, and a value recorded on one
/// worker while the fold runs on another can be lost: 1 in 300,000 latencies recorded by
/// three threads while a fourth scraped, in the test beside this module. Counted here, one
/// atomic add per bucket and sum, nothing is kept and nothing lost.
#[derive(Default)]
struct Latencies {
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    nanos: AtomicU64,
}

/// A command's [`Latencies`] summed over the workers, to be written out.
#[derive(Default)]
struct LatencySum {
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    nanos: u64,
}

impl Latencies {
    fn record(&self, elapsed: Duration) {
        // A bucket holds the latencies up to its bound (Prometheus's `le`).
        let secs = elapsed.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|&bound| bound < secs);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl LatencySum {
    fn add(&mut self, latencies: &Latencies) {
        for (sum, count) in self.counts.iter_mut().zip(&latencies.counts) {
            *sum += count.load(Ordering::Relaxed);
        }
        self.nanos += latencies.nanos.load(Ordering::Relaxed);
    }

    /// Its series, in Prometheus' text format, labelled `cmd="<name>"`: buckets counted up
    /// to each bound, the sum and the count.
    fn write(&self, name: &str, text: &mut String) {
        use std::fmt::Write;
        let family = names::COMMAND_DURATION;
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            let le = match LATENCY_BUCKETS.get(i) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(text, "{family}_bucket{{cmd=\"{name}\",le=\"{le}\"}} {seen}");
        }
        let sum = self.nanos as f64 / 1e9;
        let _ = writeln!(text, "{family}_sum{{cmd=\"{name}\"}} {sum}");
        let _ = writeln!(text, "{family}_count{{cmd=\"{name}\"}} {seen}");
    }
}

/// Latency buckets: one per microsecond below 16 µs, then eight per power of two (each 1/8 of
/// its octave wide, so a percentile is within 12.5% of the true value), up to 2^40 µs.
const BUCKETS: usize = 16 + 8 * 37;

/// The bucket of a latency in microseconds.
fn bucket(usec: u64) -> usize {
    if usec < 16 {
        return usec as usize;
    }
    let octave = 63 - usec.leading_zeros() as usize;
    let sub = ((usec >> (octave - 3)) & 7) as usize;
    (16 + (octave - 4) * 8 + sub).min(BUCKETS - 1)
}

/// The largest latency a bucket holds, in microseconds.
fn bucket_top(b: usize) -> f64 {
    if b < 16 {
        return b as f64;
    }
    let (octave, sub) = ((b - 16) / 8 + 4, (b - 16) % 8);
    let width = 1u64 << (octave - 3);
    ((1u64 << octave) + (sub as u64 + 1) * width - 1) as f64
}

/// The latencies at these percentiles, in microseconds, as the top of the bucket each falls
/// in, from counts by [`bucket`]; `None` with no latency counted.
fn percentiles<const N: usize>(counts: &[u64], wanted: [f64; N]) -> Option<[f64; N]> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    Some(wanted.map(|p| {
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_top(b);
            }
        }
        bucket_top(BUCKETS - 1)
    }))
}

/// How often the rates INFO shows are sampled, and over how many samples they are averaged.
pub const RATE_SAMPLE: Duration = Duration::from_millis(100);
const RATE_SAMPLES: usize = 16;

/// The last samples of commands and bytes per second (Redis's `instantaneous_*`).
#[derive(Default)]
struct RateSampler {
    last: Option<(Instant, u64, u64, u64)>,
    samples: std::collections::VecDeque<[f64; 3]>,
}

/// Commands per second and kilobytes per second in and out, averaged over the last 1.6 s.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rates {
    pub ops_per_sec: u64,
    pub input_kbps: f64,
    pub output_kbps: f64,
}

/// Error codes counted for INFO errorstats, at most this many different ones (as Redis).
const MAX_ERROR_CODES: usize = 128;

/// The proxy's counters.
///
/// What a request adds to is counted in its worker's own [`Counts`], summed when read. Shared,
/// every worker serving requests would write to the same cache lines: recording one request's
/// figures took 18.9 ns on one worker and 172.6 ns on each of two recording the same command at
/// once; counted per worker, 19.5 and 20.2 ns (`cargo bench --bench counters`).
pub struct Telemetry {
    counts: PerWorker<Counts>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Error replies by their code (`ERR`, `WRONGTYPE`, ...), for INFO errorstats.
    errors: dashmap::DashMap<Box<str>, AtomicU64>,
    rates: std::sync::Mutex<RateSampler>,
}

/// What one worker counted. Aligned so that two workers' counts never share a cache line (the
/// per-command figures are allocated by the worker that counts them).
#[repr(align(128))]
struct Counts {
    commands: Box<[CommandStats]>,
    /// Commands carried out (INFO's `total_commands_processed`).
    processed: AtomicU64,
    net_input: AtomicU64,
    net_output: AtomicU64,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            commands: (0..CommandId::count())
                .map(|_| CommandStats::default())
                .collect(),
            processed: AtomicU64::new(0),
            net_input: AtomicU64::new(0),
            net_output: AtomicU64::new(0),
        }
    }
}

/// A command's figures, summed over the workers: what INFO commandstats shows.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub cmd: CommandId,
    /// Every time it was answered, refused ones included.
    pub calls: u64,
    /// Answered with an error, refused ones included.
    pub failed: u64,
    /// Refused before it ran (wrong arity, refused by the proxy, not authenticated): Redis's
    /// `rejected_calls`.
    pub rejected: u64,
    pub usec: u64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            counts: PerWorker::default(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            errors: dashmap::DashMap::new(),
            rates: std::sync::Mutex::default(),
        }
    }
}

impl Telemetry {
    /// Counts one answered command: its latency, and its reply if that is an error (`rejected`:
    /// refused before it ran).
    pub fn record(&self, cmd: CommandId, elapsed: Duration, error: Option<&[u8]>, rejected: bool) {
        let stats = &self.counts.mine().commands[cmd.index()];
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let usec = elapsed.as_micros() as u64;
        if let Some(reply) = error {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            self.count_error(reply);
        }
        // A refused command did not run: no time, as on Redis.
        if rejected && error.is_some() {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.usec.fetch_add(usec, Ordering::Relaxed);
        }
        stats
            .buckets
            .get_or_init(|| (0..BUCKETS).map(|_| AtomicU64::new(0)).collect())[bucket(usec)]
        .fetch_add(1, Ordering::Relaxed);
        stats
            .latencies
            .get_or_init(Default::default)
            .record(elapsed);
    }

    /// Counts `n` commands carried out.
    pub fn count_processed(&self, n: u64) {
        self.counts.mine().processed.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts bytes read from a client.
    pub fn count_input(&self, bytes: usize) {
        self.counts
            .mine()
            .net_input
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts bytes written to a client.
    pub fn count_output(&self, bytes: usize) {
        self.counts
            .mine()
            .net_output
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Commands carried out.
    pub fn processed(&self) -> u64 {
        self.counts.sum(|c| &c.processed)
    }

    /// Bytes read from clients.
    pub fn net_input(&self) -> u64 {
        self.counts.sum(|c| &c.net_input)
    }

    /// Bytes written to clients.
    pub fn net_output(&self) -> u64 {
        self.counts.sum(|c| &c.net_output)
    }

    /// Counts an error reply by its code: the first word, `-ERR ...` or RESP3's `!<len>`. No
    /// allocation but for a code seen the first time.
    fn count_error(&self, reply: &[u8]) {
        let text = match reply.first() {
            Some(b'!') => reply
                .iter()
                .position(|&b| b == b'\n')
                .map_or(&[][..], |at| &reply[at + 1..]),
            _ => reply.get(1..).unwrap_or_default(),
        };
        let len = text
            .iter()
            .take(32)
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
            .count();
        // ASCII letters, digits, `_` and `-` only: valid UTF-8.
        let Ok(code) = std::str::from_utf8(&text[..len]) else {
            return;
        };
        if code.is_empty() {
            return;
        }
        if let Some(count) = self.errors.get(code) {
            count.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.errors.len() < MAX_ERROR_CODES {
            self.errors
                .entry(code.into())
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// CONFIG RESETSTAT: every command's figures, the error codes, the byte counts and the
    /// rates start again from zero. `/metrics` shows the counters start over, as after a
    /// restart.
    pub fn reset(&self) {
        for counts in self.counts.all() {
            for stats in counts.commands.iter() {
                for counter in [&stats.calls, &stats.failed, &stats.rejected, &stats.usec] {
                    counter.store(0, Ordering::Relaxed);
                }
                if let Some(buckets) = stats.buckets.get() {
                    buckets.iter().for_each(|b| b.store(0, Ordering::Relaxed));
                }
            }
            for counter in [&counts.processed, &counts.net_input, &counts.net_output] {
                counter.store(0, Ordering::Relaxed);
            }
        }
        self.errors.clear();
        *self.rates.lock().unwrap_or_else(|e| e.into_inner()) = RateSampler::default();
    }

    /// Error replies by code, by name.
    pub fn errors(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .errors
            .iter()
            .map(|e| (e.key().to_string(), e.value().load(Ordering::Relaxed)))
            .collect();
        all.sort();
        all
    }

    /// Every error reply given.
    pub fn error_replies(&self) -> u64 {
        self.counts
            .all()
            .flat_map(|c| c.commands.iter())
            .map(|s| s.failed.load(Ordering::Relaxed))
            .sum()
    }

    /// Takes one sample of the counters for [`Telemetry::rates`].
    pub fn sample(&self) {
        let now = Instant::now();
        let (commands, input, output) = (self.processed(), self.net_input(), self.net_output());
        let mut r = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, c0, i0, o0)) = r.last {
            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
            let per_sec = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            let sample = [
                per_sec(commands, c0),
                per_sec(input, i0) / 1024.0,
                per_sec(output, o0) / 1024.0,
            ];
            if r.samples.len() == RATE_SAMPLES {
                r.samples.pop_front();
            }
            r.samples.push_back(sample);
        }
        r.last = Some((now, commands, input, output));
    }

    /// Commands and kilobytes per second, averaged over the last samples.
    pub fn rates(&self) -> Rates {
        let r = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let n = r.samples.len().max(1) as f64;
        let mean = |i: usize| r.samples.iter().map(|s| s[i]).sum::<f64>() / n;
        Rates {
            ops_per_sec: mean(0).round() as u64,
            input_kbps: mean(1),
            output_kbps: mean(2),
        }
    }

    /// Every command called at least once, with its figures (not `unknown`: Redis shows no
    /// figures for a command it does not know).
    pub fn commands(&self) -> impl Iterator<Item = (&'static str, Figures)> + '_ {
        self.all_commands()
            .filter(|(name, _)| *name != CommandId::unknown().name())
    }

    /// [`Telemetry::commands`] with `unknown` too, as `/metrics` counts them.
    pub fn all_commands(&self) -> impl Iterator<Item = (&'static str, Figures)> + '_ {
        (0..CommandId::count())
            .map(|i| self.figures(CommandId::from_index(i)))
            .filter(|f| f.calls > 0)
            .map(|f| (f.cmd.name(), f))
    }

    /// One command's figures, summed over the workers.
    pub fn figures(&self, cmd: CommandId) -> Figures {
        let mut sum = Figures {
            cmd,
            calls: 0,
            failed: 0,
            rejected: 0,
            usec: 0,
        };
        for counts in self.counts.all() {
            let s = &counts.commands[cmd.index()];
            sum.calls += s.calls.load(Ordering::Relaxed);
            sum.failed += s.failed.load(Ordering::Relaxed);
            sum.rejected += s.rejected.load(Ordering::Relaxed);
            sum.usec += s.usec.load(Ordering::Relaxed);
        }
        sum
    }

    /// A command's latencies at these percentiles, in microseconds (the top of the bucket each
    /// falls in); `None` before any call.
    pub fn percentiles<const N: usize>(
        &self,
        cmd: CommandId,
        wanted: [f64; N],
    ) -> Option<[f64; N]> {
        let mut counts = vec![0u64; BUCKETS];
        for worker in self.counts.all() {
            let Some(buckets) = worker.commands[cmd.index()].buckets.get() else {
                continue;
            };
            for (sum, b) in counts.iter_mut().zip(buckets.iter()) {
                *sum += b.load(Ordering::Relaxed);
            }
        }
        percentiles(&counts, wanted)
    }

    /// The Prometheus text of every figure, read now. Counters and gauges go through a
    /// recorder made for this scrape, so a shard or node a reload removed leaves no stale
    /// series behind; `publish` sets them, with the `metrics` macros. The latency histograms
    /// follow, written from their counts (see [`Latencies`]).
    pub fn render(&self, publish: impl FnOnce()) -> String {
        let now = PrometheusBuilder::new().build_recorder();
        describe(&now);
        metrics::with_local_recorder(&now, publish);
        let mut text = now.handle().render();
        // Every command with a latency, even one CONFIG RESETSTAT zeroed since: a histogram
        // never starts over while the proxy runs.
        let mut latencies = (0..CommandId::count())
            .filter_map(|i| {
                let mut sum = None::<LatencySum>;
                for counts in self.counts.all() {
                    if let Some(l) = counts.commands[i].latencies.get() {
                        sum.get_or_insert_with(Default::default).add(l);
                    }
                }
                Some((CommandId::from_index(i).name(), sum?))
            })
            .peekable();
        if latencies.peek().is_some() {
            let family = names::ALL
                .iter()
                .find(|f| f.name == names::COMMAND_DURATION)
                .expect("the latency family is listed");
            if !text.is_empty() && !text.ends_with("\n\n") {
                text.push('\n');
            }
            text.push_str(&format!("# HELP {} {}\n", family.name, family.help()));
            text.push_str(&format!("# TYPE {} histogram\n", family.name));
            for (name, latencies) in latencies {
                latencies.write(name, &mut text);
            }
        }
        text
    }
}

/// Gives `recorder` the HELP text and unit of every counter and gauge family; it shows them for
/// the families that have a series when it renders. The histograms are written apart (see
/// [`Telemetry::render`]).
fn describe(recorder: &PrometheusRecorder) {
    use metrics::{KeyName, Recorder};
    for family in names::ALL {
        let (name, unit) = (KeyName::from_const_str(family.name), family.unit);
        let help = family.help().into();
        match family.kind {
            names::Kind::Counter => recorder.describe_counter(name, unit, help),
            names::Kind::Gauge => recorder.describe_gauge(name, unit, help),
            names::Kind::Histogram => {}
        }
    }
}

/// A warning a client can set off at will (a failed AUTH, a connection refused for want of
/// descriptors): logged at most once a second for the whole proxy, so no client can flood the
/// log, each line saying how many went unlogged before it.
#[derive(Debug, Default)]
pub struct LogLimit {
    /// When a line was last let through, in ms since the Unix epoch.
    last_ms: AtomicU64,
    unlogged: AtomicU64,
}

impl LogLimit {
    pub const fn new() -> LogLimit {
        LogLimit {
            last_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// How many went unlogged since the last line, when this one may be logged; else `None`
    /// (and it is counted).
    pub fn pass(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_ms.load(Ordering::Relaxed);
        if now < last + 1_000
            || self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

/// Starts logging to stderr (stdout is for what a command prints, e.g. --check-config), at
/// `RUST_LOG` when set, else at the configured level, as text (colours only on a terminal) or
/// JSON lines.
pub fn init_logging(log: &crate::config::LogSettings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"))
    });
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = match log.format {
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        crate::config::LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests;
