//! Codec tests: fixtures written from the standards' figures, one test per malformed-packet
//! rule (each citing its normative statement), and proptest round trips.

use bytes::BytesMut;

use super::*;
use crate::topic::{TopicError, TopicFilter, TopicName};

const V31: ProtocolVersion = ProtocolVersion::V31;
const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn pid(v: u16) -> PacketId {
    PacketId::new(v).expect("non-zero")
}

fn topic(s: &str) -> TopicName {
    TopicName::new(s).expect("valid topic")
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).expect("valid filter")
}

fn decode_all(bytes: &[u8], v: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let out = decode(&mut buf, &DecodeLimits::new(v));
    if let Ok(Some(_)) = out {
        assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
    }
    out
}

fn decode_err(bytes: &[u8], v: ProtocolVersion) -> DecodeError {
    match decode_all(bytes, v) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Decodes a fixture, checks that every strict prefix is "need more", and that encoding the
/// result gives the fixture back byte for byte.
fn fixture(bytes: &[u8], v: ProtocolVersion) -> Packet {
    for end in 0..bytes.len() {
        assert_eq!(
            decode_all(&bytes[..end], v),
            Ok(None),
            "prefix of {end} bytes"
        );
    }
    let packet = decode_all(bytes, v)
        .expect("valid fixture")
        .expect("complete fixture");
    let mut out = BytesMut::new();
    packet.encode(v, &mut out).expect("encodes");
    assert_eq!(&out[..], bytes, "re-encoding {packet:?}");
    assert_eq!(packet.encoded_len(v), Ok(bytes.len()));
    packet
}

mod encoding;
mod fixtures;
mod roundtrip;
mod rules;
