//! Shared test harness: a broker on 127.0.0.1:0, raw MQTT clients speaking bytes through
//! Roost's codec, rumqttc clients, and a timeout on every await.
#![allow(dead_code, unreachable_pub, missing_docs)] // each test file uses a different part of the harness

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use roost::codec::{
    decode, ConnAck, Connect, DecodeLimits, Packet, PacketId, ProtocolVersion, PubResponse,
    Publish, PublishQoS, Subscribe, SubscriptionOptions,
};
use roost::{Broker, BrokerHandle, Capabilities, Limits, QoS, TopicFilter, TopicName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub mod tls;

/// A log sink for one test: what the broker logs while the test's (current-thread) runtime
/// runs it.
#[derive(Clone, Default)]
pub struct LogBuf(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

impl LogBuf {
    /// Captures, without colours, what this thread logs at `filter` (an `EnvFilter`
    /// directive) until the guard is dropped.
    pub fn capture(filter: &str) -> (LogBuf, tracing::subscriber::DefaultGuard) {
        let logs = LogBuf::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).to_string()
    }
}

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// Whether the environment variable `var` makes optional tests mandatory: `1` yes; unset,
/// empty or `0` no; any other value stops the test (a typo must not turn a requirement
/// into a skip).
pub fn required(var: &str) -> bool {
    match std::env::var(var).as_deref() {
        Ok("1") => true,
        Ok("" | "0") | Err(std::env::VarError::NotPresent) => false,
        Ok(other) => panic!("{var} must be 1 (required) or 0/unset (optional), not {other:?}"),
        Err(e) => panic!("{var}: {e}"),
    }
}

/// For a test that needs a third-party tool which is missing: fails when `ROOST_INTEROP=1`
/// (CI), otherwise says why the test is skipped.
pub fn skip_unless_optional(tool: &str) {
    assert!(
        !required("ROOST_INTEROP"),
        "{tool} is required when ROOST_INTEROP=1"
    );
    eprintln!("skipped: {tool} is not installed");
}

/// Runs one of the repository's `scripts/` checks with `python3` and fails the test with
/// its output if it fails (skipped as [`skip_unless_optional`] says without `python3`).
pub fn script_check(script: &str, args: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("python3")
        .arg(format!("{root}/scripts/{script}"))
        .args(args)
        .output();
    let Ok(out) = out else {
        skip_unless_optional("python3");
        return;
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How soon the broker must close a connection after a protocol violation: well under
/// any timeout of its own (the connect timeout is 10 s, keep-alive 1.5 × Keep Alive).
pub const PROMPT: Duration = Duration::from_secs(2);

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("timed out waiting")
}

/// A broker with default limits on 127.0.0.1:0, without `$SYS` publishing.
pub async fn start_broker() -> BrokerHandle {
    start_broker_with(Limits::default()).await
}

/// A broker with `limits` on 127.0.0.1:0.
pub async fn start_broker_with(limits: Limits) -> BrokerHandle {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .limits(limits)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("broker starts")
}

/// A broker with default limits and `capabilities` on 127.0.0.1:0.
pub async fn start_broker_with_caps(capabilities: Capabilities) -> BrokerHandle {
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .capabilities(capabilities)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("broker starts")
}

pub fn addr(broker: &BrokerHandle) -> SocketAddr {
    broker.local_addrs()[0]
}

pub fn topic(s: &str) -> TopicName {
    TopicName::new(s).expect("valid topic")
}

pub fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).expect("valid filter")
}

pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

/// The CONNACK in `p`; fails the test on any other packet.
pub fn connack(p: Packet) -> ConnAck {
    match p {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A client that speaks raw MQTT over TCP, encoding and decoding with Roost's codec.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
}

impl Raw {
    pub async fn open(broker: &BrokerHandle, version: ProtocolVersion) -> Raw {
        Raw::open_addr(addr(broker), version).await
    }

    /// A connection to a broker known by its address only (another process).
    pub async fn open_addr(to: SocketAddr, version: ProtocolVersion) -> Raw {
        let stream = within(TcpStream::connect(to)).await.expect("connects");
        Raw {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// [`Raw::connect_with`] for a broker known by its address only.
    pub async fn connect_to(to: SocketAddr, connect: Connect) -> (Raw, Packet) {
        let mut raw = Raw::open_addr(to, connect.protocol).await;
        raw.send(Packet::Connect(Box::new(connect))).await;
        let ack = raw.recv().await.expect("CONNACK");
        (raw, ack)
    }

    /// Opens a connection and completes CONNECT/CONNACK with `connect`.
    pub async fn connect_with(broker: &BrokerHandle, connect: Connect) -> (Raw, Packet) {
        let mut raw = Raw::open(broker, connect.protocol).await;
        raw.send(Packet::Connect(Box::new(connect))).await;
        let ack = raw.recv().await.expect("CONNACK");
        (raw, ack)
    }

    /// A clean-session client named `id`, connected.
    pub async fn connect(broker: &BrokerHandle, version: ProtocolVersion, id: &str) -> Raw {
        let (raw, ack) = Raw::connect_with(broker, Connect::new(version, id)).await;
        match ack {
            Packet::ConnAck(a) => assert!(a.reason_code.is_success(), "refused: {a:?}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(self.version, &mut out).expect("encodes");
        self.send_bytes(&out).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes)).await.expect("writes");
    }

    /// The next packet, or `None` when the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        let limits = DecodeLimits::new(self.version);
        loop {
            if let Some(p) = decode(&mut self.buf, &limits).expect("broker sends valid packets") {
                return Some(p);
            }
            let n = within(self.stream.read_buf(&mut self.buf)).await.ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// Like [`Raw::closed`], but the broker must close within [`PROMPT`]: for protocol
    /// violations, which end the connection at once. Without this bound a broker that
    /// ignored the violation would pass once its connect or keep-alive timeout ran out.
    pub async fn closed_promptly(&mut self) -> Vec<Packet> {
        tokio::time::timeout(PROMPT, self.closed())
            .await
            .expect("the broker closes the connection at once")
    }

    /// Waits until the broker closes the connection; returns the packets it sent first.
    pub async fn closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        while let Some(p) = self.recv().await {
            seen.push(p);
        }
        seen
    }

    pub async fn subscribe(&mut self, id: u16, f: &str, qos: QoS) -> Packet {
        self.send(Packet::Subscribe(Subscribe {
            packet_id: pid(id),
            properties: Default::default(),
            filters: vec![(filter(f), SubscriptionOptions::new(qos))],
        }))
        .await;
        self.recv().await.expect("SUBACK")
    }

    pub async fn publish(
        &mut self,
        t: &str,
        payload: &'static [u8],
        qos: PublishQoS,
        retain: bool,
    ) {
        let mut p = Publish::new(topic(t), qos, payload);
        p.retain = retain;
        self.send(Packet::Publish(p)).await;
    }

    /// Receives a PUBLISH, acknowledging QoS 1 (PUBACK) and QoS 2 (PUBREC, then PUBREL →
    /// PUBCOMP) on the way.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// The next PUBLISH, acknowledged as a real client would with other packets in between:
    /// PUBACK for QoS 1, PUBREC for QoS 2, and PUBCOMP for any PUBREL met on the way.
    pub async fn next_message(&mut self) -> Publish {
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => {
                    match p.qos {
                        PublishQoS::AtMostOnce => {}
                        PublishQoS::AtLeastOnce(id) => {
                            self.send(Packet::PubAck(PubResponse::new(id))).await
                        }
                        PublishQoS::ExactlyOnce(id) => {
                            self.send(Packet::PubRec(PubResponse::new(id))).await
                        }
                    }
                    return p;
                }
                Some(Packet::PubRel(r)) => {
                    self.send(Packet::PubComp(PubResponse::new(r.packet_id)))
                        .await
                }
                other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
            }
        }
    }

    pub async fn ack(&mut self, p: &Publish) {
        match p.qos {
            PublishQoS::AtMostOnce => {}
            PublishQoS::AtLeastOnce(id) => self.send(Packet::PubAck(PubResponse::new(id))).await,
            PublishQoS::ExactlyOnce(id) => {
                self.send(Packet::PubRec(PubResponse::new(id))).await;
                match self.recv().await {
                    Some(Packet::PubRel(r)) => assert_eq!(r.packet_id, id),
                    other => panic!("expected PUBREL, got {other:?}"),
                }
                self.send(Packet::PubComp(PubResponse::new(id))).await;
            }
        }
    }

    /// Completes the publisher side of a QoS 1/2 publish: PUBACK, or PUBREC → PUBREL →
    /// PUBCOMP.
    pub async fn ack_publish(&mut self, qos: PublishQoS) {
        match qos {
            PublishQoS::AtMostOnce => {}
            PublishQoS::AtLeastOnce(id) => match self.recv().await {
                Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, id),
                other => panic!("expected PUBACK, got {other:?}"),
            },
            PublishQoS::ExactlyOnce(id) => {
                match self.recv().await {
                    Some(Packet::PubRec(r)) => assert_eq!(r.packet_id, id),
                    other => panic!("expected PUBREC, got {other:?}"),
                }
                self.send(Packet::PubRel(PubResponse::new(id))).await;
                match self.recv().await {
                    Some(Packet::PubComp(r)) => assert_eq!(r.packet_id, id),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
        }
    }

    /// The topics of every PUBLISH that arrives until a ping comes back with none,
    /// completing each QoS 1/2 flow as a client would (PUBACK, PUBREC, PUBCOMP).
    pub async fn drain_topics(&mut self) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let got = self.ping().await;
            if got.is_empty() {
                return seen;
            }
            for packet in got {
                let reply = match packet {
                    Packet::Publish(m) => {
                        seen.push(m.topic.to_string());
                        match m.qos {
                            PublishQoS::ExactlyOnce(id) => {
                                Some(Packet::PubRec(PubResponse::new(id)))
                            }
                            PublishQoS::AtLeastOnce(id) => {
                                Some(Packet::PubAck(PubResponse::new(id)))
                            }
                            PublishQoS::AtMostOnce => None,
                        }
                    }
                    Packet::PubRel(r) => Some(Packet::PubComp(PubResponse::new(r.packet_id))),
                    _ => None,
                };
                if let Some(reply) = reply {
                    self.send(reply).await;
                }
            }
        }
    }

    /// A round trip through the broker: everything sent before has been processed. Returns
    /// the packets that arrived before the PINGRESP.
    pub async fn ping(&mut self) -> Vec<Packet> {
        self.send(Packet::PingReq).await;
        let mut seen = Vec::new();
        loop {
            match self.recv().await {
                Some(Packet::PingResp) => return seen,
                Some(p) => seen.push(p),
                None => panic!("closed while waiting for PINGRESP"),
            }
        }
    }
}

/// A directory under the system's temporary one, removed (with its contents) on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("roost-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example broker binary, built by `cargo test` next to the test binaries.
pub fn example_broker() -> std::path::PathBuf {
    example("broker")
}

/// The binary of example `name`, built by `cargo test` next to the test binaries.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    // target/<profile>/deps/<test> → target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    dir.join("examples").join(name)
}

/// Runs example `name` to its end (at most 60 s) in `dir` (the current directory if
/// `None`), with warnings-only logging; asserts it succeeded and returns its output.
pub async fn run_example(name: &str, dir: Option<&std::path::Path>) -> String {
    let mut command = tokio::process::Command::new(example(name));
    command.env("RUST_LOG", "warn");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the example ends")
        .expect("the example runs (cargo test builds it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    text
}

/// Starts the example broker with `args` on a loopback port of its choosing; returns it
/// with the port, read from its log ("listening … addr=127.0.0.1:PORT"). A port picked
/// here and handed over could be taken by another test's process in between.
pub async fn start_example_broker(args: &[&str]) -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(example_broker())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
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
    // ROOST_TEST_LOG=1 shows it.
    let show = std::env::var_os("ROOST_TEST_LOG").is_some();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if show {
                eprintln!("broker: {line}");
            }
        }
    });
    (child, port)
}

/// A plain HTTP/1.1 request on loopback (`method` `path`, no body): the status code and the
/// body of the answer.
pub async fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut stream = within(TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("http connects");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    within(stream.write_all(request.as_bytes()))
        .await
        .expect("writes");
    let mut response = Vec::new();
    within(stream.read_to_end(&mut response))
        .await
        .expect("reads");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
