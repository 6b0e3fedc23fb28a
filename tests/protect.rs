//! Payload protection (issue 18): devices without TLS seal their payloads (AES-GCM /
//! AES-CCM envelopes), the broker opens them before routing and seals what they receive.
//! Real sockets throughout: the reference device (`scripts/protected_device.py`, Python's
//! `cryptography`) over plain TCP, rumqttc over TLS, raw v5/3.1.1 clients for the refusal
//! codes, and a redb store in a temporary directory for the restart.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use roost::codec::{Connect, LastWill, Packet, ProtocolVersion, Publish, PublishQoS, ReasonCode};
use roost::protect::envelope::{self, Direction, Header};
use roost::protect::{Algorithm, DeviceKey, KeyFile, Keys, PayloadProtection};
use roost::{Broker, BrokerHandle, ClientOptions, Durability, QoS};
use support::tls::{client_tls, connected, server_tls, Ca};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;
const K16: &str = "000102030405060708090a0b0c0d0e0f";
const K32: &str = "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f";

fn key_file() -> String {
    format!("sensor-1 1 aes-128-gcm {K16}\nactuator-1 4 aes-256-ccm {K32}\n")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn sensor_key() -> DeviceKey {
    DeviceKey::new(Algorithm::Aes128Gcm, &hex(K16)).expect("key")
}

/// An envelope from a device, as a device seals it.
fn sealed(key: &DeviceKey, key_id: u8, seq: u64, topic: &str, plaintext: &[u8]) -> Bytes {
    let h = Header {
        key_id,
        seq,
        nonce: [seq as u8; 12],
    };
    Bytes::from(envelope::seal(key, Direction::Up, &h, topic, plaintext).expect("seals"))
}

/// A broker with a plain listener named `devices` (protected) first, then a plain
/// listener for everyone else.
async fn broker_with(protection: &PayloadProtection, store: Option<&Path>) -> BrokerHandle {
    let mut b = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .listener_name("devices")
        .listen("127.0.0.1:0".parse().expect("address"))
        .sys_interval(None);
    if let Some(dir) = store {
        let (_, storage) =
            roost::storage::open_store(dir, None, roost::storage::OnCorrupt::Fail).expect("store");
        b = b.storage(storage, Durability::Acked);
    }
    protection.install(b).build().start().await.expect("starts")
}

fn protection(keys: &str) -> PayloadProtection {
    PayloadProtection::new(Arc::new(KeyFile::parse(keys).expect("key file")))
        .protect_listener("devices")
}

fn devices(broker: &BrokerHandle) -> SocketAddr {
    broker.local_addrs()[0]
}

fn others(broker: &BrokerHandle) -> SocketAddr {
    broker.local_addrs()[1]
}

async fn device(broker: &BrokerHandle, version: ProtocolVersion, id: &str) -> Raw {
    let (raw, ack) = Raw::connect_to(devices(broker), Connect::new(version, id)).await;
    assert!(connack(ack).reason_code.is_success());
    raw
}

/// Publishes `payload` at QoS 1 and returns the PUBACK's reason code.
async fn puback(c: &mut Raw, id: u16, topic_name: &str, payload: Bytes) -> ReasonCode {
    c.send(Packet::Publish(Publish::new(
        topic(topic_name),
        PublishQoS::AtLeastOnce(pid(id)),
        payload,
    )))
    .await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => a.reason_code,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// A broker-side observer: an in-process subscriber (plaintext).
async fn observer(broker: &BrokerHandle, filter: &str) -> roost::Deliveries {
    let (c, d) = within(broker.client(ClientOptions::new(format!("observer-{filter}"))))
        .await
        .expect("connects");
    within(c.subscribe(filter, QoS::AtLeastOnce))
        .await
        .expect("subscribes");
    std::mem::forget(c); // stays connected for the test
    d
}

/// Runs the reference device; `None` if Python or its `cryptography` package is missing
/// (then the test is skipped, or fails under ROOST_INTEROP=1).
fn python_device() -> Option<Vec<String>> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import cryptography.hazmat.primitives.ciphers.aead"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_unless_optional("python3 with the cryptography package");
        return None;
    }
    let script = format!("{}/scripts/protected_device.py", env!("CARGO_MANIFEST_DIR"));
    Some(vec!["python3".into(), script])
}

async fn run_device(base: &[String], args: &[&str]) -> String {
    let out = within(
        tokio::process::Command::new(&base[0])
            .args(&base[1..])
            .args(args)
            .output(),
    )
    .await
    .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Issue 18 §2, §3, §5: the reference device publishes over plain TCP, a TLS subscriber
/// gets plaintext; the TLS client answers and the device gets it sealed under its key, with
/// a sequence number it accepts.
#[tokio::test]
async fn device_to_tls_subscriber_and_back() {
    let Some(py) = python_device() else { return };
    let ca = Ca::new("protect CA");
    let protection = protection(&key_file());
    let broker = protection
        .install(
            Broker::builder()
                .listen("127.0.0.1:0".parse().expect("address"))
                .listener_name("devices")
                .listen_tls(
                    "127.0.0.1:0".parse().expect("address"),
                    server_tls(&ca, None),
                )
                .sys_interval(None),
        )
        .build()
        .start()
        .await
        .expect("starts");
    let port = devices(&broker).port().to_string();
    let tls_port = broker.local_addrs()[1].port();
    let mut o = rumqttc::MqttOptions::new("app", "127.0.0.1", tls_port);
    o.set_transport(rumqttc::Transport::Tls(client_tls(&ca, None)));
    let (app, mut el) = rumqttc::AsyncClient::new(o, 16);
    connected(&mut el).await.expect("TLS connect");
    within(app.subscribe("sensors/#", rumqttc::QoS::AtLeastOnce))
        .await
        .expect("queued");
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Incoming::SubAck(_)) =
            within(el.poll()).await.expect("polls")
        {
            break;
        }
    }
    for (id, key_id, alg, key) in [
        ("sensor-1", "1", "aes-128-gcm", K16),
        ("actuator-1", "4", "aes-256-ccm", K32),
    ] {
        let topic_name = format!("sensors/{id}/temp");
        run_device(
            &py,
            &[
                "publish",
                "--port",
                &port,
                "--id",
                id,
                "--key-id",
                key_id,
                "--alg",
                alg,
                "--key",
                key,
                "--topic",
                &topic_name,
                "--message",
                "21.5",
                "--seq",
                "1",
            ],
        )
        .await;
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)) =
                within(el.poll()).await.expect("polls")
            {
                assert_eq!(p.topic, topic_name);
                assert_eq!(&p.payload[..], b"21.5", "the TLS subscriber sees plaintext");
                break;
            }
        }
    }
    // Back: the device subscribes, the TLS client publishes, the device opens it.
    let mut device = tokio::process::Command::new(&py[0])
        .args(&py[1..])
        .args([
            "subscribe",
            "--port",
            &port,
            "--id",
            "actuator-1",
            "--key-id",
            "4",
            "--alg",
            "aes-256-ccm",
            "--key",
            K32,
            "--topic",
            "cmd/actuator-1",
            "--count",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("device starts");
    let stdout = device.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = within(lines.next_line())
        .await
        .expect("reads")
        .expect("line");
    assert!(first.contains("subscribed"), "{first}");
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    for m in ["on", "off"] {
        within(app.publish("cmd/actuator-1", rumqttc::QoS::AtLeastOnce, false, m))
            .await
            .expect("queued");
    }
    let mut seqs = Vec::new();
    for want in ["on", "off"] {
        let line = within(lines.next_line())
            .await
            .expect("reads")
            .expect("line");
        assert!(line.contains(&format!("\"message\": \"{want}\"")), "{line}");
        assert!(line.contains("\"accepted\": true"), "{line}");
        let seq: u64 = line
            .split("\"seq\": ")
            .nth(1)
            .and_then(|s| s.split([',', '}']).next())
            .and_then(|s| s.trim().parse().ok())
            .expect("seq");
        seqs.push(seq);
    }
    assert!(
        seqs[1] > seqs[0],
        "outbound sequence numbers grow: {seqs:?}"
    );
    within(device.wait()).await.expect("device exits");
    let stats = protection.stats();
    assert_eq!(stats.opened, 2);
    assert_eq!(stats.sealed, 2);
    broker.shutdown().await;
}

/// Issue 18 §2: nothing unverified reaches a subscriber. v5 PUBACK/PUBREC carry 0x99 for
/// a tampered envelope, one sealed for another topic, a replayed or stale sequence number
/// and a plaintext payload, 0x87 for an unknown key id or a client with no keys; a 3.1.1
/// device is acknowledged as usual (MQTT-3.3.5-2) and nothing is routed.
#[tokio::test]
async fn unverified_payloads_are_refused_and_counted() {
    let protection = protection(&key_file());
    let broker = broker_with(&protection, None).await;
    let mut seen = observer(&broker, "s/#").await;
    let key = sensor_key();
    let mut d = device(&broker, V5, "sensor-1").await;
    assert_eq!(
        puback(&mut d, 1, "s/a", sealed(&key, 1, 5, "s/a", b"good")).await,
        ReasonCode::Success
    );
    let got = within(seen.recv()).await.expect("routed");
    assert_eq!(&got.payload[..], b"good");
    let mut tampered = sealed(&key, 1, 6, "s/a", b"evil").to_vec();
    tampered[25] ^= 0x01;
    let cases: Vec<(&str, &str, Bytes, ReasonCode)> = vec![
        (
            "tampered ciphertext",
            "s/a",
            Bytes::from(tampered),
            ReasonCode::PayloadFormatInvalid,
        ),
        (
            "sealed for another topic (associated data)",
            "s/b",
            sealed(&key, 1, 7, "s/a", b"moved"),
            ReasonCode::PayloadFormatInvalid,
        ),
        (
            "replay of seq 5",
            "s/a",
            sealed(&key, 1, 5, "s/a", b"good"),
            ReasonCode::PayloadFormatInvalid,
        ),
        (
            "stale seq 4",
            "s/a",
            sealed(&key, 1, 4, "s/a", b"old"),
            ReasonCode::PayloadFormatInvalid,
        ),
        (
            "unknown key id",
            "s/a",
            sealed(&key, 9, 8, "s/a", b"who"),
            ReasonCode::NotAuthorized,
        ),
        (
            "plaintext",
            "s/a",
            Bytes::from_static(b"plain text payload that is long enough to parse"),
            ReasonCode::PayloadFormatInvalid,
        ),
    ];
    for (i, (what, t, payload, code)) in cases.into_iter().enumerate() {
        assert_eq!(
            puback(&mut d, 10 + i as u16, t, payload).await,
            code,
            "{what}"
        );
    }
    // QoS 2: the refusal is on PUBREC and ends the exchange.
    d.send(Packet::Publish(Publish::new(
        topic("s/a"),
        PublishQoS::ExactlyOnce(pid(30)),
        sealed(&key, 1, 5, "s/a", b"again"),
    )))
    .await;
    match d.recv().await {
        Some(Packet::PubRec(r)) => assert_eq!(r.reason_code, ReasonCode::PayloadFormatInvalid),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // A client on the protected listener without keys: 0x87.
    let mut stranger = device(&broker, V5, "stranger").await;
    assert_eq!(
        puback(&mut stranger, 1, "s/x", sealed(&key, 1, 50, "s/x", b"x")).await,
        ReasonCode::NotAuthorized
    );
    // 3.1.1: acknowledged, not routed.
    let mut old = device(&broker, V311, "actuator-1").await;
    assert_eq!(
        puback(
            &mut old,
            1,
            "s/c",
            Bytes::from_static(b"not an envelope, but 3.1.1 has no refusal code")
        )
        .await,
        ReasonCode::Success
    );
    // The next good message is the only other one the observer sees.
    assert_eq!(
        puback(&mut d, 40, "s/a", sealed(&key, 1, 9, "s/a", b"next")).await,
        ReasonCode::Success
    );
    let got = within(seen.recv()).await.expect("routed");
    assert_eq!(
        &got.payload[..],
        b"next",
        "nothing unverified was routed in between"
    );
    let stats = protection.stats();
    assert_eq!(
        (
            stats.opened,
            stats.refused_malformed,
            stats.refused_bad_tag,
            stats.refused_replay,
            stats.refused_unknown_key,
        ),
        (2, 2, 2, 3, 2),
        "{stats:?}"
    );
    assert_eq!(broker.metrics().messages_refused_by_hooks, 9);
    assert_eq!(protection.last_inbound_seq("sensor-1"), 9);
    broker.shutdown().await;
}

/// Issue 18 §3: a protected subscriber gets each message sealed under its own key with a
/// fresh nonce, everyone else plaintext; a protected client with no key gets nothing.
#[tokio::test]
async fn each_subscriber_gets_its_own_form() {
    let protection = protection(&key_file());
    let broker = broker_with(&protection, None).await;
    let mut sensor = device(&broker, V5, "sensor-1").await;
    sensor.subscribe(1, "news", QoS::AtLeastOnce).await;
    let mut stranger = device(&broker, V5, "stranger").await;
    stranger.subscribe(1, "news", QoS::AtLeastOnce).await;
    let (mut plain, _) = Raw::connect_to(others(&broker), Connect::new(V5, "plain")).await;
    plain.subscribe(1, "news", QoS::AtLeastOnce).await;
    let (app, _d) = within(broker.client(ClientOptions::new("app")))
        .await
        .expect("connects");
    let mut options = roost::PublishOptions::new(QoS::AtLeastOnce);
    options.properties.payload_format_indicator = Some(roost::codec::PayloadFormat::Utf8);
    for _ in 0..2 {
        within(app.publish_with("news", Bytes::from_static(b"hello"), options.clone()))
            .await
            .expect("published");
    }
    let key = sensor_key();
    let mut nonces = Vec::new();
    let mut seqs = Vec::new();
    for _ in 0..2 {
        let p = sensor.next_message().await;
        let h = envelope::peek(&p.payload).expect("an envelope");
        assert_eq!(h.key_id, 1);
        let opened = envelope::open(&key, Direction::Down, "news", &p.payload).expect("opens");
        assert_eq!(opened, b"hello");
        assert_eq!(
            p.properties.payload_format_indicator, None,
            "ciphertext is not UTF-8"
        );
        nonces.push(h.nonce);
        seqs.push(h.seq);
        assert_eq!(&plain.next_message().await.payload[..], b"hello");
    }
    assert_ne!(nonces[0], nonces[1], "a fresh nonce per message");
    assert!(seqs[1] > seqs[0]);
    // The keyless protected client got nothing; the delivery was withheld and counted.
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(300), stranger.recv()).await;
    assert!(
        nothing.is_err(),
        "a protected client without a key got {nothing:?}"
    );
    assert_eq!(protection.stats().withheld, 2);
    assert_eq!(broker.metrics().messages_withheld, 2);
    broker.shutdown().await;
}

/// The broker publishes on `back`; the device `d` (subscribed) gets it sealed: its
/// sequence number.
async fn sent_back(broker: &BrokerHandle, d: &mut Raw) -> u64 {
    broker
        .publish(roost::Message::new(
            topic("back"),
            Bytes::from_static(b"x"),
            QoS::AtMostOnce,
            false,
        ))
        .await
        .expect("publishes");
    envelope::peek(&d.next_message().await.payload)
        .expect("envelope")
        .seq
}

/// Issue 18 §2: the replay window survives a restart (its high-water mark is in the
/// broker's storage), and the broker's own sequence numbers continue above the last ones
/// it used.
#[tokio::test]
async fn replays_are_refused_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("roost-protect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = sensor_key();
    let first_seq;
    {
        let protection = protection(&key_file());
        let broker = broker_with(&protection, Some(&dir)).await;
        let mut d = device(&broker, V5, "sensor-1").await;
        d.subscribe(1, "back", QoS::AtMostOnce).await;
        for seq in 1..=3 {
            let t = format!("s/{seq}");
            let code = puback(&mut d, seq as u16, &t, sealed(&key, 1, seq, &t, b"m")).await;
            assert!(code.is_success(), "{code:?}");
        }
        first_seq = sent_back(&broker, &mut d).await;
        broker.shutdown().await;
    }
    let protection = protection(&key_file());
    let broker = broker_with(&protection, Some(&dir)).await;
    assert_eq!(
        protection.last_inbound_seq("sensor-1"),
        3,
        "loaded from storage"
    );
    let mut d = device(&broker, V5, "sensor-1").await;
    d.subscribe(1, "back", QoS::AtMostOnce).await;
    assert_eq!(
        puback(&mut d, 1, "s/3", sealed(&key, 1, 3, "s/3", b"m")).await,
        ReasonCode::PayloadFormatInvalid,
        "a replay of the last message before the restart"
    );
    let code = puback(&mut d, 2, "s/4", sealed(&key, 1, 4, "s/4", b"m")).await;
    assert!(code.is_success(), "{code:?}");
    let after = sent_back(&broker, &mut d).await;
    assert!(after > first_seq, "{after} after {first_seq}: never reused");
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_keys(path: &PathBuf, text: &str) {
    std::fs::write(path, text).expect("writes the key file");
}

/// Issue 18 §4: rotation without downtime. With both keys listed the broker takes either
/// and sends with the new one; once the old one is removed it is refused.
#[tokio::test]
async fn keys_rotate_without_downtime() {
    let dir = std::env::temp_dir().join(format!("roost-protect-rot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("devices.keys");
    write_keys(&path, &format!("sensor-1 1 aes-128-gcm {K16}\n"));
    let keys = Keys::load(&path).expect("loads");
    let protection = PayloadProtection::new(Arc::new(keys.clone())).protect_listener("devices");
    let broker = broker_with(&protection, None).await;
    let old = sensor_key();
    let new = DeviceKey::new(Algorithm::Aes256Gcm, &hex(K32)).expect("key");
    let mut d = device(&broker, V5, "sensor-1").await;
    d.subscribe(1, "down", QoS::AtMostOnce).await;
    let (app, _x) = within(broker.client(ClientOptions::new("app")))
        .await
        .expect("connects");
    let send =
        |body: &'static [u8]| app.publish("down", Bytes::from_static(body), QoS::AtMostOnce, false);
    assert!(puback(&mut d, 1, "up", sealed(&old, 1, 1, "up", b"a"))
        .await
        .is_success());
    within(send(b"1")).await.expect("sent");
    assert_eq!(
        envelope::peek(&d.next_message().await.payload)
            .expect("env")
            .key_id,
        1
    );
    // Phase 2: both keys, the new one last.
    write_keys(
        &path,
        &format!("sensor-1 1 aes-128-gcm {K16}\nsensor-1 2 aes-256-gcm {K32}\n"),
    );
    assert_eq!(keys.reload().expect("reloads"), 1);
    within(send(b"2")).await.expect("sent");
    let p = d.next_message().await;
    assert_eq!(envelope::peek(&p.payload).expect("env").key_id, 2);
    assert_eq!(
        envelope::open(&new, Direction::Down, "down", &p.payload).expect("opens"),
        b"2"
    );
    assert!(puback(&mut d, 2, "up", sealed(&old, 1, 2, "up", b"b"))
        .await
        .is_success());
    assert!(puback(&mut d, 3, "up", sealed(&new, 2, 3, "up", b"c"))
        .await
        .is_success());
    // Phase 3: the old key removed.
    write_keys(&path, &format!("sensor-1 2 aes-256-gcm {K32}\n"));
    keys.reload().expect("reloads");
    assert_eq!(
        puback(&mut d, 4, "up", sealed(&old, 1, 4, "up", b"d")).await,
        ReasonCode::NotAuthorized
    );
    assert!(puback(&mut d, 5, "up", sealed(&new, 2, 5, "up", b"e"))
        .await
        .is_success());
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 18 §2 for wills: a protected client's will is verified at CONNECT (a bad one is
/// refused with CONNACK 0x99) and published as plaintext.
#[tokio::test]
async fn wills_of_protected_clients_are_verified_at_connect() {
    let protection = protection(&key_file());
    let broker = broker_with(&protection, None).await;
    let mut seen = observer(&broker, "wills/#").await;
    let key = sensor_key();
    let will = |payload: Bytes| LastWill {
        topic: topic("wills/sensor-1"),
        payload,
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    };
    let mut c = Connect::new(V5, "sensor-1");
    c.will = Some(will(sealed(&key, 1, 1, "wills/other", b"gone")));
    let (_r, ack) = Raw::connect_to(devices(&broker), c).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::PayloadFormatInvalid);
    let mut c = Connect::new(V5, "sensor-1");
    c.will = Some(will(sealed(&key, 1, 2, "wills/sensor-1", b"gone")));
    let (r, ack) = Raw::connect_to(devices(&broker), c).await;
    assert!(connack(ack).reason_code.is_success());
    drop(r); // no DISCONNECT: the will goes
    let got = within(seen.recv()).await.expect("will");
    assert_eq!(&got.payload[..], b"gone");
    // Its sequence number was used: the same CONNECT again is a replay.
    let mut c = Connect::new(V5, "sensor-1");
    c.will = Some(will(sealed(&key, 1, 2, "wills/sensor-1", b"gone")));
    let (_r, ack) = Raw::connect_to(devices(&broker), c).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::PayloadFormatInvalid);
    broker.shutdown().await;
}

/// Issue 18 §6: `examples/protected_devices.rs` runs on its own: the device's reading
/// arrives as plaintext, its tampered copy is refused, the command reaches it sealed; run
/// again over the same data, the broker's sequence numbers continue upwards.
#[tokio::test]
async fn the_protected_devices_example_runs() {
    let dir = std::env::temp_dir().join(format!("roost-protect-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut seqs = Vec::new();
    for _ in 0..2 {
        let text = support::run_example("protected_devices", Some(&dir)).await;
        assert!(
            text.contains("app got sensors/sensor-1/temp 21.5"),
            "{text}"
        );
        assert!(
            text.contains("tampered message refused: PayloadFormatInvalid"),
            "{text}"
        );
        assert!(
            !text.contains("99.9"),
            "the tampered reading was routed: {text}"
        );
        let seq: u64 = text
            .split("device got cmd/sensor-1 fan on (sealed, key 1, seq ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        seqs.push(seq);
    }
    assert!(seqs[1] > seqs[0], "{seqs:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store whose flushes wait while `held` is set, until a permit is added.
struct Held {
    inner: roost::storage::MemoryStorage,
    held: std::sync::atomic::AtomicBool,
    permits: tokio::sync::Semaphore,
}

#[roost::async_trait]
impl roost::storage::Storage for Held {
    async fn load(&self) -> Result<roost::storage::Snapshot, roost::storage::StorageError> {
        self.inner.load().await
    }
    async fn write(
        &self,
        ops: Vec<roost::storage::Op>,
    ) -> Result<(), roost::storage::StorageError> {
        self.inner.write(ops).await
    }
    async fn flush(&self) -> Result<(), roost::storage::StorageError> {
        if self.held.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(p) = self.permits.acquire().await {
                p.forget();
            }
        }
        self.inner.flush().await
    }
    fn size_on_disk(&self) -> Result<u64, roost::storage::StorageError> {
        Ok(0)
    }
}

/// Issue 18 §2 with acked durability: a protected message whose replay mark is not yet
/// durable is neither acknowledged nor delivered (a crash then could not let its replay
/// in after the device was told it arrived).
#[tokio::test]
async fn the_acknowledgement_waits_for_the_replay_mark() {
    let store = Arc::new(Held {
        inner: roost::storage::MemoryStorage::new(),
        held: std::sync::atomic::AtomicBool::new(false),
        permits: tokio::sync::Semaphore::new(0),
    });
    let protection = protection(&key_file());
    let broker = protection
        .install(
            Broker::builder()
                .listen("127.0.0.1:0".parse().expect("address"))
                .listener_name("devices")
                .storage(store.clone(), Durability::Acked)
                .sys_interval(None),
        )
        .build()
        .start()
        .await
        .expect("starts");
    let mut seen = observer(&broker, "s/#").await;
    let mut d = device(&broker, V5, "sensor-1").await;
    store.held.store(true, std::sync::atomic::Ordering::SeqCst);
    let key = sensor_key();
    d.send(Packet::Publish(Publish::new(
        topic("s/a"),
        PublishQoS::AtLeastOnce(pid(1)),
        sealed(&key, 1, 1, "s/a", b"m"),
    )))
    .await;
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), d.recv()).await;
    assert!(
        early.is_err(),
        "acknowledged before its mark was durable: {early:?}"
    );
    let early = tokio::time::timeout(std::time::Duration::from_millis(50), seen.recv()).await;
    assert!(early.is_err(), "delivered before its mark was durable");
    store.held.store(false, std::sync::atomic::Ordering::SeqCst);
    store.permits.add_permits(100);
    match d.recv().await {
        Some(Packet::PubAck(a)) => assert!(a.reason_code.is_success(), "{a:?}"),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(
        &within(seen.recv()).await.expect("delivered").payload[..],
        b"m"
    );
    broker.shutdown().await;
}

fn login(id: &str, user: &str, password: &str) -> Connect {
    let mut c = Connect::new(V5, id);
    c.username = Some(user.into());
    c.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    c
}

/// Issue 18 §2 "chosen by identity": with `DeviceName::Username` a device is who the
/// authenticator says it is, not the client identifier or user name it claims. A client
/// authenticated as `sensor-1` under any client id is protected; one whose client id is
/// `sensor-1` but authenticated as someone else is not (its payloads pass unchanged).
#[tokio::test]
async fn devices_chosen_by_authenticated_identity() {
    let users = roost::auth::StaticUsers::new()
        .with_user("sensor-1", "s-pass")
        .and_then(|u| u.with_user("other", "o-pass"))
        .expect("users");
    let protection = PayloadProtection::new(Arc::new(KeyFile::parse(&key_file()).expect("keys")))
        .device_name(roost::protect::DeviceName::Username);
    let broker = protection
        .install(
            Broker::builder()
                .listen("127.0.0.1:0".parse().expect("address"))
                .authenticator(Arc::new(users))
                .sys_interval(None),
        )
        .build()
        .start()
        .await
        .expect("starts");
    let to = broker.local_addrs()[0];
    let (mut seen, ack) = Raw::connect_to(to, login("observer", "other", "o-pass")).await;
    assert!(connack(ack).reason_code.is_success());
    seen.subscribe(1, "s/#", QoS::AtMostOnce).await;
    let key = sensor_key();
    let (mut device, ack) = Raw::connect_to(to, login("any-id", "sensor-1", "s-pass")).await;
    assert!(connack(ack).reason_code.is_success());
    assert!(
        puback(&mut device, 1, "s/a", sealed(&key, 1, 1, "s/a", b"opened"))
            .await
            .is_success()
    );
    assert_eq!(&seen.recv_publish().await.payload[..], b"opened");
    assert_eq!(
        puback(
            &mut device,
            2,
            "s/a",
            Bytes::from_static(b"plain from a device")
        )
        .await,
        ReasonCode::PayloadFormatInvalid,
        "the authenticated device must seal"
    );
    let (mut pretender, ack) = Raw::connect_to(to, login("sensor-1", "other", "o-pass")).await;
    assert!(connack(ack).reason_code.is_success());
    let envelope = sealed(&key, 1, 2, "s/b", b"x");
    assert!(puback(&mut pretender, 1, "s/b", envelope.clone())
        .await
        .is_success());
    assert_eq!(
        seen.recv_publish().await.payload,
        envelope,
        "not a device: passed on as sent, not opened"
    );
    assert_eq!(protection.last_inbound_seq("sensor-1"), 1);
    broker.shutdown().await;
}
