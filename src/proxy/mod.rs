//! The state every session and the listener share: the configuration and topology in force
//! (swapped whole on a reload), the counters INFO shows, the client registry, and the
//! shutdown and reload notices. It imports neither the listener nor the session.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::topology::Topology;

pub mod clients;

/// Samples the command and byte counters ten times a second for INFO's `instantaneous_*`
/// figures, as Redis does.
pub async fn sample_rates(proxy: Arc<Proxy>) {
    let mut tick = tokio::time::interval(crate::telemetry::RATE_SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        proxy.telemetry.sample();
    }
}

/// Counters shown by INFO.
pub struct Stats {
    pub started: Instant,
    pub connections: AtomicU64,
    pub connected: AtomicUsize,
    pub rejected: AtomicU64,
    /// Clients waiting in a blocking command or WAIT.
    pub blocked: AtomicU64,
}

/// State shared by every session: the current configuration and topology snapshots.
pub struct Proxy {
    config: ArcSwap<Config>,
    topology: ArcSwap<Topology>,
    listen_addr: SocketAddr,
    pub stats: Stats,
    /// The connected clients, for CLIENT LIST / INFO / KILL.
    pub clients: Arc<clients::Registry>,
    /// Per-command figures and the Prometheus recorder.
    pub telemetry: crate::telemetry::Telemetry,
    /// Turns true when the proxy is shutting down; sessions stop reading and finish.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Where a reload reads the configuration from; one reload at a time.
    source: Option<ConfigSource>,
    reloading: std::sync::Mutex<()>,
    /// Counts applied reloads; sessions wake on it to take new limits and drop per-shard
    /// state the reload invalidated.
    reloaded: tokio::sync::watch::Sender<u64>,
}

/// The file the configuration came from, and the command-line override applied over it.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: std::path::PathBuf,
    pub listen: Option<SocketAddr>,
}

impl Proxy {
    /// The shared state for a proxy listening on `listen_addr`, serving `config` over
    /// `topology`; `source` is the file reloads read again.
    pub fn new(
        config: Config,
        topology: Topology,
        listen_addr: SocketAddr,
        source: Option<ConfigSource>,
    ) -> Proxy {
        Proxy {
            config: ArcSwap::from_pointee(config),
            topology: ArcSwap::from_pointee(topology),
            listen_addr,
            shutdown: tokio::sync::watch::channel(false).0,
            source,
            reloading: Default::default(),
            reloaded: tokio::sync::watch::channel(0).0,
            clients: Arc::default(),
            telemetry: Default::default(),
            stats: Stats {
                started: Instant::now(),
                connections: AtomicU64::new(0),
                connected: AtomicUsize::new(0),
                rejected: AtomicU64::new(0),
                blocked: AtomicU64::new(0),
            },
        }
    }

    /// Tells every session the proxy is shutting down: each stops reading and finishes what
    /// it was sent.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
        self.clients.wake_all();
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.topology.load_full()
    }

    /// CONFIG RESETSTAT: the counters INFO shows from the proxy start again from zero, as a
    /// node's do (connections now open stay counted in `connected_clients`).
    pub fn reset_stats(&self) {
        for counter in [&self.stats.connections, &self.stats.rejected] {
            counter.store(0, Ordering::Relaxed);
        }
        self.telemetry.reset();
    }

    /// The configuration file it was started from, if any.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.source.as_ref().map(|s| s.path.as_path())
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Reads the configuration file again and applies it (SIGHUP, `SHARDIS RELOAD`): new
    /// shards, weights, timeouts and limits, without dropping a client. An invalid file, or a
    /// change that needs a restart, is refused with the reason and the running configuration
    /// stays. Returns what changed.
    pub fn reload(&self) -> Result<String, String> {
        let result = match self.reloading.try_lock() {
            Ok(_one) => self.reload_now(),
            Err(std::sync::TryLockError::Poisoned(one)) => {
                let _one = one.into_inner();
                self.reload_now()
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                Err("a reload is already running".to_string())
            }
        };
        match &result {
            Ok(report) => {
                let n = self.telemetry.reloads_ok.fetch_add(1, Ordering::Relaxed) + 1;
                self.reloaded.send_replace(n);
                self.clients.wake_all();
                tracing::info!("configuration reloaded: {report}");
            }
            Err(e) => {
                self.telemetry
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!("configuration reload refused, the running one stays: {e}");
            }
        }
        result
    }

    fn reload_now(&self) -> Result<String, String> {
        let source = self
            .source
            .as_ref()
            .ok_or("the proxy was not started from a configuration file")?;
        let mut new =
            Config::load(&source.path).map_err(|e| format!("{}: {e}", source.path.display()))?;
        if let Some(listen) = source.listen {
            new.listen = listen;
        }
        let old = self.config();
        let reloaded = self.topology().reload(&old, &new)?;
        self.config.store(Arc::new(new));
        self.topology.store(Arc::new(reloaded.topology));
        Ok(reloaded.report)
    }

    /// A receiver whose value counts the reloads applied: it changes at each one.
    pub fn reload_notice(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloaded.subscribe()
    }

    /// A receiver whose value turns true when the proxy starts shutting down.
    pub fn shutdown_notice(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}
