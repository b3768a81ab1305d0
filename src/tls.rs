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
use tokio::io::{AsyncRead, AsyncWrite};
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
    bridge(tls).map_err(|e| format!("TLS bridge: {e}"))
}

/// Hands `tls` to a bridge task; returns the socket that carries its plaintext.
pub fn bridge<T>(tls: T) -> std::io::Result<UnixStream>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = UnixStream::pair()?;
    tokio::spawn(async move {
        let (mut tls, mut theirs) = (tls, theirs);
        // Ends when either side closes or fails; dropping both closes the other.
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut theirs).await;
    });
    Ok(ours)
}
