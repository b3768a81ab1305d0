//! The `[tls]` section: a second listener, for clients speaking TLS.

use std::net::SocketAddr;

use super::check::{invalid, listen_addr};
use super::raw::RawTls;
use super::ConfigError;

/// TLS for clients: where, and with which certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub listen: SocketAddr,
    /// PEM certificate chain, server certificate first.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
}

impl RawTls {
    /// The address must parse, and the certificate and key must load together.
    pub(super) fn validate(self) -> Result<TlsSettings, ConfigError> {
        let listen = listen_addr("tls.listen", &self.listen)?;
        crate::net::tls::acceptor(&self.cert, &self.key).map_err(|e| invalid("tls", e))?;
        Ok(TlsSettings {
            listen,
            cert: self.cert,
            key: self.key,
        })
    }
}
