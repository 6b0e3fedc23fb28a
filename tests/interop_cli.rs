//! Interoperability with real third-party clients run as processes: Mosquitto's
//! `mosquitto_pub`/`mosquitto_sub` (MQTT 3.1.1 and 5.0) and Eclipse Paho Python (3.1.1 and
//! 5.0).
//!
//! `.ci/run` installs them and sets `ROOST_INTEROP=1`, which makes a missing tool a failure.
//! Without that variable a missing tool skips its test with a message.

mod support;

use std::process::Stdio;
use std::sync::Arc;

use roost::codec::{ProtocolVersion, PublishQoS};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Whether `tool` runs; with `must_succeed`, whether `tool probe...` also exits with 0.
fn available(tool: &str, probe: &[&str], must_succeed: bool) -> bool {
    let found = std::process::Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success() || !must_succeed);
    if !found {
        skip_unless_optional(tool);
    }
    found
}

async fn mosquitto_round_trip(version: &str) {
    if !available("mosquitto_sub", &["--help"], false)
        || !available("mosquitto_pub", &["--help"], false)
    {
        return;
    }
    let broker = start_broker().await;
    let port = addr(&broker).port().to_string();
    // A retained message first: its arrival proves the subscription is in place.
    let mut raw = Raw::connect(&broker, ProtocolVersion::V311, "seed").await;
    raw.publish("cli/ready", b"ready", PublishQoS::AtLeastOnce(pid(1)), true)
        .await;
    raw.ping().await;
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            version,
            "-q",
            "2",
            "-v",
            "-C",
            "4",
        ])
        .args(["-t", "cli/#", "-i", &format!("msub-{version}")])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub starts");
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    assert_eq!(
        within(lines.next_line()).await.expect("reads").as_deref(),
        Some("cli/ready ready")
    );
    for (qos, text) in [("0", "zero"), ("1", "one"), ("2", "two")] {
        let status = within(
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", qos])
                .args(["-t", &format!("cli/{text}"), "-m", text])
                .status(),
        )
        .await
        .expect("mosquitto_pub runs");
        assert!(status.success(), "mosquitto_pub -q {qos} failed");
        let line = within(lines.next_line()).await.expect("reads");
        assert_eq!(line, Some(format!("cli/{text} {text}")));
    }
    assert!(within(sub.wait()).await.expect("exits").success());
    broker.shutdown().await;
}

#[tokio::test]
async fn mosquitto_clients_v311() {
    mosquitto_round_trip("mqttv311").await;
}

#[tokio::test]
async fn mosquitto_clients_v5() {
    mosquitto_round_trip("mqttv5").await;
}

const PAHO_SCRIPT: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt
port, version = int(sys.argv[1]), sys.argv[2]
proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-" + version, protocol=proto)
got, subscribed = [], threading.Event()
done = threading.Event()
def on_connect(client, userdata, flags, reason, properties):
    client.subscribe("paho/#", qos=2)
def on_subscribe(client, userdata, mid, reasons, properties):
    subscribed.set()
def on_message(client, userdata, msg):
    got.append((msg.topic, msg.payload.decode(), msg.qos))
    if len(got) == 3:
        done.set()
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port)
c.loop_start()
assert subscribed.wait(10), "no SUBACK"
for q in (0, 1, 2):
    c.publish("paho/q%d" % q, "m%d" % q, qos=q).wait_for_publish(10)
assert done.wait(10), "got %r" % got
c.disconnect()
c.loop_stop()
print(sorted(got))
"#;

/// Paho Python 2.x importable (1.x, as some distributions package it, has another
/// callback API, and the scripts here are written for 2.x).
fn paho_available() -> bool {
    const PROBE: &str = "import sys, paho.mqtt; \
        sys.exit(0 if int(paho.mqtt.__version__.split('.')[0]) >= 2 else 1)";
    let found = std::process::Command::new("python3")
        .args(["-c", PROBE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip_unless_optional("paho-mqtt >= 2 for python3");
    }
    found
}

/// Runs a client program to its end (bounded by `within`); its standard output if it
/// succeeded, else the test fails with what it printed.
async fn run_client(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = within(Command::new(program).args(args).kill_on_drop(true).output())
        .await
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn paho_round_trip(version: &str) {
    if !paho_available() {
        return;
    }
    let broker = start_broker().await;
    let port = addr(&broker).port().to_string();
    let stdout = run_client(
        "python3",
        &[
            "-c".as_ref(),
            PAHO_SCRIPT.as_ref(),
            port.as_ref(),
            version.as_ref(),
        ],
    )
    .await;
    assert_eq!(
        stdout.trim(),
        "[('paho/q0', 'm0', 0), ('paho/q1', 'm1', 1), ('paho/q2', 'm2', 2)]"
    );
    assert_eq!(broker.metrics().messages_received, 3);
    broker.shutdown().await;
}

#[tokio::test]
async fn paho_python_v311() {
    paho_round_trip("4").await;
}

#[tokio::test]
async fn paho_python_v5() {
    paho_round_trip("5").await;
}

/// MQTT 5.0 through Paho Python, whose codec and session logic are not Roost's: CONNACK
/// properties (v5 §3.2.2.3), SUBACK 0x9E for a shared subscription when they are
/// off, every forwarded PUBLISH property (MQTT-3.3.2-4 (v5), MQTT-3.3.2-15 (v5),
/// MQTT-3.3.2-16 (v5), MQTT-3.3.2-17 (v5), MQTT-3.3.2-18 (v5), MQTT-3.3.2-20 (v5), expiry as
/// what is left, MQTT-3.3.2-6 (v5)), the Subscription Identifier (MQTT-3.3.4-3 (v5)), an
/// inbound Topic Alias (MQTT-3.3.2-12 (v5)), PUBACK
/// 0x10 when nobody subscribes, a session kept across a reconnect (MQTT-3.2.2-3 (v5)), and a
/// will sent after its Will Delay Interval (MQTT-3.1.3-9 (v5)). Paho sets no Topic Alias
/// Maximum, so no alias may reach it (MQTT-3.1.2-27 (v5)): it would read an empty topic.
#[tokio::test]
async fn paho_python_v5_properties_reason_codes_sessions_and_wills() {
    if !paho_available() {
        return;
    }
    let broker =
        start_broker_with_caps(roost::Capabilities::default().with_shared_subscriptions(false))
            .await;
    let port = addr(&broker).port().to_string();
    let script = include_str!("interop/paho_v5.py");
    let stdout = run_client("python3", &["-c".as_ref(), script.as_ref(), port.as_ref()]).await;
    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
            .to_owned()
    };
    let connack = line("sub_connack");
    for want in [
        "\"reason\": 0",
        "\"session_present\": false",
        "\"SharedSubscriptionAvailable\": 0",
        "\"TopicAliasMaximum\": 64",
        "\"ReceiveMaximum\": 1024",
    ] {
        assert!(connack.contains(want), "{want} in {connack}");
    }
    assert_eq!(line("subacks"), "[[1], [158]]", "granted QoS 1, then 0x9E");
    assert_eq!(
        line("puback_reasons"),
        "[0, 16]",
        "success, no matching subscribers"
    );
    assert!(line("sub_reconnect").contains("\"session_present\": true"));
    let messages = line("messages");
    for want in [
        "\"topic\": \"p5/data\"",
        "\"ContentType\": \"application/json\"",
        "\"CorrelationData\": \"0102\"",
        "\"MessageExpiryInterval\": 600",
        "\"PayloadFormatIndicator\": 1",
        "\"ResponseTopic\": \"p5/reply\"",
        "\"SubscriptionIdentifier\": [42]",
        "\"UserProperty\": [[\"z\", \"1\"], [\"a\", \"2\"]]",
        "\"payload\": \"queued\"",
    ] {
        assert!(messages.contains(want), "{want} in {messages}");
    }
    assert!(
        !messages.contains("\"topic\": \"\""),
        "an aliased topic reached Paho"
    );
    assert_eq!(
        line("will"),
        "{\"after_delay\": true, \"payload\": \"gone\", \"topic\": \"p5/will\"}"
    );
    broker.shutdown().await;
}

/// MQTT 5.0 through MQTT.js (Node): topic aliases both ways, as MQTT.js assigns them on
/// its PUBLISHes and resolves the broker's (§3.3.2.3.4; MQTT-3.1.2-26 (v5): within its
/// maximum of 3, with four topics taking turns), a Subscription Identifier
/// (MQTT-3.3.4-3 (v5)), user properties in order (MQTT-3.3.2-17 (v5), MQTT-3.3.2-18 (v5))
/// and PUBACK 0x10. `.ci/run` installs it with
/// `npm ci --prefix tests/interop/mqttjs`.
#[tokio::test]
async fn mqtt_js_v5_topic_aliases_both_ways() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/mqttjs");
    let installed = dir.join("node_modules/mqtt/package.json").exists()
        && std::process::Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !installed {
        skip_unless_optional("node and MQTT.js (npm ci --prefix tests/interop/mqttjs)");
        return;
    }
    let broker = start_broker().await;
    let port = addr(&broker).port().to_string();
    let script = dir.join("v5.js");
    let stdout = run_client("node", &[script.as_os_str(), port.as_ref()]).await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "sub_connack {\"reason\":0,\"topic_alias_maximum\":64}",
            "granted [1]",
            "puback_reasons [0,16]",
            "topics_resolved true",
            "aliased 8",
            "sids [\"9\"]",
            "user_properties true",
        ]
    );
    broker.shutdown().await;
}

/// Writes a CA, a server certificate for 127.0.0.1 and a client certificate (all PEM) into
/// `dir`; returns the broker's TLS configuration.
fn write_pki(dir: &std::path::Path, client_ca: bool) -> std::sync::Arc<roost::TlsConfig> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "interop CA");
    let ca_pem = ca_params.self_signed(&ca_key).expect("ca").pem();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let issue = |sans: Vec<String>, cn: &str| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        (
            p.signed_by(&key, &issuer).expect("signed").pem(),
            key.serialize_pem(),
        )
    };
    let (server_cert, server_key) = issue(vec!["127.0.0.1".into(), "localhost".into()], "server");
    let (client_cert, client_key) = issue(vec!["client.example".into()], "cli-client");
    std::fs::create_dir_all(dir).expect("dir");
    for (name, body) in [
        ("ca.pem", &ca_pem),
        ("client.pem", &client_cert),
        ("client.key", &client_key),
    ] {
        std::fs::write(dir.join(name), body).expect("write");
    }
    let ca = client_ca.then_some(ca_pem.as_bytes());
    roost::TlsConfig::from_pem(server_cert.as_bytes(), server_key.as_bytes(), ca).expect("tls")
}

#[tokio::test]
async fn mosquitto_clients_over_tls_and_mutual_tls() {
    if !available("mosquitto_sub", &["--help"], false)
        || !available("mosquitto_pub", &["--help"], false)
    {
        return;
    }
    for mutual in [false, true] {
        let dir =
            std::env::temp_dir().join(format!("roost-cli-tls-{}-{mutual}", std::process::id()));
        let tls = write_pki(&dir, mutual);
        let mut builder = roost::Broker::builder()
            .listen_tls("127.0.0.1:0".parse().expect("address"), tls)
            .sys_interval(None);
        if mutual {
            // A client CA turns anonymous access off: the certificate is the login.
            builder = builder.authenticator(std::sync::Arc::new(
                roost::auth::CertificateIdentity::default(),
            ));
        }
        let broker = builder.build().start().await.expect("starts");
        let port = addr(&broker).port().to_string();
        let ca = dir.join("ca.pem");
        let mut common = vec![
            "-h".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.clone(),
        ];
        common.extend(["--cafile".to_string(), ca.display().to_string()]);
        let mut with_cert = common.clone();
        with_cert.extend([
            "--cert".to_string(),
            dir.join("client.pem").display().to_string(),
            "--key".to_string(),
            dir.join("client.key").display().to_string(),
        ]);
        let args = if mutual { &with_cert } else { &common };
        // A retained message over TLS, read back over TLS.
        let status = within(
            Command::new("mosquitto_pub")
                .args(args)
                .args(["-t", "tls/state", "-m", "encrypted", "-r", "-q", "1"])
                .status(),
        )
        .await
        .expect("runs");
        assert!(
            status.success(),
            "mosquitto_pub over TLS (mutual: {mutual})"
        );
        let out = within(
            Command::new("mosquitto_sub")
                .args(args)
                .args(["-t", "tls/state", "-C", "1", "-W", "5"])
                .output(),
        )
        .await
        .expect("runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "encrypted");
        if mutual {
            // Without a client certificate: refused.
            let refused = within(
                Command::new("mosquitto_pub")
                    .args(&common)
                    .args(["-t", "tls/x", "-m", "no cert"])
                    .stderr(Stdio::null())
                    .status(),
            )
            .await
            .expect("runs");
            assert!(
                !refused.success(),
                "a client without a certificate must be refused"
            );
        }
        broker.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

const PAHO_WS_SCRIPT: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt
port, ca = int(sys.argv[1]), sys.argv[2]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws", transport="websockets")
c.ws_set_options(path="/mqtt")
if ca:
    c.tls_set(ca_certs=ca)
got, subscribed = [], threading.Event()
done = threading.Event()
c.on_connect = lambda cl, u, f, r, p: cl.subscribe("ws/#", qos=1)
c.on_subscribe = lambda cl, u, m, r, p: subscribed.set()
def on_message(cl, u, msg):
    got.append(msg.payload.decode()); done.set()
c.on_message = on_message
c.connect("127.0.0.1", port)
c.loop_start()
assert subscribed.wait(10), "no SUBACK"
c.publish("ws/echo", "over websocket", qos=1).wait_for_publish(10)
assert done.wait(10), "nothing received"
c.disconnect(); c.loop_stop()
print(got[0])
"#;

/// Paho over WebSocket, then over WebSocket in TLS (WSS) with a certificate the client
/// checks against its CA.
#[tokio::test]
async fn paho_python_over_websocket_and_wss() {
    if !paho_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("roost-wss-{}", std::process::id()));
    let tls = write_pki(&dir, false);
    for secure in [false, true] {
        let any = "127.0.0.1:0".parse().expect("address");
        let builder = roost::Broker::builder().sys_interval(None);
        let builder = if secure {
            builder.listen_wss(any, Arc::clone(&tls), "/mqtt")
        } else {
            builder.listen_ws(any, "/mqtt")
        };
        let broker = builder.build().start().await.expect("starts");
        let port = addr(&broker).port().to_string();
        let ca = if secure {
            dir.join("ca.pem").to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let args = [
            "-c".as_ref(),
            PAHO_WS_SCRIPT.as_ref(),
            port.as_ref(),
            ca.as_ref(),
        ];
        let stdout = run_client("python3", &args).await;
        assert_eq!(stdout.trim(), "over websocket", "TLS: {secure}");
        if secure {
            assert_eq!(broker.metrics().connections_total, 1);
        }
        broker.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 17 §1: `BrokerHandle::disconnect_client` as a Paho v5 client sees it: DISCONNECT
/// with reason code 0x98 Administrative action.
#[tokio::test]
async fn paho_v5_client_sees_an_administrative_kick_as_0x98() {
    if !paho_available() {
        return;
    }
    const SCRIPT: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt
port = int(sys.argv[1])
done, got = threading.Event(), {}
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-kick", protocol=mqtt.MQTTv5)
def on_disconnect(client, userdata, flags, reason, properties):
    got["reason"] = reason.value
    done.set()
c.on_disconnect = on_disconnect
c.connect("127.0.0.1", port)
c.loop_start()
assert done.wait(10), "not disconnected"
c.loop_stop()
print("reason", got["reason"])
"#;
    let broker = start_broker().await;
    let port = addr(&broker).port().to_string();
    let child = Command::new("python3")
        .args(["-c", SCRIPT, &port])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    within(async {
        while !broker.session("paho-kick").is_some_and(|s| s.connected) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(broker.disconnect_client("paho-kick"));
    let out = within(child.wait_with_output())
        .await
        .expect("python3 ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.trim(), "reason 152");
    broker.shutdown().await;
}
