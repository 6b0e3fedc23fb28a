//! Authentication: plain username/password through the Authenticator trait, and v5
//! enhanced authentication (the AUTH exchange, v5 §4.12) with a challenge-response method
//! written here, including re-authentication (§4.12.1) and plugin failures.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use roost::codec::{Auth, AuthProperties, Connect, Packet, ProtocolVersion, ReasonCode};
use roost::plugin::{
    AuthExchange, AuthOutcome, Authenticator, ConnectInfo, Identity, PluginSettings,
};
use roost::{Broker, BrokerHandle};
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const METHOD: &str = "x-challenge";
const SECRET: &[u8] = b"swordfish";

/// Challenge-response: the client names itself, the server sends a nonce, the client
/// answers nonce ++ secret reversed. The nonce lives in the exchange's state.
struct Challenge;

fn answer(nonce: &[u8]) -> Bytes {
    let mut v: Vec<u8> = nonce.iter().chain(SECRET).copied().collect();
    v.reverse();
    Bytes::from(v)
}

#[async_trait]
impl Authenticator for Challenge {
    async fn authenticate(&self, client: &ConnectInfo) -> AuthOutcome {
        match (client.username.as_deref(), client.password.as_deref()) {
            (Some("alice"), Some(b"wonderland")) => {
                AuthOutcome::Allow(Identity::user("alice"), None)
            }
            (Some("alice"), _) => AuthOutcome::Deny(ReasonCode::BadUserNameOrPassword),
            (Some("mallory"), _) => AuthOutcome::Deny(ReasonCode::NotAuthorized),
            _ => AuthOutcome::Defer,
        }
    }

    async fn authenticate_enhanced(&self, exchange: &mut AuthExchange<'_>) -> AuthOutcome {
        if &**exchange.method != METHOD {
            return AuthOutcome::Defer;
        }
        match exchange.state.take() {
            None => {
                let nonce = if exchange.reauthenticating {
                    b"n-2".to_vec()
                } else {
                    b"n-1".to_vec()
                };
                *exchange.state = Some(Box::new(nonce.clone()));
                AuthOutcome::Continue(Some(Bytes::from(nonce)))
            }
            Some(state) => {
                let nonce = state.downcast::<Vec<u8>>().map(|b| *b).unwrap_or_default();
                if exchange.data.as_deref() == Some(&answer(&nonce)[..]) {
                    AuthOutcome::Allow(
                        Identity::user("challenged"),
                        Some(Bytes::from_static(b"welcome")),
                    )
                } else {
                    AuthOutcome::Deny(ReasonCode::NotAuthorized)
                }
            }
        }
    }
}

/// An authenticator with a bug.
struct Panics;

#[async_trait]
impl Authenticator for Panics {
    async fn authenticate(&self, _client: &ConnectInfo) -> AuthOutcome {
        panic!("authenticator bug");
    }
}

/// An authenticator that never answers.
struct Hangs;

#[async_trait]
impl Authenticator for Hangs {
    async fn authenticate(&self, _client: &ConnectInfo) -> AuthOutcome {
        std::future::pending().await
    }
}

async fn broker_with(auth: Arc<dyn Authenticator>) -> BrokerHandle {
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .authenticator(auth)
        .plugin_settings(PluginSettings::default().with_timeout(Duration::from_millis(200)))
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts")
}

fn login(v: ProtocolVersion, user: &str, pass: &'static [u8]) -> Connect {
    let mut c = Connect::new(v, "login");
    c.username = Some(user.into());
    c.password = Some(Bytes::from_static(pass));
    c
}

fn auth_packet(code: ReasonCode, data: Option<Bytes>) -> Packet {
    Packet::Auth(Auth {
        reason_code: code,
        properties: AuthProperties {
            authentication_method: Some(METHOD.into()),
            authentication_data: data,
            ..AuthProperties::default()
        },
    })
}

#[tokio::test]
async fn plain_authentication_accepts_and_refuses_with_the_right_codes() {
    // MQTT-4.12.0-6: without an Authentication Method in CONNECT, the server sends no AUTH (the
    // CONNACK comes first).
    let broker = broker_with(Arc::new(Challenge)).await;
    let (_ok, ack) = Raw::connect_with(&broker, login(V4, "alice", b"wonderland")).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::Success);
    // 3.1.1: 0x04 bad user name or password, 0x05 not authorized (on the wire).
    for (user, pass, code) in [
        ("alice", &b"wrong"[..], ReasonCode::BadUserNameOrPassword),
        ("mallory", b"x", ReasonCode::NotAuthorized),
        // Every authenticator deferred: refused like a wrong password (no user enumeration).
        ("nobody", b"x", ReasonCode::BadUserNameOrPassword),
    ] {
        let (mut raw, ack) = Raw::connect_with(&broker, login(V4, user, pass)).await;
        assert_eq!(connack(ack).reason_code, code, "{user}");
        assert!(raw.closed_promptly().await.is_empty());
        // v5: 0x86 / 0x87.
        let (_raw, ack) = Raw::connect_with(&broker, login(V5, user, pass)).await;
        assert_eq!(connack(ack).reason_code, code, "{user} (v5)");
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn enhanced_authentication_challenge_response() {
    // MQTT-4.12.0-2: AUTH 0x18 to ask for more; MQTT-4.12.0-5: every AUTH and the CONNACK carry
    // the Authentication Method; MQTT-3.15.2-1: AUTH codes from the list; MQTT-4.12.1-2: a failed
    // re-authentication ends with DISCONNECT and its code; MQTT-3.14.4-1 / -2: nothing after it.
    let broker = broker_with(Arc::new(Challenge)).await;
    let mut c = Connect::new(V5, "enh");
    c.properties.authentication_method = Some(METHOD.into());
    c.properties.authentication_data = Some(Bytes::from_static(b"hello"));
    let (mut raw, first) = Raw::connect_with(&broker, c).await;
    // The server continues with AUTH 0x18 carrying the nonce.
    let nonce = match first {
        Packet::Auth(a) => {
            assert_eq!(a.reason_code, ReasonCode::ContinueAuthentication);
            assert_eq!(a.properties.authentication_method.as_deref(), Some(METHOD));
            a.properties.authentication_data.expect("nonce")
        }
        other => panic!("expected AUTH, got {other:?}"),
    };
    raw.send(auth_packet(
        ReasonCode::ContinueAuthentication,
        Some(answer(&nonce)),
    ))
    .await;
    let ack = connack(raw.recv().await.expect("CONNACK"));
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert_eq!(
        ack.properties.authentication_method.as_deref(),
        Some(METHOD)
    );
    assert_eq!(
        ack.properties.authentication_data,
        Some(Bytes::from_static(b"welcome"))
    );

    // Re-authentication: AUTH 0x19 → AUTH 0x18 → AUTH 0x18 → AUTH 0x00.
    raw.send(auth_packet(ReasonCode::ReAuthenticate, None))
        .await;
    let nonce = match raw.recv().await {
        Some(Packet::Auth(a)) if a.reason_code == ReasonCode::ContinueAuthentication => {
            a.properties.authentication_data.expect("nonce")
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    };
    assert_eq!(&nonce[..], b"n-2");
    raw.send(auth_packet(
        ReasonCode::ContinueAuthentication,
        Some(answer(&nonce)),
    ))
    .await;
    match raw.recv().await {
        Some(Packet::Auth(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    // A failed re-authentication ends the connection with the refusal code.
    raw.send(auth_packet(ReasonCode::ReAuthenticate, None))
        .await;
    assert!(matches!(raw.recv().await, Some(Packet::Auth(_))));
    raw.send(auth_packet(
        ReasonCode::ContinueAuthentication,
        Some(Bytes::from_static(b"bad")),
    ))
    .await;
    let seen = raw.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::NotAuthorized),
        "{seen:?}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn wrong_challenge_answer_and_unknown_method_are_refused() {
    // MQTT-4.12.0-4: the server refuses with a CONNACK of 0x80 or more; MQTT-4.12.0-1: 0x8C for
    // a method it does not support.
    let broker = broker_with(Arc::new(Challenge)).await;
    let mut c = Connect::new(V5, "enh");
    c.properties.authentication_method = Some(METHOD.into());
    let (mut raw, first) = Raw::connect_with(&broker, c).await;
    assert!(matches!(first, Packet::Auth(_)));
    raw.send(auth_packet(
        ReasonCode::ContinueAuthentication,
        Some(Bytes::from_static(b"guess")),
    ))
    .await;
    assert_eq!(
        connack(raw.recv().await.expect("CONNACK")).reason_code,
        ReasonCode::NotAuthorized
    );
    // A method nobody implements: 0x8C.
    let mut c = Connect::new(V5, "enh2");
    c.properties.authentication_method = Some("SCRAM-SHA-512".into());
    let (_raw, ack) = Raw::connect_with(&broker, c).await;
    assert_eq!(
        connack(ack).reason_code,
        ReasonCode::BadAuthenticationMethod
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn auth_without_enhanced_authentication_is_a_protocol_error() {
    let broker = start_broker().await;
    let mut raw = Raw::connect(&broker, V5, "plain").await;
    raw.send(auth_packet(ReasonCode::ReAuthenticate, None))
        .await;
    let seen = raw.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn failing_authenticators_fail_closed_and_are_counted() {
    for auth in [Arc::new(Panics) as Arc<dyn Authenticator>, Arc::new(Hangs)] {
        let broker = broker_with(auth).await;
        let (mut raw, ack) = Raw::connect_with(&broker, login(V5, "any", b"x")).await;
        assert_eq!(connack(ack).reason_code, ReasonCode::NotAuthorized);
        assert!(raw.closed_promptly().await.is_empty());
        assert_eq!(broker.metrics().plugin_failures, 1);
        // The broker keeps serving.
        let (_raw, ack) = Raw::connect_with(&broker, login(V4, "other", b"y")).await;
        assert_eq!(connack(ack).reason_code, ReasonCode::NotAuthorized);
        broker.shutdown().await;
    }
}
