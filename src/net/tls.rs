//! TLS with rustls, for clients (a listener of its own) and for backend nodes.
//!
//! The session and backend connection loops work on readiness (`try_read` when the socket is
//! readable), which a TLS stream does not offer. So TLS ends in a small bridge task: it holds
//! the TLS stream and one end of a Unix socket pair, copying both ways, and the loops get the
//! other end, a socket like any other. Backpressure carries through: a loop that stops reading
//! fills the pair's buffer, the bridge stops reading the TLS stream, and TCP slows the peer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// The provider every config uses (ring: no C toolchain beyond a C compiler).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The acceptor for the client TLS listener: `cert` (PEM chain) and `key` (PEM private key).
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls.cert {}: no certificate in it", cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls: the certificate and key do not make a pair: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Client configs by CA file, read once.
fn client_configs() -> &'static Mutex<HashMap<PathBuf, Arc<rustls::ClientConfig>>> {
    static CONFIGS: OnceLock<Mutex<HashMap<PathBuf, Arc<rustls::ClientConfig>>>> = OnceLock::new();
    CONFIGS.get_or_init(Default::default)
}

/// The client config that trusts the certificates in `ca` (PEM) to sign the nodes'.
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut configs = client_configs().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = configs.get(ca) {
        return Ok(c.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("backend.tls_ca {}: {e}", ca.display()))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("backend.tls_ca {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "backend.tls_ca {}: no certificate in it",
            ca.display()
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let config = Arc::new(config);
    configs.insert(ca.to_path_buf(), config.clone());
    Ok(config)
}

/// Opens TLS over `tcp` to the node at `addr` (`host:port`), verifying its certificate for
/// `server_name` (default: the host), within `timeout`; returns the bridged socket.
pub async fn connect(
    tcp: TcpStream,
    addr: &str,
    ca: &Path,
    server_name: Option<&str>,
    timeout: Duration,
) -> Result<UnixStream, String> {
    let config = client_config(ca)?;
    let host = server_name.unwrap_or_else(|| addr.rsplit_once(':').map_or(addr, |(h, _)| h));
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("TLS server name {host:?}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| format!("TLS handshake timed out after {} ms", timeout.as_millis()))?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    bridge(tls, ()).map_err(|e| format!("TLS bridge: {e}"))
}

/// After the proxy's side of a bridge ends, how long the peer's side may still take (its
/// close_notify, or bytes it still sends) before the bridge drops the connection.
const DRAIN: Duration = Duration::from_secs(1);

/// Hands `tls` to a bridge task; returns the socket that carries its plaintext. `guard` lives
/// as long as the bridge (a client's place under `max_clients`: the connection, with its
/// file descriptors, is the bridge, and it may outlive the session by the time it takes to
/// deliver the last replies).
pub fn bridge<T>(tls: T, guard: impl Send + 'static) -> std::io::Result<UnixStream>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = {
        let _open = super::fds::opening();
        UnixStream::pair()?
    };
    tokio::spawn(async move {
        let _guard = guard;
        let (mut tls_read, mut tls_write) = tokio::io::split(tls);
        let (mut pair_read, mut pair_write) = theirs.into_split();
        // Peer to proxy; at the peer's end of stream the proxy's side sees it too.
        let inbound = async {
            let _ = tokio::io::copy(&mut tls_read, &mut pair_write).await;
            let _ = pair_write.shutdown().await;
        };
        // Proxy to peer: everything the proxy wrote, then close_notify.
        let outbound = async {
            let _ = tokio::io::copy(&mut pair_read, &mut tls_write).await;
            let _ = tokio::time::timeout(DRAIN, tls_write.shutdown()).await;
        };
        tokio::pin!(inbound, outbound);
        tokio::select! {
            // The proxy is done with the connection (its replies are out): the peer gets a
            // bounded time to finish, not forever.
            () = &mut outbound => {
                let _ = tokio::time::timeout(DRAIN, &mut inbound).await;
            }
            // The peer is done sending: the proxy answers what it was sent and closes (the
            // session ends on its own), so this side runs to its end.
            () = &mut inbound => outbound.await,
        }
    });
    Ok(ours)
}
