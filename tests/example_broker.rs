//! The example broker (`cargo run --example broker`) as users run it: a child process of
//! the binary `cargo test` builds, configured by flags and by a TOML file, checked through
//! a real socket.

mod support;

use std::time::Duration;
use support::example_broker;

use bytes::BytesMut;
use roost::codec::{decode, Connect, DecodeLimits, Packet, ProtocolVersion};
use roost::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Starts the example broker with `args` (no storage) on a loopback port of its choosing.
async fn start(args: &[&str]) -> (tokio::process::Child, u16) {
    let mut all = vec!["--durability", "none"];
    all.extend_from_slice(args);
    support::start_example_broker(&all).await
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
    assert_eq!(
        a.properties.server_keep_alive,
        Some(30),
        "MQTT-3.2.2-22 (v5)"
    );
    assert_eq!(a.properties.receive_maximum.map(|n| n.get()), Some(10));
    assert_eq!(a.properties.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(a.properties.topic_alias_maximum, Some(5));
    assert_eq!(a.properties.retain_available, Some(false));
    let _ = child.kill().await;

    let dir = std::env::temp_dir().join(format!("roost-example-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("roost.toml");
    std::fs::write(
        &config,
        "[capabilities]\nmax_keep_alive = 45\nreceive_maximum = 7\n",
    )
    .expect("writes");
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

/// Runs the example broker to completion with `args` and `env`; its status, standard output
/// and standard error.
async fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(example_broker())
            .args(args)
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ends within 20 s")
    .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 15 §6–7: a configuration error names the key, the line and the reason, and the
/// program exits with status 2 before binding anything; `--check-config` says whether a
/// configuration would start; `--print-default-config` writes a file that checks clean.
#[tokio::test]
async fn configuration_errors_name_the_key_and_check_config_and_the_default_file_work() {
    let dir = std::env::temp_dir().join(format!("roost-example-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "listen = [\"127.0.0.1:0\"]\n\n[limits]\nmax_inflihgt = 8\n",
    )
    .expect("writes");
    let bad = bad.to_str().expect("utf-8");
    for args in [
        &["--config", bad][..],
        &["--config", bad, "--check-config"][..],
    ] {
        let (status, out, err) = run_to_end(args, &[]).await;
        assert_eq!(status, Some(2), "{out}{err}");
        assert!(
            err.contains("line 4") && err.contains("max_inflihgt"),
            "{err}"
        );
        assert!(!out.contains("listening"), "nothing bound: {out}");
    }
    let (status, _, err) =
        run_to_end(&["--tls-listen", "127.0.0.1:0", "--check-config"], &[]).await;
    assert_eq!(status, Some(2));
    assert!(err.contains("need cert and key"), "{err}");
    let (status, _, err) = run_to_end(&["--max-inflight", "lots"], &[]).await;
    assert_eq!(status, Some(2));
    assert!(
        err.contains("--max-inflight 'lots': not a whole number"),
        "{err}"
    );
    let (status, _, err) = run_to_end(&["--max-inflihgt", "8"], &[]).await;
    assert_eq!(status, Some(2));
    assert!(err.contains("--max-inflight"), "a suggestion: {err}");
    // The environment sets a setting as its flag would.
    let (status, _, err) = run_to_end(&["--check-config"], &[("ROOST_MAX_INFLIGHT", "0")]).await;
    assert_eq!(status, Some(2));
    assert!(
        err.contains("limits.max_inflight: must be at least 1"),
        "{err}"
    );

    let (status, default_file, _) = run_to_end(&["--print-default-config"], &[]).await;
    assert_eq!(status, Some(0));
    assert!(
        default_file.contains("[limits]") && default_file.contains("max_packet_size = 1048576")
    );
    let file = dir.join("default.toml");
    std::fs::write(&file, &default_file).expect("writes");
    let (status, out, err) = run_to_end(
        &["--config", file.to_str().expect("utf-8"), "--check-config"],
        &[],
    )
    .await;
    assert_eq!(status, Some(0), "{err}");
    assert!(out.contains("configuration OK"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 15 §8: SIGHUP reads the file again and new connections get its limits and
/// capabilities (Receive Maximum here); open connections keep theirs.
#[tokio::test]
async fn sighup_applies_changed_limits_and_capabilities_to_new_connections() {
    let dir = std::env::temp_dir().join(format!("roost-example-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("roost.toml");
    std::fs::write(&config, "[capabilities]\nreceive_maximum = 7\n").expect("writes");
    let (mut child, port) = start(&["--config", config.to_str().expect("utf-8")]).await;
    assert_eq!(
        connack(port)
            .await
            .properties
            .receive_maximum
            .map(|n| n.get()),
        Some(7)
    );
    std::fs::write(&config, "[capabilities]\nreceive_maximum = 9\n").expect("writes");
    signal(&child, "HUP");
    let mut seen = None;
    for _ in 0..100 {
        seen = connack(port)
            .await
            .properties
            .receive_maximum
            .map(|n| n.get());
        if seen == Some(9) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen,
        Some(9),
        "the reloaded Receive Maximum reaches new connections"
    );
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `signal` (a `kill` name such as `TERM`) to the example broker this test started.
fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

fn login(id: &str, user: &str, password: &str) -> Connect {
    let mut c = Connect::new(V5, id);
    c.username = Some(user.into());
    c.password = Some(bytes::Bytes::copy_from_slice(password.as_bytes()));
    c
}

fn password_line(user: &str, password: &str) -> String {
    let hash = roost::auth::PasswordHash::new(password).expect("hashes");
    format!("{user}:{hash}\n")
}

/// README: SIGTERM stops the example broker cleanly, and MQTT 5 clients receive DISCONNECT
/// 0x8B (Server shutting down) first.
#[tokio::test]
async fn sigterm_stops_the_broker_with_disconnect_0x8b() {
    let (mut child, port) = start(&[]).await;
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (mut c, ack) = support::Raw::connect_to(to, Connect::new(V5, "stays")).await;
    assert!(support::connack(ack).reason_code.is_success());
    signal(&child, "TERM");
    let seen = c.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == roost::codec::ReasonCode::ServerShuttingDown),
        "{seen:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within 10 s")
        .expect("waits");
    assert!(status.success(), "clean exit: {status:?}");
}

/// README: with a password file, anonymous clients are refused (anonymous access is the
/// default only without one), and SIGHUP reloads the password and ACL files without
/// dropping connections; subscriptions the new ACL refuses are removed.
#[tokio::test]
async fn a_password_file_ends_anonymous_access_and_sighup_reloads_it_and_the_acl() {
    use roost::codec::{PublishQoS, ReasonCode};
    let dir = std::env::temp_dir().join(format!("roost-example-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let passwords = dir.join("passwd");
    let acl = dir.join("acl");
    std::fs::write(&passwords, password_line("alice", "a-pass")).expect("writes");
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite a/#\ntopic readwrite b/#\n",
    )
    .expect("writes");
    let (child, port) = start(&[
        "--password-file",
        passwords.to_str().expect("utf-8"),
        "--acl-file",
        acl.to_str().expect("utf-8"),
    ])
    .await;
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (_anon, ack) = support::Raw::connect_to(to, Connect::new(V5, "anon")).await;
    assert!(
        !support::connack(ack).reason_code.is_success(),
        "anonymous refused"
    );

    let (mut alice, ack) = support::Raw::connect_to(to, login("alice", "alice", "a-pass")).await;
    assert!(support::connack(ack).reason_code.is_success());
    alice.subscribe(1, "a/#", QoS::AtMostOnce).await;
    alice.subscribe(2, "b/#", QoS::AtMostOnce).await;

    // New files: bob may write b/#, alice keeps a/# only.
    let mut both = password_line("alice", "a-pass");
    both.push_str(&password_line("bob", "b-pass"));
    std::fs::write(&passwords, both).expect("writes");
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite a/#\nuser bob\ntopic write b/#\n",
    )
    .expect("writes");
    signal(&child, "HUP");
    // The reload is asynchronous: bob gets in once it happened.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut bob = loop {
        let (bob, ack) = support::Raw::connect_to(to, login("bob", "bob", "b-pass")).await;
        if support::connack(ack).reason_code.is_success() {
            break bob;
        }
        assert!(std::time::Instant::now() < deadline, "bob never admitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Alice is still connected and her a/# subscription works.
    alice
        .publish("a/x", b"still here", PublishQoS::AtMostOnce, false)
        .await;
    assert_eq!(&alice.recv_publish().await.payload[..], b"still here");
    // Her b/# subscription was removed: bob's message does not reach her.
    bob.publish(
        "b/x",
        b"for b",
        PublishQoS::AtLeastOnce(support::pid(1)),
        false,
    )
    .await;
    match bob.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::NoMatchingSubscribers),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert!(
        alice.ping().await.is_empty(),
        "b/# no longer delivers to alice"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--outbound-topic-aliases`: the broker's own aliases on PUBLISHes it sends, on by
/// default, off with 0 (issue 13 §4).
#[tokio::test]
async fn outbound_topic_aliases_flag() {
    use roost::codec::PublishQoS;
    for (args, aliased) in [
        (&[][..], true),
        (&["--outbound-topic-aliases", "0"][..], false),
    ] {
        let (_child, port) = start(args).await;
        let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut c = Connect::new(V5, "self");
        c.properties.topic_alias_maximum = Some(5);
        let (mut c, _) = support::Raw::connect_to(to, c).await;
        c.subscribe(1, "loop/back", QoS::AtMostOnce).await;
        for _ in 0..2 {
            c.publish("loop/back", b"x", PublishQoS::AtMostOnce, false)
                .await;
        }
        let first = c.recv_publish().await;
        let second = c.recv_publish().await;
        assert_eq!(first.properties.topic_alias.is_some(), aliased, "{args:?}");
        assert_eq!(second.topic.is_empty(), aliased, "{args:?}");
    }
}

/// Issue 17 §4: `--http-listen` serves `/metrics` (Prometheus text that a real parser
/// reads, with the broker's counters), `/healthz` and `/readyz`.
#[tokio::test]
async fn http_listener_serves_prometheus_metrics_and_health() {
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (_child, port) = start(&["--http-listen", &format!("127.0.0.1:{http}")]).await;
    // The listeners log before `start` returns; ready follows it (503 until then).
    support::within(async {
        while support::http(http, "GET", "/readyz").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(support::http(http, "GET", "/healthz").await.0, 200);
    assert_eq!(support::http(http, "GET", "/nothing").await.0, 404);
    // Some traffic: one CONNECT (connack() connects).
    assert!(connack(port).await.reason_code.is_success());
    let samples = support::within(async {
        loop {
            let (status, body) = support::http(http, "GET", "/metrics").await;
            assert_eq!(status, 200);
            let lines = body.lines().map(|l| Ok(l.to_string()));
            let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
            let connections = scrape
                .samples
                .iter()
                .find(|s| s.metric == "roost_connections_total")
                .map(|s| s.value.clone());
            if let Some(prometheus_parse::Value::Counter(n)) = connections {
                if n >= 1.0 {
                    return scrape.samples;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    for name in [
        "roost_clients_connected",
        "roost_sessions",
        "roost_messages_received_total",
    ] {
        assert!(samples.iter().any(|s| s.metric == name), "{name} missing");
    }
}

/// Issue 18 §4: the broker program's `[protect]` table turns payload protection on with a
/// key file, and SIGHUP reloads the file: a rotated key is taken, the removed one refused
/// (0x87), and a subscriber sees plaintext throughout.
#[tokio::test]
async fn protect_table_and_sighup_key_reload() {
    use roost::codec::{Publish, PublishQoS, ReasonCode};
    use roost::protect::envelope::{seal, Direction, Header};
    use roost::protect::{Algorithm, DeviceKey};
    let dir = std::env::temp_dir().join(format!("roost-example-protect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let keys = dir.join("devices.keys");
    let k1 = [1u8; 16];
    let k2 = [2u8; 32];
    let hex = |k: &[u8]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
    std::fs::write(&keys, format!("sensor-1 1 aes-128-gcm {}\n", hex(&k1))).expect("writes");
    let config = dir.join("roost.toml");
    std::fs::write(
        &config,
        format!(
            "[protect]\nkey_file = {:?}\n",
            keys.to_str().expect("utf-8")
        ),
    )
    .expect("writes");
    let (child, port) = start(&["--config", config.to_str().expect("utf-8")]).await;
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (mut obs, _) = support::Raw::connect_to(to, Connect::new(V5, "observer")).await;
    obs.subscribe(1, "s/#", QoS::AtMostOnce).await;
    let (mut dev, _) = support::Raw::connect_to(to, Connect::new(V5, "sensor-1")).await;
    let key1 = DeviceKey::new(Algorithm::Aes128Gcm, &k1).expect("key");
    let key2 = DeviceKey::new(Algorithm::Aes256Gcm, &k2).expect("key");
    let mut n = 0u16;
    let mut send = async |dev: &mut support::Raw, key: &DeviceKey, key_id: u8| {
        n += 1;
        let h = Header {
            key_id,
            seq: u64::from(n),
            nonce: [n as u8; 12],
        };
        let payload = seal(key, Direction::Up, &h, "s/t", b"warm").expect("seals");
        dev.send(Packet::Publish(Publish::new(
            support::topic("s/t"),
            PublishQoS::AtLeastOnce(support::pid(n)),
            payload,
        )))
        .await;
        match dev.recv().await {
            Some(Packet::PubAck(a)) => a.reason_code,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    };
    assert!(send(&mut dev, &key1, 1).await.is_success());
    assert_eq!(&obs.recv_publish().await.payload[..], b"warm");
    std::fs::write(&keys, format!("sensor-1 2 aes-256-gcm {}\n", hex(&k2))).expect("writes");
    signal(&child, "HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !send(&mut dev, &key2, 2).await.is_success() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key never took"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(&obs.recv_publish().await.payload[..], b"warm");
    assert_eq!(send(&mut dev, &key1, 1).await, ReasonCode::NotAuthorized);
    let _ = std::fs::remove_dir_all(&dir);
}
