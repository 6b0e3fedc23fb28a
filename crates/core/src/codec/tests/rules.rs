//! One test per malformed-packet rule, each citing its normative statement.

use bytes::{Bytes, BytesMut};

use super::*;

#[test]
fn remaining_length_over_four_bytes() {
    // MQTT 3.1.1 §2.2.3 / MQTT-1.5.5-1 (v5): at most four bytes.
    assert_eq!(
        decode_err(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], V4),
        DecodeError::MalformedVariableByteInteger
    );
}

/// MQTT-1.5.5-1 (v5): every Variable Byte Integer in its shortest form; a longer one is a
/// malformed packet (0x81), wherever it is.
#[test]
fn variable_byte_integers_must_be_minimal() {
    // Remaining Length 0 in two bytes (PINGREQ), at both levels.
    for v in [V4, V5] {
        let err = decode_err(&[0xC0, 0x80, 0x00], v);
        assert_eq!(err, DecodeError::NonMinimalVariableByteInteger);
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }
    // A v5 CONNECT whose Properties Length is 0 in two bytes.
    let connect = [
        0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x80, 0x00, 0x00,
        0x01, b'a',
    ];
    assert_eq!(
        decode_err(&connect, V5),
        DecodeError::NonMinimalVariableByteInteger
    );
    // A v5 PUBLISH whose Properties Length is 0 in two bytes.
    let publish = [0x30, 0x06, 0x00, 0x01, b't', 0x80, 0x00, b'x'];
    assert_eq!(
        decode_err(&publish, V5),
        DecodeError::NonMinimalVariableByteInteger
    );
    // A v5 SUBSCRIBE whose Subscription Identifier is 1 in two bytes.
    let subscribe = [
        0x82, 0x0A, 0x00, 0x01, 0x03, 0x0B, 0x81, 0x00, 0x00, 0x01, b't', 0x01,
    ];
    assert_eq!(
        decode_err(&subscribe, V5),
        DecodeError::NonMinimalVariableByteInteger
    );
    // The same packets in shortest form decode.
    let mut ok = BytesMut::from(
        &[
            0x82u8, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00, 0x01, b't', 0x01,
        ][..],
    );
    assert!(matches!(
        decode(&mut ok, &DecodeLimits::new(V5)),
        Ok(Some(Packet::Subscribe(_)))
    ));
}

#[test]
fn declared_size_over_limit_is_refused_before_buffering() {
    // A peer that declares 256 MiB gets an error from the first five bytes alone.
    let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    let limits = DecodeLimits::new(V5).with_max_packet_size(1024);
    let err = decode(&mut buf, &limits).expect_err("too large");
    assert!(matches!(err, DecodeError::PacketTooLarge { max: 1024, .. }));
    assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
    // Exactly at the limit is fine.
    let mut buf = BytesMut::from(&[0xC0u8, 0x00][..]);
    let limits = DecodeLimits::new(V4).with_max_packet_size(2);
    assert_eq!(decode(&mut buf, &limits), Ok(Some(Packet::PingReq)));
}

#[test]
fn reserved_packet_types() {
    // Type 0 is reserved at every level; type 15 is reserved before 5.0.
    assert_eq!(
        decode_err(&[0x00, 0x00], V5),
        DecodeError::ReservedPacketType(0)
    );
    assert_eq!(
        decode_err(&[0xF0, 0x00], V4),
        DecodeError::ReservedPacketType(15)
    );
}

#[test]
fn reserved_flags_subscribe_unsubscribe_pubrel() {
    // MQTT-3.8.1-1, MQTT-3.10.1-1, MQTT-3.6.1-1 (MQTT-2.2.2-2).
    for first in [0x80u8, 0xA0, 0x60, 0x83, 0xA3, 0x61] {
        let err = decode_err(&[first, 0x00], V4);
        assert!(
            matches!(err, DecodeError::InvalidHeaderFlags { .. }),
            "{first:#x}"
        );
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }
    // Other packets must have flags 0 (MQTT-2.2.2-1).
    assert!(matches!(
        decode_err(&[0xC1, 0x00], V4),
        DecodeError::InvalidHeaderFlags { .. }
    ));
}

#[test]
fn publish_qos_3_is_malformed() {
    // MQTT-3.3.1-4
    assert_eq!(
        decode_err(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01], V4),
        DecodeError::InvalidQoS
    );
}

#[test]
fn dup_on_qos0_is_malformed() {
    // MQTT-3.3.1-2
    assert_eq!(
        decode_err(&[0x38, 0x03, 0x00, 0x01, b't'], V4),
        DecodeError::DupOnQoS0
    );
}

#[test]
fn strings_must_be_well_formed_utf8_without_null() {
    // MQTT-3.3.2-1 (both): the Topic Name is a UTF-8 string.
    // MQTT-1.5.3-1: a UTF-16 surrogate (U+D800 encoded as ED A0 80) in a topic.
    assert_eq!(
        decode_err(&[0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80], V4),
        DecodeError::InvalidUtf8
    );
    // MQTT-1.5.3-2: U+0000 in a client identifier.
    let bytes = [
        0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, //
        0x00, 0x02, b'a', 0x00,
    ];
    assert_eq!(decode_err(&bytes, V4), DecodeError::NullCharacter);
}

#[test]
fn wildcards_in_publish_topic() {
    // MQTT-3.3.2-2
    for t in [b'+', b'#'] {
        let err = decode_err(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', t], V4);
        assert_eq!(
            err,
            DecodeError::InvalidTopicName(TopicError::WildcardInName)
        );
        assert_eq!(err.reason_code(), ReasonCode::TopicNameInvalid);
    }
}

#[test]
fn invalid_topic_filters() {
    // MQTT-4.7.1-2 and MQTT-4.7.1-3: a/#/b, a+, #a.
    for (f, e) in [
        (&b"a/#/b"[..], TopicError::MisplacedMultiLevelWildcard),
        (b"a+", TopicError::MisplacedSingleLevelWildcard),
        (b"#a", TopicError::MisplacedMultiLevelWildcard),
    ] {
        let mut bytes = vec![
            0x82,
            (2 + 2 + f.len() + 1) as u8,
            0x00,
            0x01,
            0x00,
            f.len() as u8,
        ];
        bytes.extend_from_slice(f);
        bytes.push(0x00);
        let err = decode_err(&bytes, V4);
        assert_eq!(err, DecodeError::InvalidTopicFilter(e));
        assert_eq!(err.reason_code(), ReasonCode::TopicFilterInvalid);
    }
    // An empty filter is invalid too (MQTT-4.7.3-1).
    assert_eq!(
        decode_err(&[0xA2, 0x04, 0x00, 0x01, 0x00, 0x00], V4),
        DecodeError::InvalidTopicFilter(TopicError::Empty)
    );
}

#[test]
fn empty_topic_without_alias() {
    // MQTT-4.7.3-1 (3.1.1); v5 §3.3.2.1: empty topic needs a Topic Alias.
    assert_eq!(
        decode_err(&[0x30, 0x02, 0x00, 0x00], V4),
        DecodeError::EmptyTopicWithoutAlias
    );
    assert_eq!(
        decode_err(&[0x30, 0x03, 0x00, 0x00, 0x00], V5),
        DecodeError::EmptyTopicWithoutAlias
    );
}

#[test]
fn packet_id_zero() {
    // MQTT-2.3.1-1: PUBLISH QoS > 0, SUBSCRIBE, UNSUBSCRIBE and the acks need a non-zero id.
    let cases: [&[u8]; 4] = [
        &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b't', 0x00],
        &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b't'],
        &[0x40, 0x02, 0x00, 0x00],
    ];
    for bytes in cases {
        let err = decode_err(bytes, V4);
        assert!(matches!(err, DecodeError::ZeroPacketId(_)), "{bytes:x?}");
    }
    // The acks of two bytes, read without taking a share of the buffer, check it too.
    for first in [0x40, 0x50, 0x62, 0x70] {
        for v in [V4, V5] {
            let err = decode_err(&[first, 0x02, 0x00, 0x00], v);
            assert!(matches!(err, DecodeError::ZeroPacketId(_)), "{first:x}");
        }
    }
}

/// Acks of two bytes (in v5 a Remaining Length of 2 means Success and no properties,
/// §3.4.2.1) are read straight from the buffer; the packets after them in the same buffer
/// come out whole.
#[test]
fn short_acks_between_other_packets() {
    let bytes = [
        0x50, 0x02, 0x00, 0x07, // PUBREC 7
        0x32, 0x08, 0x00, 0x01, b't', 0x00, 0x09, 0x00, b'h', b'i', // PUBLISH QoS 1, id 9
        0x62, 0x02, 0x12, 0x34, // PUBREL 0x1234
        0x70, 0x03, 0x00, 0x08, 0x92, // PUBCOMP 8, 0x92 Packet Identifier not found
    ];
    let mut buf = BytesMut::from(&bytes[..]);
    let limits = DecodeLimits::new(V5);
    let mut next = || decode(&mut buf, &limits).expect("valid").expect("whole");
    assert_eq!(next(), Packet::PubRec(PubResponse::new(pid(7))));
    let Packet::Publish(p) = next() else {
        panic!("a PUBLISH")
    };
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("t", &b"hi"[..]));
    assert_eq!(p.qos, PublishQoS::AtLeastOnce(pid(9)));
    assert_eq!(next(), Packet::PubRel(PubResponse::new(pid(0x1234))));
    assert_eq!(
        next(),
        Packet::PubComp(PubResponse::with_reason(
            pid(8),
            ReasonCode::PacketIdentifierNotFound
        ))
    );
    assert!(buf.is_empty());
}

/// The readers' fast path for two-byte acks agrees with `decode` on every packet it takes,
/// and leaves everything else to it: wrong flags (MQTT-2.2.2-2), a zero id (MQTT-2.3.1-1),
/// other lengths, other types, what is not all there yet.
#[test]
fn short_acks_are_peeked_as_decode_reads_them() {
    for (first, kind) in [
        (0x40, PacketType::PubAck),
        (0x50, PacketType::PubRec),
        (0x62, PacketType::PubRel),
        (0x70, PacketType::PubComp),
    ] {
        let bytes = [first, 0x02, 0x12, 0x34, 0xC0];
        assert_eq!(peek_short_ack(&bytes), Some((kind, pid(0x1234))));
        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = decode(&mut buf, &DecodeLimits::new(V5)).expect("valid");
        let decoded = decoded.expect("whole");
        assert_eq!(decoded.packet_type(), kind);
        assert_eq!(buf.len(), 1, "four bytes taken, as the reader advances");
    }
    let refused: [&[u8]; 8] = [
        &[0x60, 0x02, 0x00, 0x01],       // PUBREL without its required flags
        &[0x42, 0x02, 0x00, 0x01],       // PUBACK with flags
        &[0x40, 0x02, 0x00, 0x00],       // id 0
        &[0x40, 0x03, 0x00, 0x01, 0x00], // a reason code: decoded in full
        &[0x40, 0x02, 0x00],             // not all there
        &[0xC0, 0x00, 0x00, 0x00],       // PINGREQ
        &[0x30, 0x02, 0x00, 0x00],       // PUBLISH
        &[],
    ];
    for bytes in refused {
        assert_eq!(peek_short_ack(bytes), None, "{bytes:x?}");
    }
}

#[test]
fn subscribe_unsubscribe_without_filters() {
    // MQTT-3.8.3-3 and MQTT-3.10.3-2.
    assert_eq!(
        decode_err(&[0x82, 0x02, 0x00, 0x01], V4),
        DecodeError::NoTopicFilters(PacketType::Subscribe)
    );
    assert_eq!(
        decode_err(&[0xA2, 0x03, 0x00, 0x01, 0x00], V5),
        DecodeError::NoTopicFilters(PacketType::Unsubscribe)
    );
}

#[test]
fn subscription_options_reserved_bits() {
    // MQTT-3.8.3-4 (3.1.1: bits 7-2 reserved): 0x04 is No Local in v5 but reserved here.
    assert_eq!(
        decode_err(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x04], V4),
        DecodeError::InvalidSubscriptionOptions(0x04)
    );
    // MQTT-3.8.3-5 (v5: bits 7-6 reserved).
    assert_eq!(
        decode_err(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b't', 0x40], V5),
        DecodeError::InvalidSubscriptionOptions(0x40)
    );
    // v5 §3.8.3.1: Retain Handling 3 is a protocol error.
    assert_eq!(
        decode_err(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b't', 0x30], V5),
        DecodeError::InvalidRetainHandling
    );
    // Requested QoS 3 (MQTT-3.8.3-4).
    assert_eq!(
        decode_err(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x03], V4),
        DecodeError::InvalidQoS
    );
}

fn connect_bytes(name: &[u8], level: u8, flags: u8, tail: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0x00, 0x3C]);
    body.extend_from_slice(tail);
    let mut out = vec![0x10, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

#[test]
fn connect_reserved_flag() {
    // MQTT-3.1.2-3
    let b = connect_bytes(b"MQTT", 4, 0x03, &[0x00, 0x00]);
    assert_eq!(decode_err(&b, V4), DecodeError::ConnectReservedFlag);
}

#[test]
fn connect_will_qos_or_retain_without_will_flag() {
    // MQTT-3.1.2-11, MQTT-3.1.2-13 (will QoS), MQTT-3.1.2-15 (will retain).
    for flags in [0x0A, 0x12, 0x22] {
        let b = connect_bytes(b"MQTT", 4, flags, &[0x00, 0x00]);
        assert_eq!(
            decode_err(&b, V4),
            DecodeError::WillFlagsWithoutWill,
            "{flags:#x}"
        );
    }
    // MQTT-3.1.2-14: will QoS 3.
    let b = connect_bytes(b"MQTT", 4, 0x1E, &[0x00, 0x00]);
    assert_eq!(decode_err(&b, V4), DecodeError::InvalidQoS);
}

#[test]
fn connect_password_without_username() {
    // MQTT-3.1.2-22 (3.1.1); allowed in 5.0 (§3.1.2.9).
    let b = connect_bytes(b"MQTT", 4, 0x42, &[0x00, 0x00, 0x00, 0x01, b'p']);
    assert_eq!(decode_err(&b, V4), DecodeError::PasswordWithoutUsername);
    let b = connect_bytes(b"MQTT", 5, 0x42, &[0x00, 0x00, 0x00, 0x00, 0x01, b'p']);
    let Ok(Some(Packet::Connect(c))) = decode_all(&b, V4) else {
        panic!("v5 allows a password alone")
    };
    assert_eq!(c.password, Some(Bytes::from_static(b"p")));
}

#[test]
fn connect_wrong_protocol_name_or_level() {
    // MQTT-3.1.2-1: unknown protocol name.
    let b = connect_bytes(b"MQTX", 4, 0x02, &[0x00, 0x00]);
    assert_eq!(decode_err(&b, V4), DecodeError::InvalidProtocolName);
    // MQTT-3.1.2-2 (both): unsupported level → CONNACK 0x01 (3.1.1) / 0x84 (v5).
    for (name, level) in [(&b"MQTT"[..], 6u8), (b"MQTT", 3), (b"MQIsdp", 4)] {
        let err = decode_err(&connect_bytes(name, level, 0x02, &[0x00, 0x00]), V4);
        assert_eq!(err, DecodeError::UnsupportedProtocolLevel(level));
        assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
        assert_eq!(err.reason_code().to_v3_connack(), 0x01);
    }
}

/// Mosquitto's bridges (`try_private true`) connect at level 0x84 (3.1.1 | 0x80) or 0x83
/// (3.1 | 0x80): not in either standard, accepted as a bridge; 5.0 has no such variant, and
/// the bit on any other level is still an unsupported level (MQTT-3.1.2-2).
#[test]
fn connect_bridge_levels() {
    for (name, level, version) in [
        (&b"MQTT"[..], 0x84u8, ProtocolVersion::V311),
        (b"MQIsdp", 0x83, ProtocolVersion::V31),
    ] {
        let bytes = connect_bytes(name, level, 0x02, &[0x00, 0x00]);
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        let packet = decode(&mut buf, &DecodeLimits::new(V4))
            .expect("decodes")
            .expect("complete");
        let Packet::Connect(c) = packet else {
            panic!("not a CONNECT: {packet:?}")
        };
        assert!(c.bridge && c.protocol == version, "{c:?}");
        // Encoding keeps the bit.
        let mut out = bytes::BytesMut::new();
        Packet::Connect(c)
            .encode(version, &mut out)
            .expect("encodes");
        assert_eq!(&out[..], &bytes[..]);
    }
    for (name, level) in [(&b"MQTT"[..], 0x85u8), (b"MQTT", 0x83), (b"MQTT", 0x86)] {
        let err = decode_err(&connect_bytes(name, level, 0x02, &[0x00, 0x00]), V4);
        assert_eq!(err, DecodeError::UnsupportedProtocolLevel(level));
    }
}

#[test]
fn v5_duplicate_property() {
    // v5 §3.3.2.3: Message Expiry Interval twice is a protocol error.
    let bytes = [
        0x30, 0x0E, 0x00, 0x01, b't', // PUBLISH "t"
        0x0A, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2, // expiry twice
    ];
    let err = decode_err(&bytes, V5);
    assert_eq!(err, DecodeError::DuplicateProperty(0x02));
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn v5_property_not_allowed_on_packet() {
    // v5 §2.2.2.2: Session Expiry Interval is not a PUBLISH property.
    let bytes = [0x30, 0x09, 0x00, 0x01, b't', 0x05, 0x11, 0, 0, 0, 1];
    let err = decode_err(&bytes, V5);
    assert_eq!(
        err,
        DecodeError::PropertyNotAllowed {
            id: 0x11,
            packet: PacketType::Publish
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn v5_unknown_property() {
    // v5 §2.2.2.2: 0x04 is not a property identifier.
    let bytes = [0x30, 0x06, 0x00, 0x01, b't', 0x01, 0x04, 0x00];
    assert_eq!(decode_err(&bytes, V5), DecodeError::UnknownProperty(0x04));
}

#[test]
fn v5_property_values_out_of_range() {
    // Receive Maximum 0 and Maximum Packet Size 0 are protocol errors (§3.1.2.11.3/.4).
    let b = connect_bytes(b"MQTT", 5, 0x02, &[0x03, 0x21, 0x00, 0x00, 0x00, 0x00]);
    assert_eq!(decode_err(&b, V5), DecodeError::InvalidPropertyValue(0x21));
    let b = connect_bytes(b"MQTT", 5, 0x02, &[0x05, 0x27, 0, 0, 0, 0, 0x00, 0x00]);
    assert_eq!(decode_err(&b, V5), DecodeError::InvalidPropertyValue(0x27));
    // Payload Format Indicator 2.
    let bytes = [0x30, 0x07, 0x00, 0x01, b't', 0x02, 0x01, 0x02, b'x'];
    assert_eq!(
        decode_err(&bytes, V5),
        DecodeError::InvalidPropertyValue(0x01)
    );
    // Authentication Data without Authentication Method (§3.1.2.11.10).
    let b = connect_bytes(b"MQTT", 5, 0x02, &[0x03, 0x16, 0x00, 0x00, 0x00, 0x00]);
    assert_eq!(decode_err(&b, V5), DecodeError::AuthDataWithoutMethod);
}

#[test]
fn v5_property_length_past_end() {
    let bytes = [0x30, 0x05, 0x00, 0x01, b't', 0x09, 0x01];
    assert_eq!(decode_err(&bytes, V5), DecodeError::PropertyLengthOverflow);
}

#[test]
fn invalid_reason_codes() {
    // v5 §2.4: 0x03 is not a reason code; 0x92 is not allowed on PUBACK.
    assert!(matches!(
        decode_err(&[0x40, 0x03, 0x00, 0x01, 0x03], V5),
        DecodeError::InvalidReasonCode { code: 0x03, .. }
    ));
    assert!(matches!(
        decode_err(&[0x40, 0x03, 0x00, 0x01, 0x92], V5),
        DecodeError::InvalidReasonCode { code: 0x92, .. }
    ));
    // 3.1.1 CONNACK return code 6 is reserved.
    assert!(matches!(
        decode_err(&[0x20, 0x02, 0x00, 0x06], V4),
        DecodeError::InvalidReasonCode { code: 0x06, .. }
    ));
    // MQTT-3.2.2-1: reserved acknowledge flags.
    assert_eq!(
        decode_err(&[0x20, 0x02, 0x02, 0x00], V4),
        DecodeError::ConnAckReservedFlags
    );
}

#[test]
fn trailing_bytes_after_body() {
    // A PINGREQ with a body, a 3.1.1 PUBACK with a reason code, a CONNECT with extra bytes.
    assert_eq!(
        decode_err(&[0xC0, 0x01, 0x00], V4),
        DecodeError::TrailingBytes(1)
    );
    assert_eq!(
        decode_err(&[0x40, 0x03, 0x00, 0x01, 0x00], V4),
        DecodeError::TrailingBytes(1)
    );
    let b = connect_bytes(b"MQTT", 4, 0x02, &[0x00, 0x00, 0xAA]);
    assert_eq!(decode_err(&b, V4), DecodeError::TrailingBytes(1));
}

#[test]
fn body_shorter_than_its_fields() {
    // A topic length running past the end of the packet.
    assert_eq!(
        decode_err(&[0x30, 0x03, 0x00, 0x05, b'a'], V4),
        DecodeError::Truncated
    );
}

#[test]
fn auth_requires_method() {
    // v5 §3.15.2.2.2
    assert_eq!(
        decode_err(&[0xF0, 0x02, 0x18, 0x00], V5),
        DecodeError::MissingAuthenticationMethod
    );
}

#[test]
fn several_packets_in_one_buffer_decode_one_by_one() {
    let mut buf = BytesMut::from(&[0xC0u8, 0x00, 0xD0, 0x00, 0xE0][..]);
    let limits = DecodeLimits::new(V4);
    assert_eq!(decode(&mut buf, &limits), Ok(Some(Packet::PingReq)));
    assert_eq!(decode(&mut buf, &limits), Ok(Some(Packet::PingResp)));
    assert_eq!(decode(&mut buf, &limits), Ok(None));
    assert_eq!(buf.len(), 1);
}

#[test]
fn payload_is_a_slice_of_the_read_buffer() {
    let mut buf = BytesMut::from(&[0x30u8, 0x07, 0x00, 0x01, b't', b'd', b'a', b't', b'a'][..]);
    let start = buf.as_ptr() as usize;
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, &DecodeLimits::new(V4)) else {
        panic!()
    };
    assert_eq!(p.payload.as_ptr() as usize, start + 5, "payload was copied");
}

/// `DecodeError::spec_id` names the statement each check enforces: one malformed packet per
/// error, decoded, and the citation it must carry (and the v5 reason code it maps to).
#[test]
fn every_decode_error_names_its_statement() {
    let connect = |name: &[u8], level: u8, flags: u8, tail: &[u8]| {
        let mut body = vec![0x00, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0x00, 0x3C]);
        if level == 5 {
            body.push(0x00);
        }
        body.extend_from_slice(&[0x00, 0x01, b'a']);
        body.extend_from_slice(tail);
        let mut p = vec![0x10, body.len() as u8];
        p.extend_from_slice(&body);
        p
    };
    let malformed = ReasonCode::MalformedPacket;
    let protocol = ReasonCode::ProtocolError;
    let cases: Vec<(Vec<u8>, ProtocolVersion, &str, &str, ReasonCode)> = vec![
        (
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            V4,
            "MalformedVariableByteInteger",
            "§2.2.3",
            malformed,
        ),
        (
            vec![0xC0, 0x80, 0x00],
            V5,
            "NonMinimalVariableByteInteger",
            "1.5.5-1",
            malformed,
        ),
        (
            vec![0x00, 0x00],
            V4,
            "ReservedPacketType",
            "§2.2.1",
            malformed,
        ),
        (
            vec![0xC1, 0x00],
            V4,
            "InvalidHeaderFlags",
            "2.2.2-2",
            malformed,
        ),
        (
            vec![0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01],
            V4,
            "InvalidQoS",
            "3.3.1-4",
            malformed,
        ),
        (
            vec![0x38, 0x04, 0x00, 0x01, b't', b'x'],
            V4,
            "DupOnQoS0",
            "3.3.1-2",
            malformed,
        ),
        (
            vec![0x30, 0x02, 0x00, 0x05],
            V4,
            "Truncated",
            "§2.2.3",
            malformed,
        ),
        (
            vec![0xC0, 0x01, 0x00],
            V4,
            "TrailingBytes",
            "§2.2.3",
            malformed,
        ),
        (
            vec![0x30, 0x04, 0x00, 0x02, 0xC3, 0x28],
            V4,
            "InvalidUtf8",
            "1.5.3-1",
            malformed,
        ),
        (
            vec![0x30, 0x04, 0x00, 0x02, b'a', 0x00],
            V4,
            "NullCharacter",
            "1.5.3-2",
            malformed,
        ),
        (
            vec![0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'],
            V4,
            "InvalidTopicName",
            "3.3.2-2",
            ReasonCode::TopicNameInvalid,
        ),
        (
            vec![0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'#', 0x00],
            V4,
            "InvalidTopicFilter",
            "4.7.1-2",
            ReasonCode::TopicFilterInvalid,
        ),
        (
            vec![0x40, 0x02, 0x00, 0x00],
            V4,
            "ZeroPacketId",
            "2.3.1-1",
            protocol,
        ),
        (
            vec![0xA2, 0x02, 0x00, 0x01],
            V4,
            "NoTopicFilters",
            "3.10.3-2",
            protocol,
        ),
        (
            vec![0x82, 0x02, 0x00, 0x01],
            V4,
            "NoTopicFilters",
            "3.8.3-3",
            protocol,
        ),
        (
            vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x04],
            V4,
            "InvalidSubscriptionOptions",
            "3.8.3-4",
            malformed,
        ),
        (
            vec![0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b't', 0x30],
            V5,
            "InvalidRetainHandling",
            "§3.8.3.1",
            protocol,
        ),
        (
            connect(b"MQTX", 4, 0x02, &[]),
            V4,
            "InvalidProtocolName",
            "3.1.2-1",
            ReasonCode::UnsupportedProtocolVersion,
        ),
        (
            connect(b"MQTT", 9, 0x02, &[]),
            V4,
            "UnsupportedProtocolLevel",
            "3.1.2-2",
            ReasonCode::UnsupportedProtocolVersion,
        ),
        (
            connect(b"MQTT", 4, 0x03, &[]),
            V4,
            "ConnectReservedFlag",
            "3.1.2-3",
            malformed,
        ),
        (
            connect(b"MQTT", 4, 0x0A, &[]),
            V4,
            "WillFlagsWithoutWill",
            "3.1.2-13",
            malformed,
        ),
        (
            connect(b"MQTT", 4, 0x42, &[0x00, 0x01, b'p']),
            V4,
            "PasswordWithoutUsername",
            "3.1.2-22",
            malformed,
        ),
        (
            vec![
                0x30, 0x09, 0x00, 0x01, b't', 0x04, 0x01, 0x01, 0x01, 0x01, b'x',
            ],
            V5,
            "DuplicateProperty",
            "§2.2.2.2",
            protocol,
        ),
        (
            vec![0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x7F, 0x00],
            V5,
            "UnknownProperty",
            "§2.2.2.2",
            malformed,
        ),
        (
            vec![0x30, 0x09, 0x00, 0x01, b't', 0x05, 0x11, 0, 0, 0, 1],
            V5,
            "PropertyNotAllowed",
            "§2.2.2.2",
            malformed,
        ),
        (
            vec![0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x01, 0x02],
            V5,
            "InvalidPropertyValue",
            "§2.2.2",
            protocol,
        ),
        (
            vec![0x30, 0x04, 0x00, 0x00, 0x00, b'x'],
            V5,
            "EmptyTopicWithoutAlias",
            "3.3.2-8",
            protocol,
        ),
        (
            vec![0xF0, 0x02, 0x18, 0x00],
            V5,
            "MissingAuthenticationMethod",
            "§3.15.2.2.2",
            protocol,
        ),
        (
            vec![0x40, 0x03, 0x00, 0x01, 0x05],
            V5,
            "InvalidReasonCode",
            "§2.4",
            malformed,
        ),
        (
            vec![0x20, 0x02, 0x02, 0x00],
            V4,
            "ConnAckReservedFlags",
            "3.2.2-1",
            malformed,
        ),
    ];
    for (bytes, v, variant, statement, code) in cases {
        let err = decode_err(&bytes, v);
        assert!(
            format!("{err:?}").starts_with(variant),
            "{bytes:02X?}: {err:?}, expected {variant}"
        );
        assert!(
            err.spec_id().contains(statement),
            "{err:?} cites {:?}, not {statement}",
            err.spec_id()
        );
        assert_eq!(err.reason_code(), code, "{err:?}");
    }
}

/// The CONNECT payload holds exactly the fields its flags announce: MQTT-3.1.2-9 (both),
/// MQTT-3.1.2-18, -19, -20, -21 (3.1.1), MQTT-3.1.2-16, -17, -18, -19 (v5). A missing field
/// or one too many is a malformed packet.
#[test]
fn connect_payload_fields_follow_their_flags() {
    for v in [V4, V5] {
        // v5 puts a Property Length before the payload.
        let props: &[u8] = if v == V5 { &[0x00] } else { &[] };
        let tail = |rest: &[u8]| -> Vec<u8> {
            let mut t = props.to_vec();
            t.extend_from_slice(&[0x00, 0x01, b'a']);
            t.extend_from_slice(rest);
            t
        };
        let level = if v == V5 { 5 } else { 4 };
        for (flags, rest, what) in [
            (0x06u8, &[][..], "will flag without will fields"),
            (0x82, &[][..], "user name flag without a user name"),
            (
                0xC2,
                &[0x00, 0x01, b'u'][..],
                "password flag without a password",
            ),
            (
                0x02,
                &[0x00, 0x01, b'u'][..],
                "a user name without its flag",
            ),
        ] {
            let b = connect_bytes(b"MQTT", level, flags, &tail(rest));
            let err = decode_err(&b, v);
            assert!(
                matches!(err, DecodeError::Truncated | DecodeError::TrailingBytes(_)),
                "{v:?} {what}: {err:?}"
            );
            assert_eq!(err.reason_code(), ReasonCode::MalformedPacket, "{what}");
        }
    }
}

/// Every string of a CONNECT is UTF-8: the Client Identifier (MQTT-3.1.3-4 (both)), the Will
/// Topic and the User Name (MQTT-3.1.3-10, -11 (3.1.1), MQTT-3.1.3-11, -12 (v5)).
#[test]
fn connect_strings_must_be_utf8() {
    const BAD: [u8; 4] = [0x00, 0x02, 0xC3, 0x28];
    for v in [V4, V5] {
        let level = if v == V5 { 5 } else { 4 };
        let props: &[u8] = if v == V5 { &[0x00] } else { &[] };
        let mut client_id = props.to_vec();
        client_id.extend_from_slice(&BAD);
        let mut will_topic = props.to_vec();
        will_topic.extend_from_slice(&[0x00, 0x01, b'a']);
        will_topic.extend_from_slice(props); // Will Properties (v5)
        will_topic.extend_from_slice(&BAD);
        will_topic.extend_from_slice(&[0x00, 0x00]);
        let mut user = props.to_vec();
        user.extend_from_slice(&[0x00, 0x01, b'a']);
        user.extend_from_slice(&BAD);
        for (flags, tail, what) in [
            (0x02u8, client_id, "client identifier"),
            (0x06, will_topic, "will topic"),
            (0x82, user, "user name"),
        ] {
            let err = decode_err(&connect_bytes(b"MQTT", level, flags, &tail), v);
            assert_eq!(err, DecodeError::InvalidUtf8, "{v:?} {what}");
        }
    }
}

/// Topic Filters are UTF-8 in SUBSCRIBE (MQTT-3.8.3-1 (both)) and UNSUBSCRIBE
/// (MQTT-3.10.3-1 (both)).
#[test]
fn filters_must_be_utf8() {
    for v in [V4, V5] {
        let props: &[u8] = if v == V5 { &[0x00] } else { &[] };
        let mut sub = vec![0x00, 0x01];
        sub.extend_from_slice(props);
        sub.extend_from_slice(&[0x00, 0x02, 0xC3, 0x28, 0x00]);
        let mut unsub = vec![0x00, 0x01];
        unsub.extend_from_slice(props);
        unsub.extend_from_slice(&[0x00, 0x02, 0xC3, 0x28]);
        for (first, body) in [(0x82u8, sub), (0xA2, unsub)] {
            let mut packet = vec![first, body.len() as u8];
            packet.extend_from_slice(&body);
            assert_eq!(
                decode_err(&packet, v),
                DecodeError::InvalidUtf8,
                "{first:#x}"
            );
        }
    }
}

/// MQTT-1.5.3-3 (3.1.1) and MQTT-1.5.4-3 (v5): 0xEF 0xBB 0xBF is U+FEFF wherever it is, and
/// is not skipped or stripped.
#[test]
fn byte_order_mark_is_kept() {
    for v in [V4, V5] {
        let mut p = vec![0x30, 0x00, 0x00, 0x04, 0xEF, 0xBB, 0xBF, b'a'];
        if v == V5 {
            p.push(0x00);
        }
        p.push(b'x');
        p[1] = (p.len() - 2) as u8;
        let Ok(Some(Packet::Publish(publish))) = decode_all(&p, v) else {
            panic!("decodes")
        };
        assert_eq!(publish.topic.as_str(), "\u{FEFF}a");
        assert_eq!(publish.topic.as_str().len(), 4);
    }
}

/// Reserved flag bits of DISCONNECT (MQTT-3.14.1-1 (both)) and AUTH (MQTT-3.15.1-1 (v5))
/// must be 0; anything else is malformed.
#[test]
fn reserved_flags_disconnect_and_auth() {
    for v in [V4, V5] {
        let err = decode_err(&[0xE1, 0x00], v);
        assert!(
            matches!(err, DecodeError::InvalidHeaderFlags { .. }),
            "{err:?}"
        );
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }
    let err = decode_err(&[0xF2, 0x00], V5);
    assert!(
        matches!(err, DecodeError::InvalidHeaderFlags { .. }),
        "{err:?}"
    );
}

/// The data representation and header rules at MQTT 5.0, where the numbers differ from
/// 3.1.1's or the packet has properties: each case is refused, with its reason code.
#[test]
fn v5_representation_and_header_rules() {
    let publish = |props: &[u8]| {
        let mut body = vec![0x00, 0x01, b't', props.len() as u8];
        body.extend_from_slice(props);
        body.push(b'x');
        let mut p = vec![0x30, body.len() as u8];
        p.extend_from_slice(&body);
        p
    };
    let malformed = ReasonCode::MalformedPacket;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // MQTT-1.5.4-1 (v5): ill-formed UTF-8 (a surrogate) in a topic.
        (
            "1.5.4-1",
            vec![0x30, 0x06, 0x00, 0x03, 0xED, 0xA0, 0x80, 0x00],
        ),
        // MQTT-1.5.4-2 (v5): U+0000 in a topic.
        ("1.5.4-2", vec![0x30, 0x05, 0x00, 0x02, b'a', 0x00, 0x00]),
        // MQTT-1.5.7-1 (v5): both strings of a User Property are UTF-8.
        (
            "1.5.7-1",
            publish(&[0x26, 0x00, 0x01, b'k', 0x00, 0x02, 0xC3, 0x28]),
        ),
        // MQTT-3.3.2-13 (v5): the Response Topic is UTF-8.
        ("3.3.2-13", publish(&[0x08, 0x00, 0x02, 0xC3, 0x28])),
        // MQTT-3.3.2-14 (v5): and has no wildcards.
        ("3.3.2-14", publish(&[0x08, 0x00, 0x03, b'a', b'/', b'#'])),
        // MQTT-3.3.2-19 (v5): the Content Type is UTF-8.
        ("3.3.2-19", publish(&[0x03, 0x00, 0x02, 0xC3, 0x28])),
        // MQTT-3.3.2-2 (v5): no wildcard in a Topic Name.
        (
            "3.3.2-2",
            vec![0x30, 0x06, 0x00, 0x03, b'a', b'/', b'+', 0x00],
        ),
        // MQTT-3.3.1-4 (v5): QoS 3.
        (
            "3.3.1-4",
            vec![0x36, 0x06, 0x00, 0x01, b't', 0x00, 0x01, 0x00],
        ),
        // MQTT-3.3.1-2 (v5): DUP on QoS 0.
        ("3.3.1-2", vec![0x38, 0x05, 0x00, 0x01, b't', 0x00, b'x']),
        // MQTT-2.1.3-1 (v5), MQTT-3.6.1-1 (v5), MQTT-3.8.1-1 (v5), MQTT-3.10.1-1 (v5): reserved flags of
        // PUBREL, SUBSCRIBE, UNSUBSCRIBE, and of a packet whose flags are all reserved.
        ("3.6.1-1", vec![0x60, 0x02, 0x00, 0x01]),
        (
            "3.8.1-1",
            vec![0x80, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b't', 0x00],
        ),
        (
            "3.10.1-1",
            vec![0xA0, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b't'],
        ),
        ("2.1.3-1", vec![0xC4, 0x00]),
        // MQTT-3.8.3-2 (v5), MQTT-3.10.3-2 (v5): at least one filter.
        ("3.8.3-2", vec![0x82, 0x03, 0x00, 0x01, 0x00]),
        ("3.10.3-2", vec![0xA2, 0x03, 0x00, 0x01, 0x00]),
        // MQTT-3.1.2-1 (v5): the protocol name is "MQTT".
        (
            "3.1.2-1",
            connect_bytes(b"MQTX", 5, 0x02, &[0x00, 0x00, 0x00]),
        ),
        // MQTT-3.1.2-3 (v5): the reserved flag is 0.
        (
            "3.1.2-3",
            connect_bytes(b"MQTT", 5, 0x03, &[0x00, 0x00, 0x00]),
        ),
        // MQTT-3.1.2-11 (v5), MQTT-3.1.2-13 (v5): no Will QoS or Will Retain without a will.
        (
            "3.1.2-11",
            connect_bytes(b"MQTT", 5, 0x0A, &[0x00, 0x00, 0x00]),
        ),
        (
            "3.1.2-13",
            connect_bytes(b"MQTT", 5, 0x22, &[0x00, 0x00, 0x00]),
        ),
        // MQTT-3.1.2-12 (v5): Will QoS 3.
        (
            "3.1.2-12",
            connect_bytes(
                b"MQTT",
                5,
                0x1E,
                &[0x00, 0x00, 0x00, 0x00, 0x00, 0x01, b'w', 0x00, 0x00],
            ),
        ),
    ];
    // The error each case must get (its Debug form starts so).
    let expected = [
        ("1.5.4-1", "InvalidUtf8"),
        ("1.5.4-2", "NullCharacter"),
        ("1.5.7-1", "InvalidUtf8"),
        ("3.3.2-13", "InvalidUtf8"),
        ("3.3.2-14", "InvalidTopicName(WildcardInName)"),
        ("3.3.2-19", "InvalidUtf8"),
        ("3.3.2-2", "InvalidTopicName(WildcardInName)"),
        ("3.3.1-4", "InvalidQoS"),
        ("3.3.1-2", "DupOnQoS0"),
        ("3.6.1-1", "InvalidHeaderFlags"),
        ("3.8.1-1", "InvalidHeaderFlags"),
        ("3.10.1-1", "InvalidHeaderFlags"),
        ("2.1.3-1", "InvalidHeaderFlags"),
        ("3.8.3-2", "NoTopicFilters(Subscribe)"),
        ("3.10.3-2", "NoTopicFilters(Unsubscribe)"),
        ("3.1.2-1", "InvalidProtocolName"),
        ("3.1.2-3", "ConnectReservedFlag"),
        ("3.1.2-11", "WillFlagsWithoutWill"),
        ("3.1.2-13", "WillFlagsWithoutWill"),
        ("3.1.2-12", "InvalidQoS"),
    ];
    assert_eq!(cases.len(), expected.len());
    for ((statement, bytes), (id, variant)) in cases.into_iter().zip(expected) {
        assert_eq!(statement, id);
        let err = decode_err(&bytes, V5);
        assert!(
            format!("{err:?}").starts_with(variant),
            "{statement}: {err:?}, expected {variant}"
        );
        let code = err.reason_code();
        assert!(
            code == malformed
                || code == ReasonCode::ProtocolError
                || code == ReasonCode::TopicNameInvalid
                || code == ReasonCode::UnsupportedProtocolVersion,
            "{statement}: {err:?} → {code:?}"
        );
    }
}
