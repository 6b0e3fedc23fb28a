//! TLS for tests: a certificate authority made with rcgen, the broker's and a rumqttc
//! client's TLS configuration, and waits for a rumqttc CONNACK.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use roost::TlsConfig;
use rumqttc::{Event, Incoming, TlsConfiguration};

/// A test certificate authority.
pub struct Ca {
    pub pem: String,
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("self-signed").pem();
        Ca { pem, params, key }
    }

    /// A certificate (PEM) and key (PEM) for `sans`, with Common Name `cn`.
    pub fn issue(&self, sans: &[&str], cn: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

pub fn server_tls(ca: &Ca, client_ca: Option<&Ca>) -> Arc<TlsConfig> {
    let (cert, key) = ca.issue(&["127.0.0.1", "localhost"], "roost-test-server");
    TlsConfig::from_pem(
        cert.as_bytes(),
        key.as_bytes(),
        client_ca.map(|c| c.pem.as_bytes()),
    )
    .expect("tls config")
}

/// The client side of TLS, with the ring provider named explicitly: this test binary has
/// both of rustls's providers compiled in (see `both_crypto_providers_are_compiled_in_and_
/// none_is_installed`), so rustls cannot pick one by itself, and rumqttc's own
/// `TlsConfiguration::Simple` would panic.
pub fn client_tls(ca: &Ca, client_auth: Option<(String, String)>) -> TlsConfiguration {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let config = match client_auth {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate PEM");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    TlsConfiguration::Rustls(Arc::new(config))
}

/// Polls until CONNACK or an error.
pub async fn connected(el: &mut rumqttc::EventLoop) -> Result<(), String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => return Ok(()),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("timeout".into()),
        }
    }
}

/// Asserts the broker refused the connection: an error from the handshake, not a wait
/// that ran out (a broker that hung would otherwise pass as one that refused).
pub async fn refused(el: &mut rumqttc::EventLoop) {
    match connected(el).await {
        Ok(()) => panic!("connected"),
        Err(e) => assert_ne!(e, "timeout", "no answer instead of a refusal"),
    }
}
