//! TLS listeners (rustls): server certificates from PEM files or a ready `ServerConfig`,
//! optional client-certificate verification (mutual TLS), and reload without restart.
//!
//! The handshake runs in the connection's own task under `Limits::handshake_timeout`, so a
//! slow or silent client never holds up accepting others. A verified client certificate
//! chain reaches the authenticators as `ConnectInfo::certificates`
//! (see `roost_auth::CertificateIdentity`).
//!
//! # Crypto provider
//! Configurations built here name their rustls crypto provider explicitly, never relying
//! on rustls's process-wide default (which panics when both of rustls's providers are
//! compiled in and none was installed): the one the `tls-aws-lc` or `tls-ring` feature
//! builds in (aws-lc-rs if both), else the process default the application installed, else
//! [`TlsError::NoCryptoProvider`]. [`TlsConfig::from_pem_with_provider`] takes any other.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use thiserror::Error;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why a TLS configuration could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM data holds no certificate, or no private key.
    #[error("no {0} found in the PEM data")]
    Missing(&'static str),
    /// rustls refused the certificates or key.
    #[error("invalid TLS configuration")]
    Rustls(#[source] rustls::Error),
    /// The client CA certificates cannot verify clients.
    #[error("invalid client CA certificates")]
    ClientCa(#[source] rustls::server::VerifierBuilderError),
    /// No crypto provider: neither `tls-ring` nor `tls-aws-lc` is enabled and the
    /// application installed no process default (`CryptoProvider::install_default`).
    #[error(
        "no TLS crypto provider: enable roost's tls-ring or tls-aws-lc feature, or install one"
    )]
    NoCryptoProvider,
}

/// The crypto provider that configurations built from PEM use (see the module docs).
pub fn crypto_provider() -> Result<Arc<rustls::crypto::CryptoProvider>, TlsError> {
    #[cfg(feature = "tls-aws-lc")]
    return Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    #[cfg(all(feature = "tls-ring", not(feature = "tls-aws-lc")))]
    return Ok(Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(not(any(feature = "tls-ring", feature = "tls-aws-lc")))]
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .ok_or(TlsError::NoCryptoProvider)
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Missing("certificate"));
    }
    Ok(certs)
}

/// A TLS listener's configuration, replaceable while the broker runs: new connections use
/// the newest configuration, open ones keep theirs.
pub struct TlsConfig {
    acceptor: RwLock<TlsAcceptor>,
    /// The provider PEM reloads build with (the one the first configuration used).
    provider: Option<Arc<rustls::crypto::CryptoProvider>>,
    /// Built with a client CA (mutual TLS); see [`TlsConfig::asks_client_certificates`].
    client_ca: bool,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// From a ready rustls configuration.
    ///
    /// The broker cannot see the client-certificate verifier of a configuration of your own,
    /// so such a listener does not turn anonymous access off by itself; choose
    /// [`AnonymousAccess`](crate::AnonymousAccess) explicitly.
    pub fn from_server_config(config: Arc<rustls::ServerConfig>) -> Arc<Self> {
        Arc::new(Self {
            acceptor: RwLock::new(TlsAcceptor::from(config)),
            provider: None,
            client_ca: false,
        })
    }

    /// From PEM data: the certificate chain (leaf first), its private key, and, for mutual
    /// TLS, the CA certificates client certificates must chain to (clients without a valid
    /// certificate are then refused during the handshake).
    pub fn from_pem(
        cert_chain: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<Arc<Self>, TlsError> {
        Self::from_pem_with_provider(cert_chain, key, client_ca, crypto_provider()?)
    }

    /// As [`TlsConfig::from_pem`], with the given crypto provider (a FIPS one, say).
    pub fn from_pem_with_provider(
        cert_chain: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Arc<Self>, TlsError> {
        let config = server_config(cert_chain, key, client_ca, &provider)?;
        Ok(Arc::new(Self {
            acceptor: RwLock::new(TlsAcceptor::from(Arc::new(config))),
            provider: Some(provider),
            client_ca: client_ca.is_some(),
        }))
    }

    /// True if it was built from PEM with a client CA (mutual TLS). Such a listener turns
    /// [`AnonymousAccess::Auto`](crate::AnonymousAccess::Auto) off.
    pub fn asks_client_certificates(&self) -> bool {
        self.client_ca
    }

    /// From PEM files (see [`TlsConfig::from_pem`]).
    pub fn from_pem_files(
        cert_chain: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Arc<Self>, TlsError> {
        let ca = client_ca.map(read).transpose()?;
        Self::from_pem(&read(cert_chain)?, &read(key)?, ca.as_deref())
    }

    /// Replaces the configuration (certificate renewal): connections accepted from now on
    /// use it; open connections are not touched.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.acceptor.write() = TlsAcceptor::from(config);
    }

    /// Re-reads PEM files and replaces the configuration. On error the old one stays.
    pub fn reload_pem_files(
        &self,
        cert_chain: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<(), TlsError> {
        let ca = client_ca.map(read).transpose()?;
        let provider = match &self.provider {
            Some(p) => Arc::clone(p),
            None => crypto_provider()?,
        };
        let config = server_config(&read(cert_chain)?, &read(key)?, ca.as_deref(), &provider)?;
        self.replace(Arc::new(config));
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().clone()
    }
}

fn server_config(
    cert_chain: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certs(cert_chain)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsError::Missing("private key"))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?;
    let builder = match client_ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certs(pem)? {
                roots.add(ca).map_err(TlsError::Rustls)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(provider),
            )
            .build()
            .map_err(TlsError::ClientCa)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Rustls)
}
