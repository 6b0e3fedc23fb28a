//! Several listeners at once, each with its own name, connection cap, packet size limit and
//! authentication rule: a password is required on the "public" listener, not on "local".

mod support;

use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::Bytes;
use roost::codec::{Connect, Packet, ProtocolVersion, PublishQoS, ReasonCode};
use roost::plugin::{AuthOutcome, Authenticator, ConnectInfo, Identity};
use roost::{Broker, BrokerHandle};
use support::*;
use tokio::net::TcpStream;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Anonymous clients are welcome on "local"; "public" wants alice's password.
struct PerListener;

#[async_trait]
impl Authenticator for PerListener {
    async fn authenticate(&self, client: &ConnectInfo) -> AuthOutcome {
        match (&*client.listener, client.username.as_deref()) {
            ("local", _) => AuthOutcome::Allow(Identity::user("local"), None),
            ("public", Some("alice")) if client.password.as_deref() == Some(b"secret") => {
                AuthOutcome::Allow(Identity::user("alice"), None)
            }
            ("public", _) => AuthOutcome::Deny(ReasonCode::BadUserNameOrPassword),
            _ => AuthOutcome::Deny(ReasonCode::NotAuthorized),
        }
    }
}

async fn two_listeners() -> BrokerHandle {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    Broker::builder()
        .listen(any)
        .listener_name("local")
        .listen(any)
        .listener_name("public")
        .listener_max_connections(2)
        .listener_max_packet_size(256)
        .authenticator(std::sync::Arc::new(PerListener))
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts")
}

async fn connect_to(addr: SocketAddr, connect: Connect) -> (Raw, Option<Packet>) {
    let stream = within(TcpStream::connect(addr)).await.expect("connects");
    let mut raw = Raw {
        stream,
        buf: Default::default(),
        version: V5,
    };
    raw.send(Packet::Connect(Box::new(connect))).await;
    let ack = raw.recv().await;
    (raw, ack)
}

fn reason(ack: Option<Packet>) -> ReasonCode {
    connack(ack.expect("CONNACK before close")).reason_code
}

fn alice(id: &str) -> Connect {
    let mut c = Connect::new(V5, id);
    c.username = Some("alice".into());
    c.password = Some(Bytes::from_static(b"secret"));
    c
}

#[tokio::test]
async fn each_listener_has_its_own_authentication() {
    let broker = two_listeners().await;
    let [local, public] = broker.local_addrs()[..] else {
        panic!("two listeners")
    };
    let (_a, ack) = connect_to(local, Connect::new(V5, "anon-local")).await;
    assert_eq!(reason(ack), ReasonCode::Success);
    let (_b, ack) = connect_to(public, Connect::new(V5, "anon-public")).await;
    assert_eq!(reason(ack), ReasonCode::BadUserNameOrPassword);
    let (_c, ack) = connect_to(public, alice("alice-public")).await;
    assert_eq!(reason(ack), ReasonCode::Success);
    broker.shutdown().await;
}

#[tokio::test]
async fn listener_connection_cap_leaves_other_listeners_alone() {
    let broker = two_listeners().await;
    let [local, public] = broker.local_addrs()[..] else {
        panic!("two listeners")
    };
    let (p1, ack) = connect_to(public, alice("p1")).await;
    assert_eq!(reason(ack), ReasonCode::Success);
    let (_p2, ack) = connect_to(public, alice("p2")).await;
    assert_eq!(reason(ack), ReasonCode::Success);
    // The third connection on "public" is refused once authenticated: 0x89 Server busy.
    let (mut p3, ack) = connect_to(public, alice("p3")).await;
    assert_eq!(reason(ack), ReasonCode::ServerBusy, "over the cap");
    assert!(p3.closed_promptly().await.is_empty());
    // "local" has no cap of its own.
    let mut locals = Vec::new();
    for i in 0..5 {
        let (raw, ack) = connect_to(local, Connect::new(V5, format!("l{i}"))).await;
        assert_eq!(reason(ack), ReasonCode::Success);
        locals.push(raw);
    }
    // A slot frees when a "public" client leaves.
    drop(p1);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_p4, ack) = connect_to(public, alice("p4")).await;
        if let Some(ack) = ack {
            assert_eq!(reason(Some(ack)), ReasonCode::Success);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(broker.metrics().connections_refused >= 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn listener_packet_size_limit() {
    let broker = two_listeners().await;
    let [local, public] = broker.local_addrs()[..] else {
        panic!("two listeners")
    };
    static BIG: [u8; 1000] = [7u8; 1000];
    // "public" advertises its own limit (CONNACK Maximum Packet Size, section 3.2.2.3.6) and enforces it.
    let (mut p, ack) = connect_to(public, alice("p")).await;
    match ack {
        Some(Packet::ConnAck(a)) => {
            assert_eq!(a.properties.maximum_packet_size.map(|m| m.get()), Some(256));
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    p.publish("t/big", &BIG, PublishQoS::AtMostOnce, false)
        .await;
    let seen = p.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PacketTooLarge),
        "{seen:?}"
    );
    // "local" keeps the broker-wide limit.
    let (mut l, ack) = connect_to(local, Connect::new(V5, "l")).await;
    assert_eq!(reason(ack), ReasonCode::Success);
    l.publish("t/big", &BIG, PublishQoS::AtMostOnce, false)
        .await;
    assert!(l.ping().await.is_empty(), "still connected");
    broker.shutdown().await;
}
