//! The trust boundary (issue 12 §1): authorization holds on every path a message can take —
//! sessions restored after a restart, client-id takeovers by another identity, anonymous
//! access, `$SYS` topics, wills published after the rules changed, shared subscriptions —
//! with real clients over loopback and real sled files.

mod support;

use std::sync::Arc;

use roost::auth::{AclFile, AclRules, StaticUsers};
use roost::codec::{Connect, LastWill, Packet, ProtocolVersion, PublishQoS, ReasonCode};
use roost::plugin::{Authenticator, Authorizer};
use roost::storage::{OnCorrupt, SledStorage, Storage};
use roost::{
    AnonymousAccess, Broker, BrokerBuilder, BrokerHandle, Durability, QoS, SessionOwnership,
};
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

const ACL: &str = "\
user alice
topic read public/#
topic readwrite alice/#
topic readwrite jobs/#
user bob
topic readwrite bob/#
topic write public/#
topic write jobs/#
topic read jobs/public/#
";

fn users() -> Arc<dyn Authenticator> {
    Arc::new(
        StaticUsers::new()
            .with_user("alice", "a-pass")
            .and_then(|u| u.with_user("bob", "b-pass"))
            .expect("hashes"),
    )
}

fn acl(text: &str) -> Arc<dyn Authorizer> {
    Arc::new(AclFile::from_rules(AclRules::parse(text).expect("parses")))
}

fn builder() -> BrokerBuilder {
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .authenticator(users())
        .authorizer(acl(ACL))
        .sys_interval(None)
}

async fn start(b: BrokerBuilder) -> BrokerHandle {
    b.build().start().await.expect("starts")
}

fn connect(v: ProtocolVersion, id: &str, user: &str, pass: &str, persistent: bool) -> Connect {
    let mut c = Connect::new(v, id);
    c.username = Some(user.into());
    c.password = Some(bytes::Bytes::from(pass.to_string()));
    c.clean_start = !persistent;
    if persistent && v.is_v5() {
        c.properties.session_expiry_interval = Some(3600);
    }
    c
}

async fn login(
    broker: &BrokerHandle,
    v: ProtocolVersion,
    id: &str,
    user: &str,
    persistent: bool,
) -> (Raw, bool) {
    let pass = if user == "alice" { "a-pass" } else { "b-pass" };
    let (raw, ack) = Raw::connect_with(broker, connect(v, id, user, pass, persistent)).await;
    let ack = connack(ack);
    assert_eq!(ack.reason_code, ReasonCode::Success, "{user} refused");
    (raw, ack.session_present)
}

/// Publishes at QoS 1 and waits for the PUBACK.
async fn publish1(c: &mut Raw, topic: &str, payload: &'static [u8], id: u16) -> ReasonCode {
    c.publish(topic, payload, PublishQoS::AtLeastOnce(pid(id)), false)
        .await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => a.reason_code,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

fn will(t: &str) -> LastWill {
    LastWill {
        topic: topic(t),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    }
}

fn sled(dir: &TempDir) -> Arc<dyn Storage> {
    Arc::new(SledStorage::open(&dir.0, OnCorrupt::Fail).expect("opens"))
}

/// Issue 12 §1.1: a session rebuilt from storage is authorized as the client that made it.
/// alice may read `public/#` and `alice/#`; her persistent `#` subscription must not bring
/// her bob's topics after a restart.
#[tokio::test]
async fn a_restored_session_receives_only_what_its_owner_may_read() {
    let dir = TempDir::new("restore");
    let broker = start(builder().storage(sled(&dir), Durability::Acked)).await;
    let (mut alice, _) = login(&broker, V5, "alice-dev", "alice", true).await;
    assert_eq!(
        alice.subscribe(1, "#", QoS::AtLeastOnce).await,
        alice_suback_ok()
    );
    drop(alice);
    broker.shutdown().await;

    let broker = start(builder().storage(sled(&dir), Durability::Acked)).await;
    let (mut bob, _) = login(&broker, V5, "bob-dev", "bob", false).await;
    assert_eq!(
        publish1(&mut bob, "bob/secret", b"s", 1).await,
        ReasonCode::NoMatchingSubscribers
    );
    assert_eq!(
        publish1(&mut bob, "public/news", b"n", 2).await,
        ReasonCode::Success
    );
    let (mut alice, present) = login(&broker, V5, "alice-dev", "alice", true).await;
    assert!(present, "the session was restored");
    assert_eq!(alice.drain_topics().await, vec!["public/news"]);
    broker.shutdown().await;
}

fn alice_suback_ok() -> Packet {
    Packet::SubAck(roost::codec::SubAck {
        packet_id: pid(1),
        properties: Default::default(),
        reason_codes: vec![ReasonCode::GrantedQoS1],
    })
}

/// Issue 12 §1.1: messages queued while the client was away are checked again when they
/// are sent, so an ACL change reaches what is already queued, offline sessions included.
#[tokio::test]
async fn queued_messages_are_checked_again_when_sent() {
    let broker = start(builder()).await;
    let (mut alice, _) = login(&broker, V4, "alice-q", "alice", true).await;
    alice.subscribe(1, "alice/#", QoS::AtLeastOnce).await;
    drop(alice);
    // The queued message comes from alice's second device (nobody else may write there).
    let (mut alice2, _) = login(&broker, V4, "alice-2", "alice", false).await;
    alice2
        .publish("alice/inbox", b"x", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    alice2.ack_publish(PublishQoS::AtLeastOnce(pid(1))).await;
    // The rules change while the message waits: alice may no longer read alice/inbox.
    let stricter = ACL.replace(
        "topic readwrite alice/#",
        "topic readwrite alice/#\ntopic deny alice/inbox",
    );
    broker.set_authorizers(vec![acl(&stricter)], false).await;
    let (mut alice, present) = login(&broker, V4, "alice-q", "alice", true).await;
    assert!(present);
    assert!(alice.drain_topics().await.is_empty(), "withdrawn");
    assert_eq!(broker.metrics().messages_denied_on_send, 1);
    broker.shutdown().await;
}

/// Issue 12 §1.2: bob connecting with alice's client id and Clean Start 0 does not get her
/// session or what is queued in it (default policy: her session is discarded).
#[tokio::test]
async fn another_identity_never_resumes_a_session() {
    for v in [V4, V5] {
        let broker = start(builder()).await;
        let (mut alice, _) = login(&broker, v, "inbox", "alice", true).await;
        alice.subscribe(1, "alice/#", QoS::AtLeastOnce).await;
        drop(alice);
        let (mut alice2, _) = login(&broker, v, "alice-phone", "alice", false).await;
        assert_eq!(
            publish1(&mut alice2, "alice/inbox-queued", b"private", 1).await,
            ReasonCode::Success
        );
        let (mut bob, present) = login(&broker, v, "inbox", "bob", true).await;
        assert!(!present, "{v:?}: Session Present 0 for another identity");
        assert!(
            bob.drain_topics().await.is_empty(),
            "{v:?}: nothing of alice's"
        );
        assert_eq!(broker.metrics().sessions_ownership_discarded, 1);
        // alice's session is gone: she starts afresh too.
        drop(bob);
        let (_alice, present) = login(&broker, v, "inbox", "alice", true).await;
        assert!(!present, "{v:?}");
        broker.shutdown().await;
    }
}

/// Issue 12 §1.2, the other policy: the CONNECT is refused (0x87; 3.1.1 0x05) and the
/// owner's session, queue included, is left alone.
#[tokio::test]
async fn refuse_policy_refuses_another_identity() {
    for v in [V4, V5] {
        let broker = start(builder().session_ownership(SessionOwnership::Refuse)).await;
        let (mut alice, _) = login(&broker, v, "inbox", "alice", true).await;
        alice.subscribe(1, "alice/#", QoS::AtLeastOnce).await;
        drop(alice);
        let (mut alice2, _) = login(&broker, v, "alice-phone", "alice", false).await;
        publish1(&mut alice2, "alice/inbox-queued", b"private", 1).await;
        let (mut bob, ack) =
            Raw::connect_with(&broker, connect(v, "inbox", "bob", "b-pass", true)).await;
        let ack = connack(ack);
        assert_eq!(ack.reason_code, ReasonCode::NotAuthorized, "{v:?}");
        assert!(!ack.session_present);
        assert!(bob.closed_promptly().await.is_empty());
        let (mut alice, present) = login(&broker, v, "inbox", "alice", true).await;
        assert!(present, "{v:?}: the owner's session is intact");
        assert_eq!(alice.drain_topics().await, vec!["alice/inbox-queued"]);
        assert_eq!(broker.metrics().sessions_ownership_refused, 1);
        broker.shutdown().await;
    }
}

/// Issue 12 §1.3: registering an authenticator turns anonymous access off unless it is
/// explicitly allowed; explicitly allowed, anonymous clients get in beside the users.
#[tokio::test]
async fn anonymous_access_is_off_beside_authenticators() {
    let broker = start(builder()).await;
    let (_c, ack) = Raw::connect_with(&broker, Connect::new(V5, "anon")).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::NotAuthorized);
    broker.shutdown().await;

    let broker = start(builder().allow_anonymous(AnonymousAccess::Allow)).await;
    let (_c, ack) = Raw::connect_with(&broker, Connect::new(V5, "anon")).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::Success);
    // A wrong password is still refused.
    let (_c, ack) = Raw::connect_with(&broker, connect(V5, "x", "alice", "wrong", false)).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::BadUserNameOrPassword);
    broker.shutdown().await;
}

/// Issue 12 §1.3: with no authenticator, a broker behind the PROXY protocol (clients from
/// anywhere) refuses anonymous clients by default.
#[tokio::test]
async fn anonymous_access_is_off_behind_a_proxy() {
    let broker = start(
        Broker::builder()
            .listen("127.0.0.1:0".parse().expect("address"))
            .proxy_protocol(true)
            .sys_interval(None),
    )
    .await;
    let mut raw = Raw::open(&broker, V4).await;
    raw.send_bytes(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 1883\r\n")
        .await;
    raw.send(Packet::Connect(Box::new(Connect::new(V4, "remote"))))
        .await;
    let ack = connack(raw.recv().await.expect("CONNACK"));
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
    broker.shutdown().await;
    // The same broker on loopback without PROXY lets anonymous clients in.
    let open = start_broker().await;
    Raw::connect(&open, V4, "local").await;
    open.shutdown().await;
}

/// Issue 12 §1.5: clients cannot publish to `$SYS/...` without an authorizer's explicit
/// yes: v5 gets 0x87, 3.1.1 a normal PUBACK (MQTT-3.3.5-2) — and nothing is routed or
/// retained.
#[tokio::test]
async fn clients_cannot_spoof_sys_topics() {
    let broker = start_broker().await;
    let mut watcher = Raw::connect(&broker, V5, "watcher").await;
    watcher.subscribe(1, "$SYS/#", QoS::AtLeastOnce).await;
    let mut v5 = Raw::connect(&broker, V5, "spoof5").await;
    v5.publish(
        "$SYS/broker/version",
        b"evil",
        PublishQoS::AtLeastOnce(pid(1)),
        true,
    )
    .await;
    match v5.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::NotAuthorized),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let mut v4 = Raw::connect(&broker, V4, "spoof4").await;
    v4.publish(
        "$SYS/broker/version",
        b"evil",
        PublishQoS::AtLeastOnce(pid(1)),
        true,
    )
    .await;
    v4.ack_publish(PublishQoS::AtLeastOnce(pid(1))).await;
    assert!(watcher.drain_topics().await.is_empty(), "not routed");
    let mut late = Raw::connect(&broker, V5, "late").await;
    late.subscribe(1, "$SYS/#", QoS::AtLeastOnce).await;
    assert!(late.drain_topics().await.is_empty(), "not retained");
    // A will on $SYS is refused at CONNECT.
    let mut c = Connect::new(V5, "sys-will");
    c.will = Some(will("$SYS/broker/uptime"));
    let (_c, ack) = Raw::connect_with(&broker, c).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::NotAuthorized);
    assert_eq!(broker.metrics().sys_publishes_denied, 2);
    broker.shutdown().await;
}

/// Issue 12 §1.6: a will is authorized again when it is published; after an ACL change
/// that takes the right away, it is not published.
#[tokio::test]
async fn wills_are_authorized_when_published() {
    let watcher_acl = format!("{ACL}topic read watch/#\n");
    let with_watch = |acl_text: &str| {
        acl_text.replace(
            "topic readwrite alice/#",
            "topic readwrite alice/#\ntopic write watch/#",
        )
    };
    let rules = with_watch(&watcher_acl);
    let broker = start(
        Broker::builder()
            .listen("127.0.0.1:0".parse().expect("address"))
            .authenticator(users())
            .authorizer(acl(&rules))
            .sys_interval(None),
    )
    .await;
    // bob reads watch/# (the rule after "user bob").
    let (mut bob, _) = login(&broker, V5, "watcher", "bob", false).await;
    bob.subscribe(1, "watch/#", QoS::AtLeastOnce).await;
    let with_will = |id: &str, t: &str| {
        let mut c = connect(V5, id, "alice", "a-pass", false);
        c.will = Some(will(t));
        c
    };
    // Allowed now and when published: delivered.
    let (first, ack) = Raw::connect_with(&broker, with_will("w1", "watch/w1")).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::Success);
    drop(first);
    let got = within(bob.next_message()).await;
    assert_eq!(got.topic.as_str(), "watch/w1");
    // Allowed at CONNECT, refused by the time it is published.
    let (second, ack) = Raw::connect_with(&broker, with_will("w2", "watch/w2")).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::Success);
    broker.set_authorizers(vec![acl(&watcher_acl)], false).await;
    drop(second);
    // Wait for the broker to see the connection end (the will check runs then).
    let mut tries = 0;
    while broker.metrics().wills_denied == 0 && tries < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        tries += 1;
    }
    assert_eq!(broker.metrics().wills_denied, 1);
    assert!(bob.drain_topics().await.is_empty());
    broker.shutdown().await;
}

/// Issue 12 §1.6: a shared-subscription group delivers each message to a member that may
/// read it; a member the authorizers refuse does not swallow messages for the group.
#[tokio::test]
async fn a_refused_member_does_not_swallow_shared_messages() {
    let broker = start(builder()).await;
    let (mut alice, _) = login(&broker, V5, "worker-a", "alice", false).await;
    let (mut bob, _) = login(&broker, V5, "worker-b", "bob", false).await;
    // bob may subscribe (jobs/public/# overlaps) but read only jobs/public/...
    for c in [&mut alice, &mut bob] {
        match c.subscribe(1, "$share/g/jobs/#", QoS::AtLeastOnce).await {
            Packet::SubAck(a) => assert_eq!(a.reason_codes, vec![ReasonCode::GrantedQoS1]),
            other => panic!("{other:?}"),
        }
    }
    let (mut publisher, _) = login(&broker, V5, "boss", "bob", false).await;
    for i in 1..=10u16 {
        assert_eq!(
            publish1(&mut publisher, "jobs/secret", b"j", i).await,
            ReasonCode::Success
        );
    }
    let to_alice = alice.drain_topics().await;
    let to_bob = bob.drain_topics().await;
    assert_eq!(
        to_alice.len(),
        10,
        "every message reached the member allowed to read it"
    );
    assert!(to_bob.is_empty());
    broker.shutdown().await;
}

/// Opens a raw connection from a chosen loopback source address.
async fn raw_from(broker: &BrokerHandle, source: &str, v: ProtocolVersion) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("address"))
        .expect("binds");
    let stream = within(socket.connect(addr(broker)))
        .await
        .expect("connects");
    Raw {
        stream,
        buf: bytes::BytesMut::new(),
        version: v,
    }
}

async fn try_login(c: &mut Raw, id: &str, user: &str, pass: &str) -> ReasonCode {
    c.send(Packet::Connect(Box::new(connect(
        c.version, id, user, pass, false,
    ))))
    .await;
    connack(c.recv().await.expect("CONNACK")).reason_code
}

/// Issue 12 §3: an unknown user name and a wrong password get the same answer (0x86), and
/// after failures the next attempt from that address or for that user name waits, doubling,
/// while other clients are served at once.
#[tokio::test]
async fn password_guessing_backs_off_without_slowing_others() {
    let broker = start(
        builder().limits(
            roost::Limits::default()
                .with_auth_failure_backoff(std::time::Duration::from_millis(300))
                .with_auth_failure_backoff_max(std::time::Duration::from_secs(3)),
        ),
    )
    .await;
    // No user enumeration through the reason code.
    let mut c = raw_from(&broker, "127.0.0.1", V5).await;
    assert_eq!(
        try_login(&mut c, "g0", "mallory", "x").await,
        ReasonCode::BadUserNameOrPassword
    );
    for i in 1..3 {
        let mut c = raw_from(&broker, "127.0.0.1", V5).await;
        assert_eq!(
            try_login(&mut c, &format!("g{i}"), "alice", "guess").await,
            ReasonCode::BadUserNameOrPassword
        );
    }
    assert_eq!(broker.metrics().auth_failures, 3);
    // Three failures from 127.0.0.1: the next attempt from there waits 300 ms × 2² before
    // its password is even looked at.
    let b = broker.clone();
    let guess = tokio::spawn(async move {
        let mut c = raw_from(&b, "127.0.0.1", V5).await;
        let started = std::time::Instant::now();
        let code = try_login(&mut c, "g3", "alice", "a-pass").await;
        (code, started.elapsed())
    });
    // Meanwhile a client from another address, with another name, is served at once.
    let mut bob = raw_from(&broker, "127.0.0.2", V5).await;
    assert_eq!(
        try_login(&mut bob, "bob-dev", "bob", "b-pass").await,
        ReasonCode::Success
    );
    assert!(
        !guess.is_finished(),
        "bob was not held up behind the guesser"
    );
    let (code, waited) = within(guess).await.expect("joins");
    assert_eq!(code, ReasonCode::Success, "the right password still works");
    assert!(
        waited >= std::time::Duration::from_millis(1200),
        "{waited:?}"
    );
    assert!(broker.metrics().auth_delayed >= 1);
    broker.shutdown().await;
}
