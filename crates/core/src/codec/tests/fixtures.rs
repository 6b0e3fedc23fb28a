//! Fixtures written from the standards' figures, per packet and protocol level.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use super::*;

#[test]
fn connect_v311_with_will_and_credentials() {
    // MQTT-3.1.3-1, MQTT-3.1.3-3 (3.1.1): the payload fields come in their order, the Client
    // Identifier first (decoded, and encoded back to the same bytes).
    let bytes = [
        0x10, 31, // CONNECT, remaining length
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name (figure 3.6)
        0x04, // protocol level 4
        0xCE, // user name, password, will QoS 1, will flag, clean session
        0x00, 0x0A, // keep alive 10 s
        0x00, 0x03, b'c', b'i', b'd', // client identifier
        0x00, 0x03, b'w', b'/', b't', // will topic
        0x00, 0x02, b'b', b'y', // will message
        0x00, 0x01, b'u', // user name
        0x00, 0x02, b'p', b'w', // password
    ];
    let Packet::Connect(c) = fixture(&bytes, V4) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, V4);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 10);
    assert_eq!(c.client_id, "cid");
    let will = c.will.expect("will");
    assert_eq!(will.topic, topic("w/t"));
    assert_eq!(will.payload, Bytes::from_static(b"by"));
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert!(!will.retain);
    assert_eq!(c.username.as_deref(), Some("u"));
    assert_eq!(c.password, Some(Bytes::from_static(b"pw")));
}

#[test]
fn connect_v31_mqisdp() {
    let bytes = [
        0x10, 16, // CONNECT
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name of 3.1
        0x03, // level 3
        0x02, // clean session
        0x00, 0x3C, // keep alive 60
        0x00, 0x02, b'i', b'd', // client identifier
    ];
    let Packet::Connect(c) = fixture(&bytes, V4) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, V31);
    assert_eq!(c.client_id, "id");
}

#[test]
fn connect_v5_with_properties_and_will_properties() {
    // MQTT-3.1.3-1 / -3 (v5): the payload fields in their order, the Client Identifier
    // first, both ways.
    let bytes = [
        0x10, 44, // CONNECT
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, // MQTT level 5
        0x04, // will flag only (clean start 0)
        0x00, 0x1E, // keep alive 30
        11,   // property length
        0x11, 0x00, 0x00, 0x00, 0x78, // session expiry 120
        0x21, 0x00, 0x14, // receive maximum 20
        0x22, 0x00, 0x0A, // topic alias maximum 10
        0x00, 0x01, b'c', // client identifier
        13,   // will property length
        0x18, 0x00, 0x00, 0x00, 0x05, // will delay 5
        0x01, 0x01, // payload format UTF-8
        0x03, 0x00, 0x03, b't', b'x', b't', // content type
        0x00, 0x01, b'w', // will topic
        0x00, 0x00, // empty will payload
    ];
    let Packet::Connect(c) = fixture(&bytes, V4) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, V5);
    assert!(!c.clean_start);
    assert_eq!(c.properties.session_expiry_interval, Some(120));
    assert_eq!(c.properties.receive_maximum, NonZeroU16::new(20));
    assert_eq!(c.properties.topic_alias_maximum, Some(10));
    let will = c.will.expect("will");
    assert_eq!(will.properties.will_delay_interval, Some(5));
    assert_eq!(
        will.properties.payload_format_indicator,
        Some(PayloadFormat::Utf8)
    );
    assert_eq!(will.properties.content_type.as_deref(), Some("txt"));
}

#[test]
fn connack_v311_and_v5() {
    // MQTT-3.2.2-1 (v5): the acknowledge flags' reserved bits are 0 (encoded back to the same
    // bytes at both levels).
    // 3.1.1: session present, return code 0x05 (not authorized).
    let Packet::ConnAck(c) = fixture(&[0x20, 0x02, 0x01, 0x05], V4) else {
        panic!()
    };
    assert!(c.session_present);
    assert_eq!(c.reason_code, ReasonCode::NotAuthorized);
    // 5.0: success with Assigned Client Identifier and Maximum QoS 1.
    let bytes = [
        0x20, 0x0A, // CONNACK
        0x00, 0x00, // flags, reason code Success
        0x07, // property length
        0x24, 0x01, // maximum QoS 1
        0x12, 0x00, 0x02, b'i', b'd', // assigned client identifier
    ];
    let Packet::ConnAck(c) = fixture(&bytes, V5) else {
        panic!()
    };
    assert_eq!(
        c.properties.assigned_client_identifier.as_deref(),
        Some("id")
    );
    assert_eq!(c.properties.maximum_qos, Some(QoS::AtLeastOnce));
}

#[test]
fn publish_v311_qos0_and_qos1() {
    // MQTT-2.3.1-5 (3.1.1): a QoS 0 PUBLISH carries no Packet Identifier, both ways.
    let bytes = [
        0x30, 0x06, // PUBLISH QoS 0
        0x00, 0x03, b'a', b'/', b'b', // topic
        b'x', // payload
    ];
    let Packet::Publish(p) = fixture(&bytes, V4) else {
        panic!()
    };
    assert_eq!(p.qos, PublishQoS::AtMostOnce);
    assert_eq!(p.payload, Bytes::from_static(b"x"));
    let bytes = [
        0x3B, 0x07, // PUBLISH DUP, QoS 1, RETAIN
        0x00, 0x01, b't', // topic
        0x00, 0x0A, // packet identifier 10
        b'h', b'i', // payload
    ];
    let Packet::Publish(p) = fixture(&bytes, V4) else {
        panic!()
    };
    assert!(p.dup && p.retain);
    assert_eq!(p.qos, PublishQoS::AtLeastOnce(pid(10)));
}

#[test]
fn publish_v5_with_properties_and_alias_only() {
    let bytes = [
        0x34, 0x13, // PUBLISH QoS 2
        0x00, 0x00, // empty topic: the alias names it
        0x00, 0x07, // packet identifier 7
        0x0C, // property length
        0x23, 0x00, 0x03, // topic alias 3
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k=v
        0x0B, 0x05, // subscription identifier 5
        b'o', b'k', // payload
    ];
    let Packet::Publish(p) = fixture(&bytes, V5) else {
        panic!()
    };
    assert!(p.topic.is_empty());
    assert_eq!(p.qos, PublishQoS::ExactlyOnce(pid(7)));
    assert_eq!(p.properties.topic_alias, Some(3));
    assert_eq!(
        p.properties.user_properties,
        vec![UserProperty::new("k", "v")]
    );
    assert_eq!(
        p.properties.subscription_identifiers,
        vec![NonZeroU32::new(5).expect("non-zero")]
    );
}

#[test]
fn pub_responses_both_levels() {
    for (first, kind) in [
        (0x40, PacketType::PubAck),
        (0x50, PacketType::PubRec),
        (0x62, PacketType::PubRel),
        (0x70, PacketType::PubComp),
    ] {
        let p = fixture(&[first, 0x02, 0x12, 0x34], V4);
        assert_eq!(p.packet_type(), kind);
        // v5 short form: reason code Success and no properties are left out.
        let p5 = fixture(&[first, 0x02, 0x12, 0x34], V5);
        assert_eq!(p, p5);
    }
    // v5 PUBACK 0x10 (no matching subscribers) without properties.
    let Packet::PubAck(a) = fixture(&[0x40, 0x03, 0x00, 0x01, 0x10], V5) else {
        panic!()
    };
    assert_eq!(a.reason_code, ReasonCode::NoMatchingSubscribers);
    // v5 PUBREC 0x80 with a reason string.
    let bytes = [
        0x50, 0x08, // PUBREC
        0x00, 0x02, // packet identifier
        0x80, // unspecified error
        0x04, 0x1F, 0x00, 0x01, b'e', // reason string "e"
    ];
    let Packet::PubRec(a) = fixture(&bytes, V5) else {
        panic!()
    };
    assert_eq!(a.properties.reason_string.as_deref(), Some("e"));
    // v5 PUBREL may carry 0x92.
    let Packet::PubRel(a) = fixture(&[0x62, 0x03, 0x00, 0x01, 0x92], V5) else {
        panic!()
    };
    assert_eq!(a.reason_code, ReasonCode::PacketIdentifierNotFound);
}

#[test]
fn subscribe_and_suback_both_levels() {
    let bytes = [
        0x82, 0x0C, // SUBSCRIBE (flags 0b0010)
        0x00, 0x01, // packet identifier
        0x00, 0x01, b'a', 0x01, // "a" QoS 1
        0x00, 0x03, b'b', b'/', b'#', 0x02, // "b/#" QoS 2
    ];
    let Packet::Subscribe(s) = fixture(&bytes, V4) else {
        panic!()
    };
    assert_eq!(
        s.filters,
        vec![
            (filter("a"), SubscriptionOptions::new(QoS::AtLeastOnce)),
            (filter("b/#"), SubscriptionOptions::new(QoS::ExactlyOnce)),
        ]
    );
    let bytes = [
        0x82, 0x09, // SUBSCRIBE
        0x00, 0x02, // packet identifier
        0x02, 0x0B, 0x07, // subscription identifier 7
        0x00, 0x01, b'+', // "+"
        0x2D, // retain handling 2, RAP, NL, QoS 1
    ];
    let Packet::Subscribe(s) = fixture(&bytes, V5) else {
        panic!()
    };
    let (_, o) = &s.filters[0];
    assert!(o.no_local && o.retain_as_published);
    assert_eq!(o.retain_handling, RetainHandling::DoNotSend);
    assert_eq!(o.qos, QoS::AtLeastOnce);
    assert_eq!(s.properties.subscription_identifier, NonZeroU32::new(7));
    let Packet::SubAck(a) = fixture(&[0x90, 0x05, 0x00, 0x01, 0x00, 0x02, 0x80], V4) else {
        panic!()
    };
    assert_eq!(
        a.reason_codes,
        vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError
        ]
    );
    let Packet::SubAck(a) = fixture(&[0x90, 0x05, 0x00, 0x01, 0x00, 0x01, 0x87], V5) else {
        panic!()
    };
    assert_eq!(
        a.reason_codes,
        vec![ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized]
    );
}

#[test]
fn unsubscribe_and_unsuback_both_levels() {
    let bytes = [0xA2, 0x05, 0x00, 0x03, 0x00, 0x01, b'x'];
    let Packet::Unsubscribe(u) = fixture(&bytes, V4) else {
        panic!()
    };
    assert_eq!(u.filters, vec![filter("x")]);
    let bytes = [0xA2, 0x06, 0x00, 0x03, 0x00, 0x00, 0x01, b'x'];
    fixture(&bytes, V5);
    let Packet::UnsubAck(a) = fixture(&[0xB0, 0x02, 0x00, 0x03], V4) else {
        panic!()
    };
    assert!(a.reason_codes.is_empty());
    let Packet::UnsubAck(a) = fixture(&[0xB0, 0x05, 0x00, 0x03, 0x00, 0x00, 0x11], V5) else {
        panic!()
    };
    assert_eq!(
        a.reason_codes,
        vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
    );
}

#[test]
fn ping_disconnect_auth() {
    assert_eq!(fixture(&[0xC0, 0x00], V4), Packet::PingReq);
    assert_eq!(fixture(&[0xD0, 0x00], V5), Packet::PingResp);
    assert_eq!(
        fixture(&[0xE0, 0x00], V4),
        Packet::Disconnect(Disconnect::default())
    );
    let Packet::Disconnect(d) = fixture(&[0xE0, 0x01, 0x04], V5) else {
        panic!()
    };
    assert_eq!(d.reason_code, ReasonCode::DisconnectWithWillMessage);
    let bytes = [
        0xE0, 0x07, // DISCONNECT
        0x8B, // server shutting down
        0x05, 0x11, 0x00, 0x00, 0x00, 0x00, // session expiry 0
    ];
    fixture(&bytes, V5);
    assert_eq!(
        fixture(&[0xF0, 0x00], V5),
        Packet::Auth(Auth {
            reason_code: ReasonCode::Success,
            properties: AuthProperties::default()
        })
    );
    let bytes = [
        0xF0, 0x0A, // AUTH
        0x18, // continue authentication
        0x08, 0x15, 0x00, 0x02, b'm', b'1', 0x16, 0x00, 0x00, // method "m1", empty data
    ];
    let Packet::Auth(a) = fixture(&bytes, V5) else {
        panic!()
    };
    assert_eq!(a.properties.authentication_method.as_deref(), Some("m1"));
}
