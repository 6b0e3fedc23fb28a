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

#[test]
fn encode_refuses_oversized_fields_and_auth_before_v5() {
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
