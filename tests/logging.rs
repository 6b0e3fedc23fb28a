//! What a connection logs, and under which context. The per-connection `conn` span is at
//! DEBUG (at info, keeping one for every connection's life would cost each idle connection
//! ~0.4 KiB: issue 19 §4), so the events a connection logs at info and above name their
//! client themselves: its peer address and, once known, its client identifier.

mod support;

use roost::codec::{Connect, Packet, ProtocolVersion, ReasonCode};
use roost::Limits;
use support::{LogBuf, Raw};

/// The lines of `logs` holding `needle`; at least one, or the test fails with the log.
fn lines_with(logs: &LogBuf, needle: &str) -> Vec<String> {
    let text = logs.text();
    let found: Vec<String> = text
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect();
    assert!(!found.is_empty(), "no line with {needle:?} in:\n{text}");
    found
}

/// Refuses one client (identifier too long), then lets one in that breaks the protocol
/// with a second CONNECT (MQTT-3.1.0-2) and is disconnected for it.
async fn refuse_one_and_disconnect_another() {
    let broker = support::start_broker_with(Limits::default().with_max_client_id_length(23)).await;
    let (_refused, ack) = Raw::connect_with(
        &broker,
        Connect::new(ProtocolVersion::V5, "a-client-identifier-over-23-bytes"),
    )
    .await;
    assert_eq!(
        support::connack(ack).reason_code,
        ReasonCode::ClientIdentifierNotValid
    );
    let mut rude = Raw::connect(&broker, ProtocolVersion::V5, "rude").await;
    rude.send(Packet::Connect(Box::new(Connect::new(
        ProtocolVersion::V5,
        "rude",
    ))))
    .await;
    let last = rude.closed_promptly().await;
    assert!(
        matches!(last.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError),
        "{last:?}"
    );
    broker.shutdown().await;
}

/// At the default level, a refused CONNECT and a protocol violation are logged with the
/// peer and the client identifier in the event itself, and no connection span is made.
#[tokio::test]
async fn connection_events_at_info_name_their_client() {
    let (logs, _guard) = LogBuf::capture("info");
    refuse_one_and_disconnect_another().await;
    let refused = lines_with(&logs, "connection refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("INFO"), "{}", refused[0]);
    assert!(refused[0].contains("peer=127.0.0.1:"), "{}", refused[0]);
    assert!(
        refused[0].contains("client_id=a-client-identifier-over-23-bytes"),
        "{}",
        refused[0]
    );
    let violation = lines_with(&logs, "protocol violation");
    assert!(violation[0].contains("peer=127.0.0.1:"), "{}", violation[0]);
    assert!(violation[0].contains("client_id=rude"), "{}", violation[0]);
    assert!(violation[0].contains("MQTT-3.1.0-2"), "{}", violation[0]);
    let text = logs.text();
    assert!(
        !text.contains("conn{"),
        "no span per connection at info:\n{text}"
    );
}

/// At DEBUG, every event of a connection is inside its `conn` span, which names the peer,
/// the listener and (once CONNECT is accepted) the client identifier.
#[tokio::test]
async fn at_debug_a_span_names_every_connection_event() {
    let (logs, _guard) = LogBuf::capture("debug");
    refuse_one_and_disconnect_another().await;
    let violation = lines_with(&logs, "protocol violation");
    let line = &violation[0];
    let span = line
        .find("conn{")
        .map(|at| &line[at..])
        .unwrap_or_else(|| panic!("not in a conn span: {line}"));
    assert!(span.contains("peer=Some(127.0.0.1:"), "{line}");
    assert!(span.contains("listener="), "{line}");
    assert!(span.contains("client_id=rude}"), "{line}");
    // The connection's debug events are in the span too.
    let closing = lines_with(&logs, "connection closing");
    assert!(closing.iter().all(|l| l.contains("conn{")), "{closing:?}");
}

/// A client identifier is the client's to choose (any UTF-8 but NUL): a line feed in it must
/// not end the event and start a log line of the client's making. The identifier is logged
/// with control characters escaped.
#[tokio::test]
async fn a_client_identifier_cannot_forge_a_log_line() {
    let (logs, _guard) = LogBuf::capture("info");
    let broker = support::start_broker_with(Limits::default().with_max_client_id_length(23)).await;
    let forged = "x\n2026-12-02T00:00:00Z  INFO forged: admin logged in";
    let (_refused, ack) =
        Raw::connect_with(&broker, Connect::new(ProtocolVersion::V5, forged)).await;
    assert_eq!(
        support::connack(ack).reason_code,
        ReasonCode::ClientIdentifierNotValid
    );
    broker.shutdown().await;
    let refused = lines_with(&logs, "connection refused");
    assert!(
        refused[0].contains(r"client_id=x\n2026-12-02T00:00:00Z  INFO forged"),
        "{}",
        refused[0]
    );
    let text = logs.text();
    assert!(
        !text.lines().any(|l| l.starts_with("2026-12-02T00:00:00Z")),
        "a forged line:\n{text}"
    );
}
