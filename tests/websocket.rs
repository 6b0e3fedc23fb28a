//! MQTT over WebSocket: the `mqtt` subprotocol on a path, binary frames, packets that span
//! frames and frames that hold several packets (MQTT 3.1.1 / 5.0 section 6).

mod support;

use bytes::{Bytes, BytesMut};
use futures_sink::Sink;
use roost::codec::{decode, Connect, DecodeLimits, Packet, ProtocolVersion, PublishQoS};
use roost::{Broker, BrokerHandle, QoS};
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const V4: ProtocolVersion = ProtocolVersion::V311;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A broker with a TCP listener (first) and a WebSocket listener on `/mqtt` (second).
async fn ws_broker() -> BrokerHandle {
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .listen_ws("127.0.0.1:0".parse().expect("address"), "/mqtt")
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts")
}

async fn open(broker: &BrokerHandle, path: &str, subprotocol: Option<&str>) -> Result<Ws, String> {
    let url = format!("ws://{}{path}", broker.local_addrs()[1]);
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(p) = subprotocol {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(p).map_err(|e| e.to_string())?,
        );
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| e.to_string())?;
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    // MQTT-6.0.0-4: the server selects "mqtt".
    assert_eq!(
        chosen,
        Some("mqtt"),
        "the server selects the mqtt subprotocol"
    );
    Ok(ws)
}

fn bytes(p: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    p.encode(V4, &mut out).expect("encodes");
    out
}

async fn send(ws: &mut Ws, data: Vec<u8>) {
    use std::future::poll_fn;
    use std::pin::Pin;
    poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx))
        .await
        .expect("ready");
    Pin::new(&mut *ws)
        .start_send(Message::Binary(Bytes::from(data)))
        .expect("sends");
    poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx))
        .await
        .expect("flushes");
}

async fn recv(ws: &mut Ws, buf: &mut BytesMut) -> Packet {
    use futures_core::Stream;
    use std::future::poll_fn;
    use std::pin::Pin;
    loop {
        if let Some(p) = decode(buf, &DecodeLimits::new(V4)).expect("valid") {
            return p;
        }
        match within(poll_fn(|cx| Pin::new(&mut *ws).poll_next(cx))).await {
            Some(Ok(Message::Binary(data))) => buf.extend_from_slice(&data),
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn mqtt_over_websocket_with_split_and_joined_frames() {
    let broker = ws_broker().await;
    let mut ws = open(&broker, "/mqtt", Some("mqtt")).await.expect("upgrade");
    let mut buf = BytesMut::new();
    // CONNECT split across two frames.
    let connect = bytes(&Packet::Connect(Box::new(Connect::new(V4, "ws-client"))));
    let (a, b) = connect.split_at(5);
    send(&mut ws, a.to_vec()).await;
    send(&mut ws, b.to_vec()).await;
    assert!(
        matches!(recv(&mut ws, &mut buf).await, Packet::ConnAck(a) if a.reason_code.is_success())
    );
    // SUBSCRIBE and PINGREQ in one frame.
    let mut joined = bytes(&Packet::Subscribe(roost::codec::Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(
            filter("ws/#"),
            roost::codec::SubscriptionOptions::new(QoS::AtMostOnce),
        )],
    }));
    joined.extend_from_slice(&bytes(&Packet::PingReq));
    send(&mut ws, joined.to_vec()).await;
    assert!(matches!(recv(&mut ws, &mut buf).await, Packet::SubAck(_)));
    assert!(matches!(recv(&mut ws, &mut buf).await, Packet::PingResp));
    // A TCP client publishes; the WebSocket client receives it.
    let mut tcp = Raw::connect(&broker, V4, "tcp-pub").await;
    tcp.publish("ws/x", b"to the browser", PublishQoS::AtMostOnce, false)
        .await;
    match recv(&mut ws, &mut buf).await {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"to the browser"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn upgrade_needs_the_path_and_the_mqtt_subprotocol() {
    let broker = ws_broker().await;
    assert!(
        open(&broker, "/elsewhere", Some("mqtt")).await.is_err(),
        "wrong path"
    );
    assert!(
        open(&broker, "/mqtt", Some("chat")).await.is_err(),
        "MQTT-6.0.0-3: no mqtt subprotocol"
    );
    assert!(
        open(&broker, "/mqtt", Some("chat, mqtt")).await.is_ok(),
        "mqtt among others"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn text_frames_close_the_connection() {
    // MQTT-6.0.0-1: MQTT travels in binary frames; other data frames close the connection.
    use futures_core::Stream;
    use std::future::poll_fn;
    use std::pin::Pin;
    let broker = ws_broker().await;
    let mut ws = open(&broker, "/mqtt", Some("mqtt")).await.expect("upgrade");
    poll_fn(|cx| Pin::new(&mut ws).poll_ready(cx))
        .await
        .expect("ready");
    Pin::new(&mut ws)
        .start_send(Message::Text("hello".into()))
        .expect("sends");
    poll_fn(|cx| Pin::new(&mut ws).poll_flush(cx))
        .await
        .expect("flushes");
    loop {
        match within(poll_fn(|cx| Pin::new(&mut ws).poll_next(cx))).await {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
    broker.shutdown().await;
}

/// Issue 12 §2: WebSocket frame limits follow the listener's maximum packet size. A frame
/// header claiming 16 MB on a listener that takes 1 KiB packets closes the connection at
/// once, before anything is reserved for it or the connect timeout runs out; other
/// clients are served meanwhile.
#[tokio::test]
async fn oversized_websocket_frames_are_refused_on_their_header() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .listen_ws("127.0.0.1:0".parse().expect("address"), "/mqtt")
        .listener_max_packet_size(1024)
        .limits(roost::Limits::default().with_connect_timeout(std::time::Duration::from_secs(60)))
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let mut raw = tokio::net::TcpStream::connect(broker.local_addrs()[1])
        .await
        .expect("connects");
    raw.write_all(
        b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .await
    .expect("writes");
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        within(raw.read_exact(&mut byte)).await.expect("reads");
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"), "upgraded");
    // FIN + binary, masked, 64-bit length 16 MiB, a mask key, then only a few bytes.
    let mut frame = vec![0x82, 0xFF];
    frame.extend_from_slice(&(16u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4, 0x10, 0x20]);
    raw.write_all(&frame).await.expect("writes");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = within(raw.read_to_end(&mut rest)).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "closed on the header, not by a timeout"
    );
    // The broker is unharmed.
    Raw::connect(&broker, V4, "after").await;
    broker.shutdown().await;
}
