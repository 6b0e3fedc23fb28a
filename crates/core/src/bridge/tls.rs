//! TLS towards the remote broker (rustls, with the crypto provider of
//! [`crypto_provider`](crate::crypto_provider)).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, ServerName};

use crate::transport::tls::{certs, crypto_provider, read, TlsError};

/// How a bridge secures its connection: the CAs the remote broker's certificate must chain
/// to, and optionally a client certificate (Mosquitto's `bridge_cafile`, `bridge_certfile`,
/// `bridge_keyfile`).
#[derive(Clone)]
pub struct BridgeTls {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for BridgeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl BridgeTls {
    /// From a ready rustls client configuration.
    pub fn from_client_config(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            config,
            server_name: None,
        }
    }

    /// From PEM data: the CA certificates to trust, and a client certificate chain with its
    /// key for remotes that ask for one.
    pub fn from_pem(ca: &[u8], client: Option<(&[u8], &[u8])>) -> Result<Self, TlsError> {
        let provider = crypto_provider()?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(ca)? {
            roots.add(cert).map_err(TlsError::Rustls)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_root_certificates(roots);
        let config = match client {
            Some((chain, key)) => {
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|_| TlsError::Missing("private key"))?;
                builder
                    .with_client_auth_cert(certs(chain)?, key)
                    .map_err(TlsError::Rustls)?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Self::from_client_config(Arc::new(config)))
    }

    /// From PEM files (see [`BridgeTls::from_pem`]).
    pub fn from_pem_files(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        let ca = read(ca)?;
        match client {
            Some((chain, key)) => Self::from_pem(&ca, Some((&read(chain)?, &read(key)?))),
            None => Self::from_pem(&ca, None),
        }
    }

    /// The name the remote broker's certificate must carry, when it is not the host of the
    /// bridge's address (an IP address, say).
    pub fn server_name(mut self, name: &str) -> Result<Self, TlsError> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| TlsError::Missing("valid server name"))?;
        self.server_name = Some(name);
        Ok(self)
    }
}
