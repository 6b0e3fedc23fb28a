//! The example broker (`cargo run --example broker`) as users run it: a child process of
//! the binary `cargo test` builds, configured by flags and by a TOML file, checked through
//! a real socket.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::BytesMut;
use roost::codec::{decode, Connect, DecodeLimits, Packet, ProtocolVersion};
use roost::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// The example broker binary, built by `cargo test` next to the test binaries.
fn example_broker() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    // target/<profile>/deps/<test> → target/<profile>/examples/broker
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    dir.join("examples").join("broker")
}

/// Starts the example broker with `args` on a loopback port of its choosing; returns it
/// with the port, read from its log ("listening … addr=127.0.0.1:PORT"). A port picked
/// here and handed over could be taken by another test's process in between.
async fn start(args: &[&str]) -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(example_broker())
        .args(["--listen", "127.0.0.1:0", "--durability", "none"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the example broker starts (cargo test builds it)");
    // It logs to standard output.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let port = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if !line.contains("listening") {
                continue;
            }
            let port = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr=127.0.0.1:"))
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(port) = port {
                return port;
            }
        }
        panic!("the broker ended before listening");
    })
    .await
    .expect("broker up within 20 s");
    // Keep reading its log, or a full pipe would stall it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

/// Connects with MQTT 5 asking for Keep Alive 600 s; returns the CONNACK.
async fn connack(port: u16) -> roost::codec::ConnAck {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    let mut c = Connect::new(V5, "example-check");
    c.keep_alive = 600;
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(c))
        .encode(V5, &mut out)
        .expect("encodes");
    stream.write_all(&out).await.expect("writes");
    let mut buf = BytesMut::new();
    loop {
        if let Some(p) = decode(&mut buf, &DecodeLimits::new(V5)).expect("valid") {
            match p {
                Packet::ConnAck(a) => return a,
                other => panic!("expected CONNACK, got {other:?}"),
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut buf))
            .await
            .expect("answers")
            .expect("reads");
        assert!(n > 0, "closed");
    }
}

/// Issue 13 §6: the capabilities a v5 CONNACK advertises can be set by an operator, from
/// the command line and from the config file, and the broker advertises what was set.
#[tokio::test]
async fn capabilities_from_flags_and_config_file_reach_the_connack() {
    let (mut child, port) = start(&[
        "--max-keep-alive",
        "30",
        "--receive-maximum",
        "10",
        "--maximum-qos",
        "1",
        "--topic-alias-maximum",
        "5",
        "--retain-available",
        "false",
    ])
    .await;
    let a = connack(port).await;
    assert!(a.reason_code.is_success(), "{a:?}");
    assert_eq!(a.properties.server_keep_alive, Some(30), "MQTT-3.2.2-21");
    assert_eq!(a.properties.receive_maximum.map(|n| n.get()), Some(10));
    assert_eq!(a.properties.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(a.properties.topic_alias_maximum, Some(5));
    assert_eq!(a.properties.retain_available, Some(false));
    let _ = child.kill().await;

    let dir = std::env::temp_dir().join(format!("roost-example-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("roost.toml");
    std::fs::write(&config, "max_keep_alive = 45\nreceive_maximum = 7\n").expect("writes");
    let (mut child, port) = start(&["--config", config.to_str().expect("utf-8")]).await;
    let a = connack(port).await;
    assert_eq!(a.properties.server_keep_alive, Some(45));
    assert_eq!(a.properties.receive_maximum.map(|n| n.get()), Some(7));
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A value out of range is refused at start with a message, not silently changed.
#[tokio::test]
async fn a_bad_capability_stops_the_start() {
    let out = tokio::process::Command::new(example_broker())
        .args(["--receive-maximum", "0"])
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("receive_maximum"), "{text}");
}
