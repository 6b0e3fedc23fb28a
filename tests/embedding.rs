//! What an application embedding the broker relies on (issue 15 §4): the broker stops when
//! the last handle goes (unless detached), `shutdown` waits for a client that stopped
//! reading no longer than `Limits::close_flush_timeout`, and an in-process client learns
//! whether its session was resumed.

mod support;

use std::time::{Duration, Instant};

use roost::codec::{Connect, Packet, ProtocolVersion};
use roost::{ClientOptions, Limits, QoS};
use support::{start_broker_with, Raw};
use tokio::net::TcpStream;

/// True once nothing accepts connections on `addr` any more (polled for up to 10 s).
async fn stops_listening(addr: std::net::SocketAddr) -> bool {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// CONNECT on a fresh connection to `addr` gets a CONNACK.
async fn serves(addr: std::net::SocketAddr) -> bool {
    let mut raw = Raw::open_addr(addr, ProtocolVersion::V311).await;
    raw.send(Packet::Connect(Box::new(Connect::new(
        ProtocolVersion::V311,
        "probe",
    ))))
    .await;
    matches!(raw.recv().await, Some(Packet::ConnAck(_)))
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_broker_and_detach_keeps_it() {
    let broker = start_broker_with(Limits::default()).await;
    let addr = broker.local_addrs()[0];
    let clone = broker.clone();
    drop(broker);
    // A clone is a handle too: the broker still runs.
    assert!(serves(addr).await, "running while a clone is held");
    drop(clone);
    assert!(
        stops_listening(addr).await,
        "the listener closed with the last handle"
    );

    let broker = start_broker_with(Limits::default()).await;
    let addr = broker.local_addrs()[0];
    broker.detach();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(serves(addr).await, "a detached broker keeps serving");
}

/// A client that subscribed and then stopped reading holds unsent data; `shutdown` gives
/// up on it after `close_flush_timeout` (here 300 ms) instead of the former fixed 5 s.
#[tokio::test]
async fn shutdown_waits_for_a_stalled_reader_no_longer_than_the_close_flush_timeout() {
    let broker = start_broker_with(
        Limits::default()
            .with_close_flush_timeout(Duration::from_millis(300))
            .with_max_queued_bytes(64 * 1024 * 1024)
            .with_flow_control_queue(0),
    )
    .await;
    let mut stalled = Raw::connect(&broker, ProtocolVersion::V311, "stalled").await;
    stalled.subscribe(1, "bulk", QoS::AtMostOnce).await;
    let (publisher, _deliveries) = broker
        .client(ClientOptions::new("publisher"))
        .await
        .expect("connects");
    // 32 MiB at QoS 0 to a socket nobody reads: far more than loopback buffers hold.
    let payload = bytes::Bytes::from(vec![b'x'; 512 * 1024]);
    for _ in 0..64 {
        publisher
            .publish("bulk", payload.clone(), QoS::AtMostOnce, false)
            .await
            .expect("published");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), broker.shutdown())
        .await
        .expect("shutdown ends");
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "shutdown took {took:?} with a 300 ms close-flush timeout"
    );
    drop(stalled);
}

#[tokio::test]
async fn an_in_process_client_knows_whether_its_session_was_resumed() {
    let broker = start_broker_with(Limits::default()).await;
    let options = || {
        ClientOptions::new("resumable")
            .persistent(true)
            .session_expiry(3600)
    };
    let (first, _d) = broker.client(options()).await.expect("connects");
    assert!(!first.session_present(), "a new session");
    first
        .subscribe("kept/#", QoS::AtLeastOnce)
        .await
        .expect("subscribes");
    first.disconnect().await.expect("disconnects");
    // MQTT-3.2.2-2: Session Present 1 when the server holds a session for the client id
    // (resumed, or taken over if the first connection were still attached).
    let (again, _d) = broker.client(options()).await.expect("reconnects");
    assert!(again.session_present(), "the session was resumed");
    again.disconnect().await.expect("disconnects");
    let (fresh, _d) = broker
        .client(ClientOptions::new("resumable"))
        .await
        .expect("clean start");
    assert!(!fresh.session_present(), "Clean Start discards it");
    broker.shutdown().await;
}
