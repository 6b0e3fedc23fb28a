//! Issue 16: Roost and Mosquitto bridged, both ways round. §5: Mosquitto's own bridge
//! (`try_private true`, its default) connects at protocol level 0x84 (3.1.1 | 0x80); Roost
//! accepts it as a bridge: what the bridge sends is not sent back to it, and retain flags
//! reach it as published. §1: Roost's bridge connects to Mosquitto (3.1.1 with the bridge
//! bit, and 5.0) and forwards both ways with a topic remap, without echo. Needs `mosquitto` (the broker) and `mosquitto_pub`/`mosquitto_sub`; `.ci/run`
//! installs them and sets `ROOST_INTEROP=1`, which makes a missing one a failure.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use roost::bridge::{BridgeConfig, BridgeProtocol, BridgeTopic};
use roost::{Broker, BrokerHandle, ClientOptions, Deliveries, QoS};
use support::{skip_unless_optional, start_broker};
use tokio::process::{Child, Command};

/// The Mosquitto broker binary, if installed (Debian puts it in /usr/sbin).
fn mosquitto() -> Option<&'static str> {
    ["mosquitto", "/usr/sbin/mosquitto"].into_iter().find(|m| {
        std::process::Command::new(m)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

fn tools_present() -> Option<&'static str> {
    let clients = std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    match (mosquitto(), clients) {
        (Some(m), true) => Some(m),
        _ => {
            skip_unless_optional("mosquitto and mosquitto-clients");
            None
        }
    }
}

/// A free loopback port (bound and released; Mosquitto binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Mosquitto on its own port, bridging `bridge/#` both ways into the Roost broker at
/// `roost_port` with `protocol` (`mqttv311` with the bridge bit, or `mqttv50`).
async fn mosquitto_bridging_to(binary: &str, roost_port: u16, protocol: &str) -> (Child, u16) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("roost-bridge-in-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n\
             connection roost\naddress 127.0.0.1:{roost_port}\ntopic bridge/# both 1\n\
             try_private true\nbridge_protocol_version {protocol}\ncleansession true\n\
             restart_timeout 1\n{}",
            // MQTT 5.0 has no bridge marker: a v5 bridge is an ordinary client, and its
            // state notifications would be `$SYS` publishes, which Roost refuses without
            // an authorizer that allows them. 3.1.1 bridges keep Mosquitto's default.
            if protocol == "mqttv50" {
                "notifications false\n"
            } else {
                ""
            }
        ),
    )
    .expect("writes the configuration");
    (spawn_mosquitto(binary, &conf, port).await, port)
}

/// Mosquitto on its own port with nothing but an anonymous listener.
async fn plain_mosquitto(binary: &str) -> (Child, u16) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("roost-bridge-out-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .expect("writes the configuration");
    (spawn_mosquitto(binary, &conf, port).await, port)
}

/// Starts Mosquitto with `conf` and waits until it listens on `port`.
async fn spawn_mosquitto(binary: &str, conf: &std::path::Path, port: u16) -> Child {
    let child = Command::new(binary)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "mosquitto never listened on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// Publishes with `mosquitto_pub` to the Mosquitto broker on `port`.
async fn mosquitto_pub(port: u16, topic: &str, message: &str, retain: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", message]);
    if retain {
        cmd.arg("-r");
    }
    let status = tokio::time::timeout(Duration::from_secs(10), cmd.status())
        .await
        .expect("mosquitto_pub ends")
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub -p {port} -t {topic}");
}

/// The first message `mosquitto_sub` gets on `topic` from the Mosquitto broker on `port`
/// (a retained one, if there is one), within 10 s.
async fn mosquitto_sub_one(port: u16, topic: &str) -> Option<String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-C", "1", "-W", "10"])
        .output()
        .await
        .expect("mosquitto_sub runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits for the next message on `deliveries` whose topic is `topic`, for up to `wait`.
async fn next_on(deliveries: &mut Deliveries, topic: &str, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, deliveries.recv()).await {
            Ok(Some(m)) if m.topic.as_str() == topic => {
                return Some(String::from_utf8_lossy(&m.payload).into_owned())
            }
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
    None
}

/// Waits until Mosquitto's bridge forwards into Roost: publishes on Mosquitto until Roost's
/// subscriber sees it (the bridge connects and subscribes on its own schedule).
async fn wait_for_the_bridge(port: u16, deliveries: &mut Deliveries) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        mosquitto_pub(port, "bridge/ping", "ping", false).await;
        if next_on(deliveries, "bridge/ping", Duration::from_millis(500))
            .await
            .is_some()
        {
            return;
        }
    }
    panic!("Mosquitto's bridge never delivered into Roost");
}

async fn bridged_both_ways(broker: &BrokerHandle, binary: &str, protocol: &str) {
    let roost_port = broker.local_addrs()[0].port();
    let (sub, mut deliveries) = broker
        .client(ClientOptions::new(format!("watcher-{protocol}")))
        .await
        .expect("connects");
    sub.subscribe("bridge/#", QoS::AtLeastOnce)
        .await
        .expect("subscribes");
    let (mut mosq, port) = mosquitto_bridging_to(binary, roost_port, protocol).await;
    wait_for_the_bridge(port, &mut deliveries).await;

    // Mosquitto → Roost.
    mosquitto_pub(port, "bridge/in", "from mosquitto", false).await;
    assert_eq!(
        next_on(&mut deliveries, "bridge/in", Duration::from_secs(5)).await,
        Some("from mosquitto".to_string())
    );

    // Roost → Mosquitto, retained: it arrives retained on Mosquitto (Retain As Published)
    // and is not echoed back into Roost (No Local).
    let (publisher, _d) = broker
        .client(ClientOptions::new(format!("publisher-{protocol}")))
        .await
        .expect("connects");
    publisher
        .publish("bridge/out", "from roost", QoS::AtLeastOnce, true)
        .await
        .expect("published");
    assert_eq!(
        next_on(&mut deliveries, "bridge/out", Duration::from_secs(5)).await,
        Some("from roost".to_string()),
        "the local subscriber gets it once"
    );
    assert_eq!(
        mosquitto_sub_one(port, "bridge/out").await,
        Some("from roost".to_string()),
        "retained on Mosquitto: the bridge received the retain flag"
    );
    assert_eq!(
        next_on(&mut deliveries, "bridge/out", Duration::from_secs(2)).await,
        None,
        "echoed back through the bridge"
    );
    let _ = mosq.kill().await;
}

#[tokio::test]
async fn mosquittos_bridge_connects_at_level_0x84_without_echo_and_keeps_retain() {
    let Some(binary) = tools_present() else {
        return;
    };
    let broker = start_broker().await;
    bridged_both_ways(&broker, binary, "mqttv311").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn mosquittos_v5_bridge_works_without_echo() {
    let Some(binary) = tools_present() else {
        return;
    };
    let broker = start_broker().await;
    bridged_both_ways(&broker, binary, "mqttv50").await;
    broker.shutdown().await;
}

/// Roost's bridge to a Mosquitto broker: `roost/#` out (retained kept), `mq/#` in under
/// the local prefix `from-mq/`, and nothing echoes.
async fn roost_bridging_to_mosquitto(binary: &str, protocol: BridgeProtocol) {
    let (mut mosq, port) = plain_mosquitto(binary).await;
    let bridge = BridgeConfig::new("mosquitto", format!("127.0.0.1:{port}"))
        .protocol(protocol)
        .topic(BridgeTopic::parse("roost/# out 1").expect("rule"))
        .topic(BridgeTopic::parse("# in 1 from-mq/ mq/").expect("rule"))
        .backoff(Duration::from_millis(100), Duration::from_millis(500));
    let broker = Broker::builder()
        .bridge(bridge)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !broker.bridges()[0].connected {
        assert!(Instant::now() < deadline, "{:?}", broker.bridges());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (watcher, mut deliveries) = broker
        .client(ClientOptions::new("watcher"))
        .await
        .expect("connects");
    watcher
        .subscribe("#", QoS::AtLeastOnce)
        .await
        .expect("subscribes");

    // Roost → Mosquitto, retained.
    watcher
        .publish("roost/out", "from roost", QoS::AtLeastOnce, true)
        .await
        .expect("published");
    assert_eq!(
        mosquitto_sub_one(port, "roost/out").await,
        Some("from roost".to_string()),
        "retained on Mosquitto"
    );
    // Mosquitto → Roost, renamed.
    mosquitto_pub(port, "mq/cmd", "from mosquitto", false).await;
    assert_eq!(
        next_on(&mut deliveries, "from-mq/cmd", Duration::from_secs(5)).await,
        Some("from mosquitto".to_string())
    );
    // The local message came to the local watcher once, and never back.
    let mut seen = Vec::new();
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(500), deliveries.recv()).await
    {
        seen.push(m.topic.to_string());
    }
    assert!(
        !seen.iter().any(|t| t.starts_with("roost/")),
        "echoed: {seen:?}"
    );
    let status = broker.bridges().remove(0);
    assert_eq!(
        (status.messages_out, status.messages_in),
        (1, 1),
        "{status:?}"
    );
    broker.shutdown().await;
    let _ = mosq.kill().await;
}

#[tokio::test]
async fn roost_bridges_to_mosquitto_at_3_1_1_with_the_bridge_bit() {
    let Some(binary) = tools_present() else {
        return;
    };
    roost_bridging_to_mosquitto(binary, BridgeProtocol::V311).await;
}

#[tokio::test]
async fn roost_bridges_to_mosquitto_at_5_0() {
    let Some(binary) = tools_present() else {
        return;
    };
    roost_bridging_to_mosquitto(binary, BridgeProtocol::V5).await;
}
