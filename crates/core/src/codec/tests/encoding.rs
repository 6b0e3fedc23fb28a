//! Encoding: the encode-once PUBLISH form and refusals.

use bytes::{Bytes, BytesMut};

use super::*;

#[test]
fn encoded_publish_patches_flags_and_packet_id_only() {
    let mut p = Publish::new(
        topic("a/b"),
        PublishQoS::AtLeastOnce(pid(1)),
        &b"payload"[..],
    );
    p.properties.content_type = Some("text/plain".into());
    for v in [V4, V5] {
        let form = EncodedPublish::new(&p, v).expect("encodes");
        for (dup, qos, retain) in [
            (false, PublishQoS::AtLeastOnce(pid(7)), false),
            (true, PublishQoS::ExactlyOnce(pid(65535)), true),
        ] {
            let mut expected = p.clone();
            expected.dup = dup;
            expected.qos = qos;
            expected.retain = retain;
            let mut want = BytesMut::new();
            Packet::Publish(expected)
                .encode(v, &mut want)
                .expect("encodes");
            let mut got = BytesMut::new();
            form.write(&mut got, dup, qos, retain).expect("same form");
            assert_eq!(got, want);
            assert_eq!(form.len(), want.len());
            // A copy encoded alone, from its parts, is the same packet.
            let mut alone = BytesMut::new();
            let properties = v.is_v5().then_some(&p.properties);
            let flags = (dup, qos, retain);
            super::super::write_publish_head(&mut alone, flags, &p.topic, properties, 7)
                .expect("encodes");
            alone.extend_from_slice(&p.payload);
            assert_eq!(alone, want);
        }
        let mut out = BytesMut::new();
        assert_eq!(
            form.write_head(&mut out, false, PublishQoS::AtMostOnce, false),
            Err(EncodeError::WireFormMismatch)
        );
        // write_head hands back the very payload, not a copy.
        let payload = form
            .write_head(&mut out, false, PublishQoS::AtLeastOnce(pid(2)), false)
            .expect("same form");
        assert_eq!(payload.as_ptr(), p.payload.as_ptr());
    }
    let q0 = Publish::new(topic("x"), PublishQoS::AtMostOnce, &b"z"[..]);
    let form = EncodedPublish::new(&q0, V4).expect("encodes");
    let mut got = BytesMut::new();
    form.write(&mut got, false, PublishQoS::AtMostOnce, true)
        .expect("same form");
    assert_eq!(&got[..], &[0x31, 0x04, 0x00, 0x01, b'x', b'z']);
}

/// §3.3.2.3.4: the aliased copy of a shared form decodes to the same PUBLISH with the
/// Topic Alias added (and, once the alias is set, an empty Topic Name); the shared form
/// itself is unchanged. Property Lengths on both sides of a varint boundary (127) and
/// packets at both QoS forms.
#[test]
fn encoded_publish_writes_aliased_copies() {
    for (qos, user_bytes) in [
        (PublishQoS::AtMostOnce, 0usize),
        (PublishQoS::AtLeastOnce(pid(9)), 0),
        // Property Length 126 and 127: one varint byte without the alias, two with it.
        (PublishQoS::AtLeastOnce(pid(9)), 120),
        (PublishQoS::ExactlyOnce(pid(300)), 121),
        (PublishQoS::AtLeastOnce(pid(9)), 124),
        (PublishQoS::AtMostOnce, 200),
    ] {
        let mut p = Publish::new(topic("plant/line-4/temp"), qos, &b"21.5"[..]);
        if user_bytes > 0 {
            p.properties.user_properties.push(UserProperty {
                name: "k".into(),
                value: "v".repeat(user_bytes).into(),
            });
        }
        let form = EncodedPublish::new(&p, V5).expect("encodes");
        let plain = {
            let mut out = BytesMut::new();
            form.write(&mut out, false, qos, true).expect("same form");
            out
        };
        for alias in [TopicAliasUse::Set(7), TopicAliasUse::Use(7)] {
            let mut out = BytesMut::new();
            let payload = form
                .write_head_aliased(&mut out, false, qos, true, alias)
                .expect("v5 form");
            out.extend_from_slice(payload);
            let mut want = p.clone();
            want.retain = true;
            want.properties.topic_alias = Some(7);
            if let TopicAliasUse::Use(_) = alias {
                want.topic = TopicName::empty();
            }
            assert_eq!(
                decode_all(&out, V5),
                Ok(Some(Packet::Publish(want))),
                "{qos:?} {user_bytes} {alias:?}"
            );
        }
        let mut again = BytesMut::new();
        form.write(&mut again, false, qos, true).expect("same form");
        assert_eq!(again, plain, "the shared form is untouched");
    }
    // 3.1.1 has no topic aliases.
    let p = Publish::new(topic("a/b"), PublishQoS::AtMostOnce, &b"x"[..]);
    let form = EncodedPublish::new(&p, V4).expect("encodes");
    let mut out = BytesMut::new();
    assert_eq!(
        form.write_head_aliased(
            &mut out,
            false,
            PublishQoS::AtMostOnce,
            false,
            TopicAliasUse::Set(1)
        ),
        Err(EncodeError::WireFormMismatch)
    );
}

#[test]
fn encode_refuses_oversized_fields_and_auth_before_v5() {
    // MQTT-4.7.3-3 (both): no string (topic names and filters included) is encoded beyond
    // 65,535 bytes.
    let long = "a".repeat(70_000);
    let p = Packet::Publish(Publish::new(
        TopicName::new(long.as_str()).unwrap_or_else(|_| topic("t")),
        PublishQoS::AtMostOnce,
        Bytes::new(),
    ));
    // The topic could not even be made; check a long client identifier instead.
    let _ = p;
    let c = Packet::Connect(Box::new(Connect::new(V4, long.as_str())));
    let mut out = BytesMut::new();
    assert_eq!(c.encode(V4, &mut out), Err(EncodeError::FieldTooLong));
    assert!(out.is_empty());
    let a = Packet::Auth(Auth {
        reason_code: ReasonCode::Success,
        properties: AuthProperties::default(),
    });
    assert_eq!(
        a.encode(V4, &mut out),
        Err(EncodeError::NotInProtocolLevel(PacketType::Auth))
    );
}

#[test]
fn v311_connack_encodes_v5_only_codes_as_closest_return_code() {
    let mut out = BytesMut::new();
    Packet::ConnAck(ConnAck::new(false, ReasonCode::Banned))
        .encode(V4, &mut out)
        .expect("encodes");
    assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x05]);
}

/// MQTT-2.2.2-1 (v5): no properties is a Property Length of 0, never an absent field;
/// MQTT-2.2.1-2 (v5): a QoS 0 PUBLISH has no Packet Identifier.
#[test]
fn v5_empty_properties_are_a_zero_length_and_qos0_has_no_packet_id() {
    let p = Publish::new(topic("t"), PublishQoS::AtMostOnce, &b"x"[..]);
    let mut out = BytesMut::new();
    Packet::Publish(p).encode(V5, &mut out).expect("encodes");
    assert_eq!(&out[..], &[0x30, 0x05, 0x00, 0x01, b't', 0x00, b'x']);
    let mut out = BytesMut::new();
    Packet::SubAck(SubAck {
        packet_id: pid(3),
        reason_codes: vec![ReasonCode::GrantedQoS1],
        properties: Default::default(),
    })
    .encode(V5, &mut out)
    .expect("encodes");
    assert_eq!(&out[..], &[0x90, 0x04, 0x00, 0x03, 0x00, 0x01]);
}
