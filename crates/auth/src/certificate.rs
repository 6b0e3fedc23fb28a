//! Identity from a TLS client certificate (mutual TLS).
//!
//! The TLS listener verifies the client's certificate chain against its trust anchors before
//! the MQTT connection exists; this authenticator only turns the verified leaf certificate
//! into a user name, taken from the subject's Common Name or a Subject Alternative Name.

use async_trait::async_trait;
use roost_core::codec::ReasonCode;
use roost_core::plugin::{AuthOutcome, Authenticator, ConnectInfo, Identity};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Which certificate field names the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertificateName {
    /// The subject's Common Name (CN).
    #[default]
    CommonName,
    /// The first DNS name, e-mail address or URI in the Subject Alternative Name extension.
    SubjectAltName,
    /// The Common Name if there is one, else the first Subject Alternative Name.
    CommonNameOrSan,
}

/// Lets in clients that presented a (verified) TLS client certificate, as the user named by
/// the certificate. Clients without a certificate are deferred to the next authenticator;
/// a certificate without the chosen name is refused (Not authorized).
///
/// The user name in CONNECT, if any, is ignored: the certificate is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct CertificateIdentity {
    name: CertificateName,
}

impl CertificateIdentity {
    /// Names users by `name`.
    pub fn new(name: CertificateName) -> Self {
        Self { name }
    }

    /// The user name a DER certificate gives, if any.
    pub fn user_name(&self, der: &[u8]) -> Option<String> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let cn = || {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string)
        };
        let san = || {
            let ext = cert.subject_alternative_name().ok()??;
            ext.value.general_names.iter().find_map(|n| match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    Some(s.to_string())
                }
                _ => None,
            })
        };
        match self.name {
            CertificateName::CommonName => cn(),
            CertificateName::SubjectAltName => san(),
            CertificateName::CommonNameOrSan => cn().or_else(san),
        }
        .filter(|n| !n.is_empty())
    }
}

#[async_trait]
impl Authenticator for CertificateIdentity {
    async fn authenticate(&self, client: &ConnectInfo) -> AuthOutcome {
        let Some(leaf) = client.certificates.first() else {
            return AuthOutcome::Defer;
        };
        match self.user_name(leaf) {
            Some(name) => AuthOutcome::Allow(Identity::user(name), None),
            None => AuthOutcome::Deny(ReasonCode::NotAuthorized),
        }
    }
}

#[cfg(test)]
mod tests {

    use bytes::Bytes;
    use roost_core::codec::ProtocolVersion;

    use super::*;

    // Self-signed certificates made with openssl for these tests: CN=device-42 with SAN
    // DNS:device-42.example and email:ops@example.com; and one with only SAN
    // URI:spiffe://example/sensor/7.
    const CN_AND_SAN: &[u8] = include_bytes!("testdata/client-cn-san.der");
    const SAN_ONLY: &[u8] = include_bytes!("testdata/client-san-only.der");

    fn client(certs: Vec<Bytes>) -> ConnectInfo {
        ConnectInfo::new("c", ProtocolVersion::V311)
            .with_username("claimed")
            .with_listener("tls")
            .with_certificates(certs)
    }

    #[test]
    fn names_come_from_the_chosen_field() {
        let cn = CertificateIdentity::new(CertificateName::CommonName);
        let san = CertificateIdentity::new(CertificateName::SubjectAltName);
        let either = CertificateIdentity::new(CertificateName::CommonNameOrSan);
        assert_eq!(cn.user_name(CN_AND_SAN).as_deref(), Some("device-42"));
        assert_eq!(
            san.user_name(CN_AND_SAN).as_deref(),
            Some("device-42.example")
        );
        assert_eq!(cn.user_name(SAN_ONLY), None);
        assert_eq!(
            either.user_name(SAN_ONLY).as_deref(),
            Some("spiffe://example/sensor/7")
        );
        assert_eq!(cn.user_name(b"not a certificate"), None);
    }

    #[tokio::test]
    async fn authenticates_by_certificate_and_defers_without_one() {
        let auth = CertificateIdentity::default();
        let outcome = auth
            .authenticate(&client(vec![Bytes::from_static(CN_AND_SAN)]))
            .await;
        assert_eq!(
            outcome,
            AuthOutcome::Allow(Identity::user("device-42"), None)
        );
        assert_eq!(auth.authenticate(&client(vec![])).await, AuthOutcome::Defer);
        let outcome = auth
            .authenticate(&client(vec![Bytes::from_static(SAN_ONLY)]))
            .await;
        assert_eq!(outcome, AuthOutcome::Deny(ReasonCode::NotAuthorized));
    }
}
