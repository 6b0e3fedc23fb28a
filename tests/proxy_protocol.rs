//! PROXY protocol (versions 1 and 2) on a TCP listener: the address a load balancer reports
//! is the one authenticators see; a connection without a valid header is closed.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use parking_lot::Mutex;
use roost::codec::{Connect, Packet, ProtocolVersion};
use roost::plugin::{AuthOutcome, Authenticator, ConnectInfo, Identity};
use roost::{Broker, BrokerHandle, Limits};
use support::*;
use tokio::io::AsyncWriteExt;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Lets everyone in and remembers the peer address each client was seen from.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, Option<SocketAddr>)>>);

#[async_trait]
impl Authenticator for Recorder {
    async fn authenticate(&self, client: &ConnectInfo) -> AuthOutcome {
        self.0
            .lock()
            .push((client.client_id.to_string(), client.peer));
        AuthOutcome::Allow(Identity::user("anyone"), None)
    }
}

const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

async fn proxied_broker(recorder: Arc<Recorder>) -> BrokerHandle {
    // Longer than PROMPT: a rejection must be quicker than this deadline to pass as one.
    let limits = Limits::default().with_handshake_timeout(HANDSHAKE_TIMEOUT);
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .proxy_protocol(true)
        .limits(limits)
        .authenticator(recorder)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts")
}

fn v2_ipv4(command: u8, src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(0x11); // AF_INET, STREAM
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&1883u16.to_be_bytes());
    h
}

/// Sends `header` (in pieces of `chunk` bytes), then CONNECT. Write errors are ignored: a
/// broker that rejects the header closes the socket, possibly resetting it.
async fn connect_behind(broker: &BrokerHandle, id: &str, header: &[u8], chunk: usize) -> Raw {
    let mut raw = Raw::open(broker, V5).await;
    for piece in header.chunks(chunk.max(1)) {
        let _ = within(raw.stream.write_all(piece)).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(Connect::new(V5, id)))
        .encode(V5, &mut out)
        .expect("encodes");
    let _ = within(raw.stream.write_all(&out)).await;
    raw
}

fn seen(recorder: &Recorder, id: &str) -> Option<SocketAddr> {
    recorder
        .0
        .lock()
        .iter()
        .find(|(c, _)| c == id)
        .and_then(|(_, a)| *a)
}

#[tokio::test]
async fn version_1_header_sets_the_client_address() {
    let recorder = Arc::new(Recorder::default());
    let broker = proxied_broker(Arc::clone(&recorder)).await;
    let header = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883\r\n";
    let mut raw = connect_behind(&broker, "v1", header, header.len()).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(a)) if a.reason_code.is_success()));
    assert_eq!(
        seen(&recorder, "v1"),
        Some("192.0.2.7:56324".parse().expect("addr"))
    );
    // The connection is ordinary MQTT after the header.
    assert!(raw.ping().await.is_empty(), "only PINGRESP arrives");
    broker.shutdown().await;
}

#[tokio::test]
async fn version_2_header_split_across_segments() {
    let recorder = Arc::new(Recorder::default());
    let broker = proxied_broker(Arc::clone(&recorder)).await;
    let header = v2_ipv4(1, [203, 0, 113, 9], 40000);
    let mut raw = connect_behind(&broker, "v2", &header, 7).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(a)) if a.reason_code.is_success()));
    assert_eq!(
        seen(&recorder, "v2"),
        Some("203.0.113.9:40000".parse().expect("addr"))
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn local_command_keeps_the_socket_address() {
    let recorder = Arc::new(Recorder::default());
    let broker = proxied_broker(Arc::clone(&recorder)).await;
    let header = v2_ipv4(0, [203, 0, 113, 9], 40000);
    let mut raw = connect_behind(&broker, "health", &header, header.len()).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(_))));
    let addr = seen(&recorder, "health").expect("address recorded");
    assert!(addr.ip().is_loopback(), "{addr}");
    broker.shutdown().await;
}

#[tokio::test]
async fn missing_or_bad_header_closes_the_connection() {
    let recorder = Arc::new(Recorder::default());
    let broker = proxied_broker(Arc::clone(&recorder)).await;
    // Plain MQTT where the header should be.
    let mut plain = connect_behind(&broker, "plain", b"", 1).await;
    assert!(plain.closed_promptly().await.is_empty());
    // A garbled version 1 line.
    let mut garbled = connect_behind(&broker, "garbled", b"PROXY TCP4 nonsense\r\n", 64).await;
    assert!(garbled.closed_promptly().await.is_empty());
    // A version 2 header that claims far more than it sends.
    let mut huge = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
    let mut claims = connect_behind(&broker, "claims", &huge, huge.len()).await;
    assert!(claims.closed_promptly().await.is_empty());
    // Nothing at all: closed at the handshake deadline, not before.
    let opened = std::time::Instant::now();
    let mut silent = Raw::open(&broker, V5).await;
    assert!(silent.closed().await.is_empty());
    assert!(opened.elapsed() >= HANDSHAKE_TIMEOUT - std::time::Duration::from_millis(100));
    assert!(
        recorder.0.lock().is_empty(),
        "no client got as far as authentication"
    );
    broker.shutdown().await;
}
