//! The listener: accepts clients up to the limit, starts a session for each, and stops
//! accepting on shutdown.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

mod http;
mod signals;

pub use signals::shutdown_signal;

use crate::config::Config;
use crate::proxy::{ConfigSource, Proxy};
use crate::topology::Topology;

/// A bound, running proxy.
pub struct Server {
    proxy: Arc<Proxy>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    /// The TLS client listener and its acceptor, when `[tls]` is set.
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    /// A file descriptor held in reserve: when the process runs out, it is given up to accept
    /// one client and tell it so, instead of leaving every new client hanging.
    spare_fd: Option<std::fs::File>,
}

/// `EMFILE` and `ENFILE`: out of file descriptors (process, system).
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Raises the process's descriptor limit as far as allowed (as Redis does), and warns when
/// the clients and backend connections the configuration allows could still exceed it.
fn descriptor_limit(config: &Config) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot read or raise the file descriptor limit: {e}");
            return;
        }
    };
    let b = &config.backend;
    let nodes: usize = config.shards.iter().map(|s| s.nodes().count()).sum();
    // Per node: the shared connections of both protocols on every worker, the dedicated ones,
    // a health check and a spare for REPLICAOF or a script kill.
    let shared = 2 * b.connections * crate::net::workers::count();
    let backend = nodes * (shared + b.max_dedicated + 2);
    let needed = (config.client.max_clients + backend + 32) as u64;
    if needed > limit {
        tracing::warn!(
            limit,
            needed,
            "max_clients ({}) and backend connections (up to {backend}) may need more file descriptors than the limit: past it, new clients get \"max number of clients reached\" and new backend connections fail",
            config.client.max_clients
        );
    } else {
        tracing::info!(limit, "file descriptor limit");
    }
}

/// How long a TLS client may take over its handshake.
const TLS_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

impl Server {
    /// Binds the listen address and starts connecting to the backends; `source` is the file
    /// the configuration was read from, which reloads read again. Runs on worker 0.
    async fn bind(config: Config, source: Option<ConfigSource>) -> std::io::Result<Server> {
        descriptor_limit(&config);
        let listener = TcpListener::bind(config.listen).await?;
        let listen_addr = listener.local_addr()?;
        let tls = match &config.tls {
            Some(t) => {
                let acceptor =
                    crate::net::tls::acceptor(&t.cert, &t.key).map_err(std::io::Error::other)?;
                let listener = TcpListener::bind(t.listen).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("tls.listen {}: {e}", t.listen))
                })?;
                Some((listener, acceptor))
            }
            None => None,
        };
        let metrics = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("metrics_listen {addr}: {e}"))
            })?),
            None => None,
        };
        let topology = Topology::start(&config).map_err(std::io::Error::other)?;
        // Clients wait (their connections queue in the listener's backlog) until every shard's
        // checks have said which node is primary and which replicas are readable: serving from
        // the config file's guess could write to a node that is now a replica, or find no
        // readable replica yet. A shard still undecided after that answers "unavailable".
        let bound = config.backend.connect_timeout + config.backend.timeout;
        if !topology.discovered(bound).await {
            tracing::warn!(
                "not every shard knows its primary after {} ms: those answer \"unavailable\" until their nodes have answered",
                bound.as_millis()
            );
        }
        let proxy = Arc::new(Proxy::new(config, topology, listen_addr, source));
        Ok(Server {
            proxy,
            listener,
            metrics,
            tls,
            spare_fd: std::fs::File::open("/dev/null").ok(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.proxy.listen_addr()
    }

    /// Where TLS clients connect, when `[tls]` is set.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Where `/metrics` is served, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Accepts clients until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tracing::info!(listen = %self.proxy.listen_addr(), "shardis accepting clients");
        if let Some(metrics) = self.metrics.take() {
            if let Ok(addr) = metrics.local_addr() {
                tracing::info!(%addr, "serving Prometheus metrics on /metrics");
            }
            tokio::spawn(http::serve(metrics, self.proxy.clone()));
        }
        let reloads = tokio::spawn(signals::reload_on_sighup(self.proxy.clone()));
        let rates = tokio::spawn(crate::proxy::sample_rates(self.proxy.clone()));
        if let Some((listener, _)) = &self.tls {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "accepting TLS clients");
            }
        }
        tokio::pin!(shutdown);
        let mut next_id: u64 = 1;
        loop {
            let plain = self.listener.accept();
            let tls = async {
                match &self.tls {
                    Some((listener, acceptor)) => (listener.accept().await, acceptor.clone()),
                    None => std::future::pending().await,
                }
            };
            let (accepted, acceptor) = tokio::select! {
                accepted = plain => (accepted, None),
                (accepted, acceptor) = tls => (accepted, Some(acceptor)),
                _ = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) if out_of_descriptors(&e) && self.spare_fd.is_some() => {
                    self.refuse_one(acceptor.is_some()).await;
                    continue;
                }
                Err(e) => {
                    // Pause instead of spinning; take the spare back if it was lost.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    if self.spare_fd.is_none() {
                        self.spare_fd = std::fs::File::open("/dev/null").ok();
                    }
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            // Handed to a worker thread as a plain socket: it is registered again there, with
            // that worker's own event loop.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(peer = %peer, "cannot hand the connection to a worker: {e}");
                    continue;
                }
            };
            let proxy = self.proxy.clone();
            let stats = &proxy.stats;
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let max = proxy.config().client.max_clients;
            let refused = stats.connected.fetch_add(1, Ordering::AcqRel) >= max;
            if refused {
                stats.connected.fetch_sub(1, Ordering::AcqRel);
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %peer, max, "client limit reached; connection refused");
            }
            let id = next_id;
            next_id += 1;
            let worker = crate::net::workers::assign();
            crate::net::workers::spawn_on(worker.worker, async move {
                let _worker = worker;
                // Counted out on drop, so a session that ends any way frees its place (for a
                // TLS client, when its bridge ends).
                let slot = (!refused).then(|| ClientSlot(proxy.clone()));
                let stream = match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(peer = %peer, "cannot register the connection: {e}");
                        return;
                    }
                };
                let laddr = stream.local_addr().unwrap_or(proxy.listen_addr());
                match acceptor {
                    None if refused => refuse(stream).await,
                    None => {
                        let _slot = slot;
                        crate::session::serve(proxy, stream, peer, laddr, id).await
                    }
                    Some(acceptor) => {
                        let tls = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream));
                        let tls = match tls.await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::info!(peer = %peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::info!(peer = %peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        if refused {
                            return refuse(tls).await;
                        }
                        match crate::net::tls::bridge(tls, slot) {
                            Ok(socket) => {
                                crate::session::serve(proxy, socket, peer, laddr, id).await
                            }
                            Err(e) => tracing::warn!(peer = %peer, "TLS bridge: {e}"),
                        }
                    }
                }
            });
        }
        reloads.abort();
        rates.abort();
        self.drain().await;
    }

    /// Out of file descriptors: gives up the spare one to accept a waiting client on the
    /// listener that failed, tells it so (a plain one: a TLS client would need a handshake
    /// first, so it is only closed) and closes it, then takes the spare back, so clients get
    /// an answer at once rather than wait in the backlog. Warned about at most once a second.
    async fn refuse_one(&mut self, tls: bool) {
        let listener = match (&self.tls, tls) {
            (Some((l, _)), true) => l,
            _ => &self.listener,
        };
        // Nothing awaits between giving the spare up and taking it back: another task of this
        // thread opening a socket meanwhile (a dedicated backend connection, say) would take
        // the descriptor, and the spare would be lost for good. Other workers open theirs
        // under `fds::opening`, which this holds back.
        let swapping = crate::net::fds::swapping();
        self.spare_fd = None;
        let refused = match socket2::SockRef::from(listener).accept() {
            Ok((socket, peer)) => {
                // Accepted as a blocking socket: made non-blocking before it is touched.
                if socket.set_nonblocking(true).is_ok() {
                    if !tls {
                        let _ = (&socket).write(MAX_CLIENTS_REACHED);
                    }
                    // What the client already sent is read first: closing a socket with
                    // unread data resets it, and the client might not see the error.
                    let mut sent = [0u8; 4096];
                    let _ = (&socket).read(&mut sent);
                }
                peer.as_socket()
            }
            Err(_) => None,
        };
        self.spare_fd = std::fs::File::open("/dev/null").ok();
        drop(swapping);
        if let Some(peer) = refused {
            self.proxy.stats.connections.fetch_add(1, Ordering::Relaxed);
            self.proxy.stats.rejected.fetch_add(1, Ordering::Relaxed);
            static REFUSED: crate::telemetry::LogLimit = crate::telemetry::LogLimit::new();
            if let Some(unlogged) = REFUSED.pass() {
                tracing::warn!(peer = %peer, unlogged, "out of file descriptors: client refused");
            }
        }
        if self.spare_fd.is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Graceful shutdown: stop accepting, tell every session to finish what it was sent
    /// (no new commands are read), and wait for them up to `shutdown_grace`.
    async fn drain(self) {
        drop(self.listener);
        let grace = self.proxy.config().shutdown_grace;
        let clients = self.proxy.stats.connected.load(Ordering::Acquire);
        tracing::info!(
            clients,
            "shutting down: no longer accepting; finishing in-flight requests"
        );
        self.proxy.shut_down();
        let deadline = tokio::time::Instant::now() + grace;
        while self.proxy.stats.connected.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                let left = self.proxy.stats.connected.load(Ordering::Acquire);
                tracing::warn!(
                    left,
                    "shutdown grace of {grace:?} over; closing remaining clients"
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tracing::info!("all clients finished");
    }
}

/// What a client refused for `max_clients`, or for want of file descriptors, is told.
const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

/// Tells a client past `max_clients` so, and closes.
async fn refuse(mut stream: impl tokio::io::AsyncWrite + Unpin) {
    let _ = stream.write_all(MAX_CLIENTS_REACHED).await;
    let _ = stream.shutdown().await;
}

/// One place under `max_clients`, given back when the session ends.
struct ClientSlot(Arc<Proxy>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.stats.connected.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs the proxy until SIGTERM or SIGINT: starts the worker threads (`workers`, or one per
/// two CPUs when 0; see [`crate::net::workers::wanted`]), binds on worker 0, which is the
/// calling thread, and serves. `bound` is called once the listener is bound, with the server, before it accepts.
pub fn serve(
    config: Config,
    source: Option<ConfigSource>,
    bound: impl FnOnce(&Server),
) -> Result<(), String> {
    let workers = crate::net::workers::wanted(config.workers);
    let (runtime, threads) = crate::net::workers::start(workers)
        .map_err(|e| format!("cannot start the worker threads: {e}"))?;
    tracing::info!(workers, "worker threads");
    let served = runtime.block_on(async {
        let listen = config.listen;
        let server = Server::bind(config, source)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        bound(&server);
        server.run(shutdown_signal()).await;
        Ok(())
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(threads);
    served
}
