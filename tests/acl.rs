//! Authorization over loopback with the built-in providers: Mosquitto password files (made
//! by the real `mosquitto_passwd` when it is installed), ACL files, and attempts to get
//! around them.

mod support;

use std::sync::Arc;

use roost::auth::{AclFile, AclRules, AllowAll, PasswordFile, StaticUsers};
use roost::codec::{Connect, Packet, ProtocolVersion, PublishQoS, ReasonCode};
use roost::plugin::{Authenticator, Authorizer};
use roost::{Broker, BrokerHandle, QoS};
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

const ACL: &str = "\
topic read public/#
user alice
topic readwrite alice/#
topic deny alice/secret/#
topic read shared/jobs/#
user bob
topic readwrite bob/#
topic read public/#
pattern readwrite clients/%c/#
";

async fn broker(authn: Vec<Arc<dyn Authenticator>>, authz: Arc<dyn Authorizer>) -> BrokerHandle {
    let mut b = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .authorizer(authz)
        .sys_interval(None);
    for a in authn {
        b = b.authenticator(a);
    }
    b.build().start().await.expect("starts")
}

fn users() -> Arc<StaticUsers> {
    Arc::new(
        StaticUsers::new()
            .with_user("alice", "a-pass")
            .and_then(|u| u.with_user("bob", "b-pass"))
            .expect("hashes"),
    )
}

fn acl() -> Arc<AclFile> {
    Arc::new(AclFile::from_rules(AclRules::parse(ACL).expect("parses")))
}

async fn login(broker: &BrokerHandle, v: ProtocolVersion, id: &str, user: &str, pass: &str) -> Raw {
    let mut c = Connect::new(v, id);
    c.username = Some(user.into());
    c.password = Some(bytes::Bytes::from(pass.to_string()));
    let (raw, ack) = Raw::connect_with(broker, c).await;
    assert!(
        matches!(ack, Packet::ConnAck(a) if a.reason_code == ReasonCode::Success),
        "{user} refused"
    );
    raw
}

fn suback(p: Packet) -> Vec<ReasonCode> {
    match p {
        Packet::SubAck(a) => a.reason_codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn wildcard_subscription_receives_only_readable_topics() {
    let broker = broker(vec![users()], acl()).await;
    let mut alice = login(&broker, V5, "a1", "alice", "a-pass").await;
    // "#" overlaps alice's rules, so it is allowed; deliveries are checked per topic.
    assert_eq!(
        suback(alice.subscribe(1, "#", QoS::AtMostOnce).await),
        vec![ReasonCode::Success]
    );
    let mut bob = login(&broker, V5, "b1", "bob", "b-pass").await;
    bob.publish("bob/private", b"for bob", PublishQoS::AtMostOnce, false)
        .await;
    let mut alice_pub = login(&broker, V5, "a2", "alice", "a-pass").await;
    alice_pub
        .publish("alice/secret/key", b"hidden", PublishQoS::AtMostOnce, false)
        .await;
    alice_pub
        .publish("alice/notes", b"visible", PublishQoS::AtMostOnce, false)
        .await;
    alice_pub.ping().await;
    bob.ping().await;
    let got = alice.ping().await;
    let payloads: Vec<&[u8]> = got
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => &p.payload[..],
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(payloads, vec![&b"visible"[..]]);
    assert!(broker.metrics().messages_denied >= 2);
    broker.shutdown().await;
}

#[tokio::test]
async fn publish_and_subscribe_refusals_use_the_protocol_codes() {
    // MQTT-3.9.3-2 (3.1.1): a 3.1.1 client is refused with 0x80, never a v5 code.
    let broker = broker(vec![users()], acl()).await;
    let mut bob5 = login(&broker, V5, "b5", "bob", "b-pass").await;
    bob5.publish("alice/x", b"no", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    assert!(
        matches!(bob5.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::NotAuthorized)
    );
    assert_eq!(
        suback(bob5.subscribe(2, "alice/#", QoS::AtMostOnce).await),
        vec![ReasonCode::NotAuthorized]
    );
    // 3.1.1: a positive PUBACK (MQTT-3.3.5-2) and SUBACK 0x80; nothing is routed.
    let mut watcher = login(&broker, V4, "a1", "alice", "a-pass").await;
    watcher.subscribe(1, "alice/#", QoS::AtMostOnce).await;
    let mut bob4 = login(&broker, V4, "b4", "bob", "b-pass").await;
    bob4.publish("alice/x", b"no", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    assert!(
        matches!(bob4.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success)
    );
    assert_eq!(
        suback(bob4.subscribe(2, "alice/#", QoS::AtMostOnce).await),
        vec![ReasonCode::UnspecifiedError]
    );
    assert!(watcher.ping().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_messages_obey_the_receive_check() {
    let broker = broker(vec![users()], acl()).await;
    let mut alice = login(&broker, V5, "a1", "alice", "a-pass").await;
    alice
        .publish("alice/secret/pin", b"1234", PublishQoS::AtMostOnce, true)
        .await;
    alice
        .publish("alice/public", b"hi", PublishQoS::AtMostOnce, true)
        .await;
    alice.ping().await;
    let mut again = login(&broker, V5, "a2", "alice", "a-pass").await;
    again.subscribe(1, "alice/#", QoS::AtMostOnce).await;
    let got = again.ping().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(matches!(&got[0], Packet::Publish(p) if &p.payload[..] == b"hi"));
    broker.shutdown().await;
}

#[tokio::test]
async fn client_ids_with_wildcards_cannot_widen_patterns() {
    let broker = broker(vec![users()], acl()).await;
    let mut victim = login(&broker, V5, "victim", "bob", "b-pass").await;
    victim
        .subscribe(1, "clients/victim/#", QoS::AtMostOnce)
        .await;
    // A client named "+" would turn "clients/%c/#" into "clients/+/#".
    let mut attacker = login(&broker, V5, "+", "alice", "a-pass").await;
    assert_eq!(
        suback(attacker.subscribe(1, "clients/+/#", QoS::AtMostOnce).await),
        vec![ReasonCode::NotAuthorized]
    );
    attacker
        .publish(
            "clients/victim/cmd",
            b"evil",
            PublishQoS::AtLeastOnce(pid(2)),
            false,
        )
        .await;
    assert!(
        matches!(attacker.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::NotAuthorized)
    );
    assert!(victim.ping().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn shared_subscriptions_and_sys_topics_are_checked() {
    let broker = broker(vec![users()], acl()).await;
    let mut alice = login(&broker, V5, "a1", "alice", "a-pass").await;
    assert_eq!(
        suback(
            alice
                .subscribe(1, "$share/g/shared/jobs/#", QoS::AtMostOnce)
                .await
        ),
        vec![ReasonCode::Success]
    );
    let mut bob = login(&broker, V5, "b1", "bob", "b-pass").await;
    assert_eq!(
        suback(
            bob.subscribe(1, "$share/g/shared/jobs/#", QoS::AtMostOnce)
                .await
        ),
        vec![ReasonCode::NotAuthorized]
    );
    // "#" in the ACL does not reach $SYS (MQTT-4.7.2-1 applies to rules too).
    assert_eq!(
        suback(bob.subscribe(2, "$SYS/#", QoS::AtMostOnce).await),
        vec![ReasonCode::NotAuthorized]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn acl_file_reload_and_set_authorizers_recheck() {
    let dir = std::env::temp_dir().join(format!("roost-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("acl");
    std::fs::write(
        &path,
        "user bob\ntopic readwrite bob/#\ntopic read news/#\n",
    )
    .expect("write");
    let file = Arc::new(AclFile::load(&path).expect("loads"));
    let broker = broker(vec![users()], file.clone()).await;
    let mut bob = login(&broker, V5, "b1", "bob", "b-pass").await;
    assert_eq!(
        suback(bob.subscribe(1, "news/#", QoS::AtMostOnce).await),
        vec![ReasonCode::Success]
    );
    // Take news away; reload keeps bob connected; a re-check removes the subscription.
    std::fs::write(&path, "user bob\ntopic readwrite bob/#\n").expect("write");
    file.reload().expect("reloads");
    broker.set_authorizers(vec![file.clone()], true).await;
    assert_eq!(broker.metrics().subscriptions, 0, "subscription removed");
    bob.ping().await;
    // A reload that fails leaves the old rules in force.
    std::fs::write(&path, "topic read a/#/b\n").expect("write");
    assert!(file.reload().is_err());
    bob.publish("bob/ok", b"x", PublishQoS::AtLeastOnce(pid(5)), false)
        .await;
    assert!(matches!(bob.recv().await, Some(Packet::PubAck(a)) if a.reason_code.is_success()));
    // Revoking the client: an authorizer that refuses bob disconnects him with 0x98.
    struct NoBob;
    #[async_trait::async_trait]
    impl Authorizer for NoBob {
        async fn authorize_client(&self, c: &roost::plugin::ClientInfo) -> roost::plugin::Decision {
            if c.user() == Some("bob") {
                roost::plugin::Decision::Deny(ReasonCode::NotAuthorized)
            } else {
                roost::plugin::Decision::Defer
            }
        }
    }
    broker
        .set_authorizers(vec![Arc::new(NoBob), file], true)
        .await;
    let seen = bob.closed_promptly().await;
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::AdministrativeAction),
        "{seen:?}"
    );
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn password_file_from_mosquitto_passwd() {
    let dir = std::env::temp_dir().join(format!("roost-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("passwd");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&path)
        .args(["carol", "c-pass"])
        .status();
    let Ok(status) = made else {
        skip_unless_optional("mosquitto_passwd");
        return;
    };
    assert!(status.success());
    // And a legacy $6$ entry.
    let legacy = std::process::Command::new("mosquitto_passwd")
        .args(["-H", "sha512", "-b"])
        .arg(&path)
        .args(["dave", "d-pass"])
        .status()
        .expect("runs");
    assert!(legacy.success());
    let file = Arc::new(PasswordFile::load(&path).expect("loads"));
    assert_eq!(file.len(), 2);
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .authenticator(file.clone())
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    login(&broker, V4, "c", "carol", "c-pass").await;
    login(&broker, V5, "d", "dave", "d-pass").await;
    for (v, code) in [
        (V4, ReasonCode::BadUserNameOrPassword),
        (V5, ReasonCode::BadUserNameOrPassword),
    ] {
        let mut c = Connect::new(v, "x");
        c.username = Some("carol".into());
        c.password = Some(bytes::Bytes::from_static(b"wrong"));
        let (_raw, ack) = Raw::connect_with(&broker, c).await;
        assert!(matches!(ack, Packet::ConnAck(a) if a.reason_code == code));
    }
    // Reload picks up a new user without dropping connections.
    let added = std::process::Command::new("mosquitto_passwd")
        .args(["-b"])
        .arg(&path)
        .args(["erin", "e-pass"])
        .status()
        .expect("runs");
    assert!(added.success());
    file.reload().expect("reloads");
    login(&broker, V5, "e", "erin", "e-pass").await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn anonymous_access_beside_a_password_table() {
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .authenticator(users())
        .authenticator(Arc::new(AllowAll::anonymous_only()))
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    // No user name: the anonymous rule lets it in.
    Raw::connect(&broker, V4, "anon").await;
    login(&broker, V4, "a", "alice", "a-pass").await;
    // A user name nobody knows: every authenticator defers → refused, with the same code as
    // a wrong password (no user enumeration; 3.1.1 return code 4).
    let mut c = Connect::new(V4, "x");
    c.username = Some("zed".into());
    let (_raw, ack) = Raw::connect_with(&broker, c).await;
    assert!(
        matches!(ack, Packet::ConnAck(a) if a.reason_code == ReasonCode::BadUserNameOrPassword)
    );
    broker.shutdown().await;
}

/// An authorizer that never answers publishes, panics on subscriptions and on deliveries
/// to "victim/…", and allows everything else.
struct Faulty;

#[async_trait::async_trait]
impl Authorizer for Faulty {
    async fn authorize_publish(
        &self,
        _: &roost::plugin::ClientInfo,
        topic: &roost::TopicName,
        _: QoS,
        _: bool,
    ) -> roost::plugin::Decision {
        if topic.as_str().starts_with("slow/") {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
        roost::plugin::Decision::Allow
    }

    async fn authorize_subscribe(
        &self,
        _: &roost::plugin::ClientInfo,
        filter: &roost::TopicFilter,
        qos: QoS,
    ) -> roost::plugin::SubscribeDecision {
        if filter.as_str().starts_with("boom/") {
            panic!("authorizer bug");
        }
        roost::plugin::SubscribeDecision::Allow(qos)
    }

    fn authorize_receive(
        &self,
        _: &roost::plugin::ClientInfo,
        topic: &roost::TopicName,
        _: QoS,
    ) -> roost::plugin::Decision {
        if topic.as_str().starts_with("victim/") {
            panic!("authorizer bug");
        }
        roost::plugin::Decision::Allow
    }
}

/// A broker whose only authorizer is [`Faulty`], with plugin calls cut off at `timeout`.
async fn faulty_broker(timeout: std::time::Duration) -> BrokerHandle {
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .authorizer(Arc::new(Faulty))
        .plugin_settings(roost::plugin::PluginSettings::default().with_timeout(timeout))
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts")
}

#[tokio::test]
async fn an_authorizer_that_times_out_or_panics_refuses() {
    // README, plugins: "a plugin that times out or panics counts as a refusal (fail
    // closed) and is counted in plugin_failures".
    let broker = faulty_broker(std::time::Duration::from_millis(300)).await;
    let v5 = ProtocolVersion::V5;
    let mut c = Raw::connect(&broker, v5, "c").await;
    // Subscribe: the panic refuses the filter (0x87), and the connection lives on.
    let refused = c.subscribe(1, "boom/x", QoS::AtMostOnce).await;
    assert!(
        matches!(&refused, Packet::SubAck(a) if a.reason_codes == [ReasonCode::NotAuthorized]),
        "{refused:?}"
    );
    c.subscribe(2, "#", QoS::AtMostOnce).await;
    // Publish: no answer within the deadline refuses it (PUBACK 0x87), and nobody gets it.
    let started = std::time::Instant::now();
    c.publish("slow/x", b"late", PublishQoS::AtLeastOnce(pid(3)), false)
        .await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::NotAuthorized),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "refused at the deadline"
    );
    // Receive: the panic withholds that delivery only.
    c.publish("victim/x", b"hidden", PublishQoS::AtMostOnce, false)
        .await;
    c.publish("fine/x", b"shown", PublishQoS::AtMostOnce, false)
        .await;
    let got = c.recv_publish().await;
    assert_eq!(&got.payload[..], b"shown", "no late, no hidden");
    assert_eq!(broker.metrics().plugin_failures, 3);
    broker.shutdown().await;
}

#[tokio::test]
async fn after_a_refusing_pubrec_the_same_id_is_a_new_message() {
    // MQTT-4.3.3-9 (v5): once the broker has answered a QoS 2 PUBLISH with PUBREC 0x80 or
    // more, a PUBLISH with that packet id is a new publication (not a duplicate to swallow).
    let broker = faulty_broker(std::time::Duration::from_millis(200)).await;
    let v5 = ProtocolVersion::V5;
    let mut sub = Raw::connect(&broker, v5, "sub").await;
    sub.subscribe(1, "fine/#", QoS::AtMostOnce).await;
    let mut c = Raw::connect(&broker, v5, "c").await;
    c.publish("slow/x", b"refused", PublishQoS::ExactlyOnce(pid(9)), false)
        .await;
    match c.recv().await {
        Some(Packet::PubRec(r)) => assert_eq!(r.reason_code, ReasonCode::NotAuthorized),
        other => panic!("expected PUBREC 0x87, got {other:?}"),
    }
    c.publish("fine/x", b"new", PublishQoS::ExactlyOnce(pid(9)), false)
        .await;
    match c.recv().await {
        Some(Packet::PubRec(r)) => assert!(r.reason_code.is_success(), "{r:?}"),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    c.send(Packet::PubRel(roost::codec::PubResponse::new(pid(9))))
        .await;
    assert!(matches!(c.recv().await, Some(Packet::PubComp(_))));
    assert_eq!(&sub.recv_publish().await.payload[..], b"new");
    broker.shutdown().await;
}

/// Copies a reader holds back to queue per session (QoS 0, see `session::Fanout`) are
/// queued before it waits for an authorizer: a message published just before one whose
/// authorization hangs reaches its subscriber at once.
#[tokio::test]
async fn a_hanging_authorization_does_not_hold_back_earlier_messages() {
    // The hanging authorization is cut off after 6 s (shutdown waits for it).
    let broker = faulty_broker(std::time::Duration::from_secs(6)).await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "fast/#", QoS::AtMostOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    // Both in one write: the broker reads them in one run.
    let mut run = bytes::BytesMut::new();
    for t in ["fast/a", "slow/b"] {
        let p = roost::codec::Publish::new(topic(t), PublishQoS::AtMostOnce, &b"x"[..]);
        Packet::Publish(p).encode(V4, &mut run).expect("encodes");
    }
    publ.send_bytes(&run).await;
    let got = tokio::time::timeout(std::time::Duration::from_secs(3), sub.recv_publish())
        .await
        .expect("fast/a arrives while slow/b is being authorized");
    assert_eq!(got.topic.as_str(), "fast/a");
    drop((sub, publ));
    broker.shutdown().await;
}
