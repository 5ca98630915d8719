//! TLS for both listeners (`wss://` and `https://`) with rustls, when the server is given a
//! certificate chain and a private key in PEM files.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::either::Either;

/// A connection as the server reads it: plain TCP, or TLS over TCP. The TLS state (over a
/// kilobyte) is boxed so that it is not part of every plain socket's task.
pub type Conn = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the two files was given.
    #[error("TLS needs both --tls-cert and --tls-key")]
    Incomplete,
    /// The certificate file could not be read or holds no certificate.
    #[error("cannot read certificates from {path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key file could not be read or holds no private key.
    #[error("cannot read a private key from {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (the key does not match, an unsupported algorithm).
    #[error("the certificate and key cannot be used: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS acceptor for the given PEM files, or `None` when neither is given.
pub fn acceptor(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<TlsAcceptor>, TlsError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err(TlsError::Incomplete),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    // The provider is named: with more than one compiled in, rustls would not pick one.
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, private)?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Wraps an accepted connection in TLS if the server has it; `None` if the client did not
/// finish the handshake within `timeout` (`--handshake-timeout-secs`) or sent something other
/// than TLS.
pub async fn wrap(stream: TcpStream, tls: Option<&TlsAcceptor>, timeout: Duration) -> Option<Conn> {
    match tls {
        None => Some(Either::Left(stream)),
        Some(acceptor) => {
            // Boxed: the handshake's state is large and short-lived.
            let accept = Box::pin(acceptor.accept(stream));
            match tokio::time::timeout(timeout, accept).await {
                Ok(Ok(s)) => Some(Either::Right(Box::new(s))),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => None,
            }
        }
    }
}
