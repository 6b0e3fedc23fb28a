//! Property tests: round trips over arbitrary valid packets, and arbitrary bytes.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};

use super::*;
use bytestring::ByteString;
use proptest::prelude::*;

fn arb_str() -> impl Strategy<Value = ByteString> {
    "[a-z0-9 é/_-]{0,8}".prop_map(ByteString::from)
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn arb_topic() -> impl Strategy<Value = TopicName> {
    "[a-z$]{1,4}(/[a-z0-9]{0,4}){0,3}".prop_map(|s| topic(&s))
}

fn arb_filter() -> BoxedStrategy<TopicFilter> {
    let level = prop_oneof!["[a-z]{0,4}", Just("+".to_string())];
    (proptest::collection::vec(level, 1..4), any::<bool>())
        .prop_map(|(levels, hash)| {
            let mut s = levels.join("/");
            if hash {
                s.push_str(if s.is_empty() { "#" } else { "/#" });
            }
            if s.is_empty() {
                s.push('x');
            }
            filter(&s)
        })
        .boxed()
}

fn arb_pid() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(pid)
}

fn arb_qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn arb_users() -> BoxedStrategy<Vec<UserProperty>> {
    proptest::collection::vec(
        (arb_str(), arb_str()).prop_map(|(n, v)| UserProperty::new(n, v)),
        0..3,
    )
    .boxed()
}

fn arb_version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V31), Just(V4), Just(V5)]
}

fn arb_reason(table: &'static [ReasonCode]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(table)
}

fn arb_ack_props() -> BoxedStrategy<AckProperties> {
    (proptest::option::of(arb_str()), arb_users())
        .prop_map(|(reason_string, user_properties)| AckProperties {
            reason_string,
            user_properties,
        })
        .boxed()
}

fn arb_nz16() -> impl Strategy<Value = Option<NonZeroU16>> {
    proptest::option::of((1u16..).prop_map(|v| NonZeroU16::new(v).expect("non-zero")))
}

fn arb_nz32() -> impl Strategy<Value = Option<NonZeroU32>> {
    proptest::option::of((1u32..).prop_map(|v| NonZeroU32::new(v).expect("non-zero")))
}

fn arb_payload_format() -> impl Strategy<Value = Option<PayloadFormat>> {
    proptest::option::of(prop_oneof![
        Just(PayloadFormat::Unspecified),
        Just(PayloadFormat::Utf8)
    ])
}

fn arb_connect_props() -> BoxedStrategy<ConnectProperties> {
    (
        (
            any::<Option<u32>>(),
            arb_nz16(),
            arb_nz32(),
            any::<Option<u16>>(),
        ),
        (any::<Option<bool>>(), any::<Option<bool>>(), arb_users()),
        proptest::option::of((arb_str(), proptest::option::of(arb_bytes()))),
    )
        .prop_map(
            |((sei, rm, mps, tam), (rri, rpi, users), auth)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: users,
                authentication_method: auth.as_ref().map(|(m, _)| m.clone()),
                authentication_data: auth.and_then(|(_, d)| d),
            },
        )
        .boxed()
}

fn arb_will(v5: bool) -> BoxedStrategy<LastWill> {
    (
        (arb_topic(), arb_bytes(), arb_qos(), any::<bool>()),
        (
            any::<Option<u32>>(),
            arb_payload_format(),
            any::<Option<u32>>(),
        ),
        (
            proptest::option::of(arb_str()),
            proptest::option::of(arb_topic()),
            proptest::option::of(arb_bytes()),
            arb_users(),
        ),
    )
        .prop_map(
            move |((topic, payload, qos, retain), (wdi, pfi, mei), (ct, rt, cd, users))| {
                let properties = if v5 {
                    WillProperties {
                        will_delay_interval: wdi,
                        payload_format_indicator: pfi,
                        message_expiry_interval: mei,
                        content_type: ct,
                        response_topic: rt,
                        correlation_data: cd,
                        user_properties: users,
                    }
                } else {
                    WillProperties::default()
                };
                LastWill {
                    topic,
                    payload,
                    qos,
                    retain,
                    properties,
                }
            },
        )
        .boxed()
}

fn arb_connect(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    (
        (any::<bool>(), any::<u16>(), arb_str()),
        proptest::option::of(arb_will(v5)),
        proptest::option::of(arb_str()),
        proptest::option::of(arb_bytes()),
        arb_connect_props(),
    )
        .prop_map(move |((clean, ka, id), will, user, pass, props)| {
            let mut c = Connect::new(v, id);
            c.clean_start = clean;
            c.keep_alive = ka;
            c.will = will;
            // Before 5.0 a password needs a user name (MQTT-3.1.2-22).
            c.password = if v5 || user.is_some() { pass } else { None };
            c.username = user;
            if v5 {
                c.properties = props;
            }
            Packet::Connect(Box::new(c))
        })
        .boxed()
}

fn arb_connack_props() -> BoxedStrategy<ConnAckProperties> {
    (
        (
            any::<Option<u32>>(),
            arb_nz16(),
            any::<Option<bool>>(),
            any::<Option<bool>>(),
        ),
        (
            arb_nz32(),
            proptest::option::of(arb_str()),
            any::<Option<u16>>(),
            arb_ack_props(),
        ),
        (
            any::<Option<bool>>(),
            any::<Option<bool>>(),
            any::<Option<bool>>(),
            any::<Option<u16>>(),
        ),
        (
            proptest::option::of(arb_str()),
            proptest::option::of(arb_str()),
            proptest::option::of(arb_str()),
            proptest::option::of(arb_bytes()),
        ),
    )
        .prop_map(
            |((sei, rm, mq, ra), (mps, aci, tam, ack), (wsa, sia, ssa, ska), (ri, sr, am, ad))| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq.map(|one| {
                        if one {
                            QoS::AtLeastOnce
                        } else {
                            QoS::AtMostOnce
                        }
                    }),
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: ack.reason_string,
                    user_properties: ack.user_properties,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                }
            },
        )
        .boxed()
}

fn arb_publish(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    (
        (
            any::<bool>(),
            arb_qos(),
            arb_pid(),
            any::<bool>(),
            arb_topic(),
            arb_bytes(),
        ),
        (
            arb_payload_format(),
            any::<Option<u32>>(),
            any::<Option<u16>>(),
            any::<bool>(),
        ),
        (
            proptest::option::of(arb_topic()),
            proptest::option::of(arb_bytes()),
            arb_users(),
            proptest::collection::vec(1u32..=MAX_VARINT, 0..3),
            proptest::option::of(arb_str()),
        ),
    )
        .prop_map(
            move |(
                (dup, qos, id, retain, topic, payload),
                (pfi, mei, alias, use_alias),
                (rt, cd, users, sids, ct),
            )| {
                let mut p = Publish::new(topic, PublishQoS::new(qos, id), payload);
                p.dup = dup && qos != QoS::AtMostOnce;
                p.retain = retain;
                if v5 {
                    p.properties = PublishProperties {
                        payload_format_indicator: pfi,
                        message_expiry_interval: mei,
                        topic_alias: alias,
                        response_topic: rt,
                        correlation_data: cd,
                        user_properties: users,
                        subscription_identifiers: sids
                            .into_iter()
                            .filter_map(NonZeroU32::new)
                            .collect(),
                        content_type: ct,
                    };
                    if use_alias && alias.is_some() {
                        p.topic = TopicName::empty();
                    }
                }
                Packet::Publish(p)
            },
        )
        .boxed()
}

fn arb_pub_response(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    (
        0u8..4,
        arb_pid(),
        arb_reason(reason::allowed::PUBACK),
        arb_reason(reason::allowed::PUBREL),
        arb_ack_props(),
    )
        .prop_map(move |(kind, id, code_a, code_r, props)| {
            let mut r = PubResponse::new(id);
            if v5 {
                r.reason_code = if kind == 2 || kind == 3 {
                    code_r
                } else {
                    code_a
                };
                r.properties = props;
            }
            match kind {
                0 => Packet::PubAck(r),
                1 => Packet::PubRec(r),
                2 => Packet::PubRel(r),
                _ => Packet::PubComp(r),
            }
        })
        .boxed()
}

fn arb_sub_options(v5: bool) -> impl Strategy<Value = SubscriptionOptions> {
    (arb_qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| {
        let mut o = SubscriptionOptions::new(qos);
        if v5 {
            o.no_local = nl;
            o.retain_as_published = rap;
            o.retain_handling = match rh {
                0 => RetainHandling::SendOnSubscribe,
                1 => RetainHandling::SendIfNew,
                _ => RetainHandling::DoNotSend,
            };
        }
        o
    })
}

fn arb_subscriptions(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let v3_suback = &[
        ReasonCode::Success,
        ReasonCode::GrantedQoS1,
        ReasonCode::GrantedQoS2,
        ReasonCode::UnspecifiedError,
    ][..];
    (
        0u8..4,
        arb_pid(),
        proptest::collection::vec((arb_filter(), arb_sub_options(v5)), 1..4),
        (
            proptest::option::of(1u32..=MAX_VARINT),
            arb_users(),
            arb_ack_props(),
        ),
        proptest::collection::vec(arb_reason(reason::allowed::SUBACK), 0..4),
        proptest::collection::vec(proptest::sample::select(v3_suback), 0..4),
        proptest::collection::vec(arb_reason(reason::allowed::UNSUBACK), 0..4),
    )
        .prop_map(
            move |(kind, packet_id, filters, (sid, users, ack), sub5, sub3, unsub)| {
                let ack = if v5 { ack } else { AckProperties::default() };
                let users = if v5 { users } else { Vec::new() };
                match kind {
                    0 => Packet::Subscribe(Subscribe {
                        packet_id,
                        properties: SubscribeProperties {
                            subscription_identifier: sid.filter(|_| v5).and_then(NonZeroU32::new),
                            user_properties: users,
                        },
                        filters,
                    }),
                    1 => Packet::SubAck(SubAck {
                        packet_id,
                        properties: ack,
                        reason_codes: if v5 { sub5 } else { sub3 },
                    }),
                    2 => Packet::Unsubscribe(Unsubscribe {
                        packet_id,
                        properties: UnsubscribeProperties {
                            user_properties: users,
                        },
                        filters: filters.into_iter().map(|(f, _)| f).collect(),
                    }),
                    _ => Packet::UnsubAck(UnsubAck {
                        packet_id,
                        properties: ack,
                        reason_codes: if v5 { unsub } else { Vec::new() },
                    }),
                }
            },
        )
        .boxed()
}

fn arb_other(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    (
        0u8..5,
        arb_reason(reason::allowed::DISCONNECT),
        (
            any::<Option<u32>>(),
            arb_ack_props(),
            proptest::option::of(arb_str()),
        ),
        (
            arb_reason(reason::allowed::AUTH),
            arb_str(),
            proptest::option::of(arb_bytes()),
            arb_ack_props(),
        ),
        (
            any::<bool>(),
            arb_reason(reason::allowed::CONNACK),
            arb_connack_props(),
        ),
    )
        .prop_map(
            move |(
                kind,
                dcode,
                (sei, ack, sr),
                (acode, method, data, aack),
                (sp, ccode, cprops),
            )| {
                match kind {
                    0 => Packet::PingReq,
                    1 => Packet::PingResp,
                    2 if v5 => Packet::Disconnect(Disconnect {
                        reason_code: dcode,
                        properties: DisconnectProperties {
                            session_expiry_interval: sei,
                            reason_string: ack.reason_string,
                            user_properties: ack.user_properties,
                            server_reference: sr,
                        },
                    }),
                    2 => Packet::Disconnect(Disconnect::default()),
                    3 if v5 => Packet::Auth(Auth {
                        reason_code: acode,
                        properties: AuthProperties {
                            authentication_method: Some(method),
                            authentication_data: data,
                            reason_string: aack.reason_string,
                            user_properties: aack.user_properties,
                        },
                    }),
                    _ if v5 => Packet::ConnAck(ConnAck {
                        session_present: sp,
                        reason_code: ccode,
                        properties: cprops,
                    }),
                    _ => {
                        let code =
                            ReasonCode::from_v3_connack(ccode.to_v3_connack()).unwrap_or_default();
                        Packet::ConnAck(ConnAck::new(sp, code))
                    }
                }
            },
        )
        .boxed()
}

fn arb_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    arb_version().prop_flat_map(|v| {
        let packet = prop_oneof![
            arb_connect(v),
            arb_publish(v),
            arb_pub_response(v),
            arb_subscriptions(v),
            arb_other(v),
        ];
        (Just(v), packet)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Encoding then decoding is the identity, at every level, and every strict prefix of
    /// the encoding is "need more".
    #[test]
    fn round_trip((v, packet) in arb_packet()) {
        let mut out = BytesMut::new();
        packet.encode(v, &mut out).expect("valid packets encode");
        prop_assert_eq!(packet.encoded_len(v), Ok(out.len()));
        let wire = out.clone().freeze();
        for end in 0..wire.len() {
            let mut prefix = BytesMut::from(&wire[..end]);
            prop_assert_eq!(decode(&mut prefix, &DecodeLimits::new(v)), Ok(None));
        }
        let decoded = decode(&mut out, &DecodeLimits::new(v)).expect("decodes").expect("complete");
        prop_assert!(out.is_empty());
        prop_assert_eq!(decoded, packet);
    }

    /// Arbitrary bytes never panic the decoder, and it never hands out a packet larger than
    /// the limit.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), v in arb_version(), max in 2u32..600) {
        let mut buf = BytesMut::from(&bytes[..]);
        let before = buf.len();
        let limits = DecodeLimits::new(v).with_max_packet_size(max);
        if let Ok(Some(_)) = decode(&mut buf, &limits) {
            prop_assert!(before - buf.len() <= max as usize);
        }
    }

    /// Bytes shaped like a packet (a valid first byte and length) with random bodies.
    #[test]
    fn random_bodies_never_panic(first in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..120), v in arb_version()) {
        let mut bytes = vec![first, body.len() as u8];
        bytes.extend_from_slice(&body);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode(&mut buf, &DecodeLimits::new(v));
    }
}
