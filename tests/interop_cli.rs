//! Interoperability with real third-party clients run as processes: Mosquitto's
//! `mosquitto_pub`/`mosquitto_sub` (MQTT 3.1.1 and 5.0) and Eclipse Paho Python (3.1.1 and
//! 5.0).
//!
//! `.ci/run` installs them and sets `ROOST_INTEROP=1`, which makes a missing tool a failure.
//! Without that variable a missing tool skips its test with a message.

mod support;

use std::process::Stdio;

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
        assert!(
            std::env::var_os("ROOST_INTEROP").is_none(),
            "{tool} is required when ROOST_INTEROP is set"
        );
        eprintln!("skipped: {tool} is not installed");
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

async fn paho_round_trip(version: &str) {
    if !available("python3", &["-c", "import paho.mqtt.client"], true) {
        return;
    }
    let broker = start_broker().await;
    let port = addr(&broker).port().to_string();
    let out = within(
        Command::new("python3")
            .args(["-c", PAHO_SCRIPT, &port, version])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paho failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
