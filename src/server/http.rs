//! The HTTP port (`metrics_listen`): `GET /metrics` in Prometheus' text format, and the
//! `/ready` and `/live` probes. The figures are the proxy's own atomics, copied into a
//! `metrics` recorder at each scrape (see [`crate::telemetry`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::Label;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::proxy::Proxy;
use crate::telemetry::names;
use crate::topology::Problem;

/// Metrics connections served at once.
const MAX_SCRAPERS: usize = 16;

/// Longest HTTP request head accepted on the metrics port.
const MAX_HEAD: usize = 8 * 1024;

/// Serves `GET /metrics`, `GET /ready` and `GET /live` on `listener` until the proxy shuts
/// down. One request per connection (`Connection: close`); anything else gets 404 or 405.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) {
    let mut shutdown = proxy.shutdown_notice();
    // A scraper or two is normal; many open connections are not, and file descriptors are
    // shared with the client listener: past this many, new ones are closed at once.
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let deadline = Instant::now() + Duration::from_secs(5);
            let head = tokio::time::timeout_at(deadline.into(), read_head(&mut stream)).await;
            let response = match head {
                Ok(Some(head)) => respond(&head, &proxy),
                _ => return,
            };
            let _ = tokio::time::timeout_at(deadline.into(), stream.write_all(&response)).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Reads up to the blank line ending an HTTP request head.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return None;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

/// Content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Content type of the probes' answers and the errors.
const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

fn respond(head: &[u8], proxy: &Proxy) -> Vec<u8> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            PROMETHEUS_TEXT,
            proxy.telemetry.render(|| publish(proxy)),
        ),
        (Some(b"GET"), Some(b"/ready")) => {
            let (status, body) = readiness(proxy);
            (status, PLAIN_TEXT, body)
        }
        // Answered by the task that serves this port: the process and its runtime run.
        (Some(b"GET"), Some(b"/live")) => ("200 OK", PLAIN_TEXT, "live\n".to_string()),
        (Some(b"GET"), _) => (
            "404 Not Found",
            PLAIN_TEXT,
            "not found: try /metrics, /ready or /live\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            PLAIN_TEXT,
            "only GET\n".to_string(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// `/ready`: 200 while every shard can serve requests (see [`crate::topology::Shard::unready`]),
/// else 503 with one line per shard that cannot, saying why.
fn readiness(proxy: &Proxy) -> (&'static str, String) {
    let topology = proxy.topology();
    let unready: Vec<String> = topology
        .shards
        .iter()
        .filter_map(|s| Some(format!("shard '{}': {}\n", s.name, s.unready()?)))
        .collect();
    let total = topology.shards.len();
    if unready.is_empty() {
        return (
            "200 OK",
            format!("ready: {total} of {total} shards serve\n"),
        );
    }
    let mut body = format!(
        "not ready: {} of {total} shards cannot serve\n",
        unready.len()
    );
    body.extend(unready);
    ("503 Service Unavailable", body)
}

/// Copies the proxy's atomics into the recorder.
fn publish(proxy: &Proxy) {
    let t = &proxy.telemetry;
    use metrics::{counter, gauge};
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    for (name, s) in t.all_commands() {
        counter!(names::COMMANDS, "cmd" => name).absolute(s.calls);
        counter!(names::COMMAND_ERRORS, "cmd" => name).absolute(s.failed);
    }
    let stats = &proxy.stats;
    gauge!(names::CLIENTS).set(stats.connected.load(Ordering::Relaxed) as f64);
    counter!(names::CLIENT_CONNECTIONS).absolute(n(&stats.connections));
    counter!(names::CLIENTS_REJECTED).absolute(n(&stats.rejected));
    counter!(names::NET_INPUT).absolute(t.net_input());
    counter!(names::NET_OUTPUT).absolute(t.net_output());
    counter!(names::RELOADS, "result" => "ok").absolute(n(&t.reloads_ok));
    counter!(names::RELOADS, "result" => "error").absolute(n(&t.reloads_failed));
    let topology = proxy.topology();
    for shard in &topology.shards {
        let name = shard.name.to_string();
        let view = shard.view();
        let by_shard = [Label::new("shard", name.clone())];
        counter!(names::FAILOVERS, by_shard.iter()).absolute(shard.failovers());
        gauge!(names::EPOCH, by_shard.iter()).set(view.epoch as f64);
        let problem = shard.problem();
        if problem != Problem::None {
            gauge!(names::SHARD_PROBLEM, "shard" => name.clone(), "problem" => problem.code())
                .set(1.0);
        }
        let l = &shard.lock_stats;
        counter!(names::LOCK_GRANTS, by_shard.iter()).absolute(n(&l.grants));
        for (reason, c) in [
            ("contended", &l.contended),
            ("frozen", &l.frozen),
            ("not_replicated", &l.not_replicated),
            ("stale_token", &l.stale),
        ] {
            counter!(names::LOCK_REJECTIONS, "shard" => name.clone(), "reason" => reason)
                .absolute(n(c));
        }
        for (j, node) in view.nodes().enumerate() {
            let by_node = [
                Label::new("shard", name.clone()),
                Label::new("node", node.addr.clone()),
            ];
            let s = node.pool.stats();
            counter!(names::BACKEND_REQUESTS, by_node.iter()).absolute(s.requests());
            counter!(names::BACKEND_ERRORS, by_node.iter()).absolute(s.errors());
            gauge!(names::BACKEND_CONNECTIONS, by_node.iter()).set(node.pool.open() as f64);
            gauge!(names::NODE_UP, by_node.iter()).set(if node.health.is_up() { 1.0 } else { 0.0 });
            gauge!(names::NODE_PRIMARY, by_node.iter()).set(if j == 0 { 1.0 } else { 0.0 });
        }
    }
}
