//! The protocol violations that end a connection, each with the rule it breaks and the
//! reason code a v5 client is told (MQTT-4.13.1-1). Logs and the per-rule counter
//! ([`Metrics::protocol_errors_by_rule`](crate::metrics::Metrics::protocol_errors_by_rule))
//! name the rule, so an operator can tell which one fired.

use crate::codec::{DecodeError, ReasonCode};

/// Why the broker ends a connection for what the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Violation {
    /// The packet could not be decoded, or broke a rule the decoder checks.
    Malformed(DecodeError),
    /// A second CONNECT (MQTT-3.1.0-2).
    SecondConnect,
    /// A packet only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP), or AUTH from a
    /// 3.1.1 client.
    ServerPacketFromClient,
    /// Topic Alias 0 (MQTT-3.3.2-8).
    TopicAliasZero,
    /// A Topic Alias above the Topic Alias Maximum the broker sent (MQTT-3.2.2-17).
    TopicAliasAboveMaximum,
    /// A Topic Alias never set on this connection, used with an empty topic (v5 §3.3.2.3.4).
    TopicAliasUnknown,
    /// A Subscription Identifier on a PUBLISH from a client (MQTT-3.3.4-6).
    SubscriptionIdentifierFromClient,
    /// A topic over `Limits::max_topic_levels` or `Limits::max_topic_length`.
    TopicOverLimits,
    /// A PUBLISH above the Maximum QoS the broker sent (MQTT-3.2.2-11).
    QoSNotSupported,
    /// A retained PUBLISH where Retain Available was 0 (MQTT-3.2.2-14).
    RetainNotSupported,
    /// Payload Format Indicator 1 on a payload that is not UTF-8 (v5 §3.3.2.3.2).
    PayloadFormatInvalid,
    /// More unacknowledged QoS 2 PUBLISHes than the broker's Receive Maximum (MQTT-3.3.4-7).
    ReceiveMaximumExceeded,
    /// No Local on a shared subscription (MQTT-3.8.3-4).
    NoLocalOnSharedSubscription,
    /// DISCONNECT raising a Session Expiry Interval that CONNECT set to 0 (v5 §3.14.2.2.2).
    SessionExpiryRaisedFromZero,
    /// AUTH on a connection that did not start enhanced authentication (MQTT-4.12.0-7).
    AuthWithoutMethod,
    /// AUTH with another method than CONNECT's, or with reason code 0x00 from the client
    /// (MQTT-4.12.0-5).
    AuthOutOfSequence,
    /// A re-authentication the authenticator refused (MQTT-4.12.1-2); carries its code.
    ReauthenticationRefused(ReasonCode),
}

impl Violation {
    /// The reason code of the DISCONNECT a v5 client gets.
    pub(crate) fn reason_code(&self) -> ReasonCode {
        use Violation::*;
        match self {
            Malformed(e) => e.reason_code(),
            TopicAliasZero | TopicAliasAboveMaximum => ReasonCode::TopicAliasInvalid,
            TopicOverLimits => ReasonCode::TopicNameInvalid,
            QoSNotSupported => ReasonCode::QoSNotSupported,
            RetainNotSupported => ReasonCode::RetainNotSupported,
            PayloadFormatInvalid => ReasonCode::PayloadFormatInvalid,
            ReceiveMaximumExceeded => ReasonCode::ReceiveMaximumExceeded,
            ReauthenticationRefused(code) => *code,
            SecondConnect
            | ServerPacketFromClient
            | TopicAliasUnknown
            | SubscriptionIdentifierFromClient
            | NoLocalOnSharedSubscription
            | SessionExpiryRaisedFromZero
            | AuthWithoutMethod
            | AuthOutOfSequence => ReasonCode::ProtocolError,
        }
    }

    /// The normative statement (or section, or limit) the client broke.
    pub(crate) fn rule(&self) -> &'static str {
        use Violation::*;
        match self {
            Malformed(e) => e.spec_id(),
            SecondConnect => "MQTT-3.1.0-2",
            ServerPacketFromClient => "MQTT 3.1.1 §2.2.1 / MQTT 5.0 §2.1.2 (packet direction)",
            TopicAliasZero => "MQTT-3.3.2-8 (v5)",
            TopicAliasAboveMaximum => "MQTT-3.2.2-17 (v5)",
            TopicAliasUnknown => "MQTT 5.0 §3.3.2.3.4",
            SubscriptionIdentifierFromClient => "MQTT-3.3.4-6 (v5)",
            TopicOverLimits => "Limits::max_topic_levels / max_topic_length",
            QoSNotSupported => "MQTT-3.2.2-11 (v5)",
            RetainNotSupported => "MQTT-3.2.2-14 (v5)",
            PayloadFormatInvalid => "MQTT 5.0 §3.3.2.3.2",
            ReceiveMaximumExceeded => "MQTT-3.3.4-7 (v5)",
            NoLocalOnSharedSubscription => "MQTT-3.8.3-4 (v5)",
            SessionExpiryRaisedFromZero => "MQTT 5.0 §3.14.2.2.2",
            AuthWithoutMethod => "MQTT-4.12.0-7 (v5)",
            AuthOutOfSequence => "MQTT-4.12.0-5 (v5)",
            ReauthenticationRefused(_) => "MQTT-4.12.1-2 (v5)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_violation_names_a_rule_and_an_error_code() {
        let all = [
            Violation::Malformed(DecodeError::DupOnQoS0),
            Violation::SecondConnect,
            Violation::ServerPacketFromClient,
            Violation::TopicAliasZero,
            Violation::TopicAliasAboveMaximum,
            Violation::TopicAliasUnknown,
            Violation::SubscriptionIdentifierFromClient,
            Violation::TopicOverLimits,
            Violation::QoSNotSupported,
            Violation::RetainNotSupported,
            Violation::PayloadFormatInvalid,
            Violation::ReceiveMaximumExceeded,
            Violation::NoLocalOnSharedSubscription,
            Violation::SessionExpiryRaisedFromZero,
            Violation::AuthWithoutMethod,
            Violation::AuthOutOfSequence,
            Violation::ReauthenticationRefused(ReasonCode::NotAuthorized),
        ];
        let mut rules = std::collections::HashSet::new();
        for v in &all {
            assert!(!v.reason_code().is_success(), "{v:?}");
            assert!(!v.rule().is_empty(), "{v:?}");
            rules.insert(v.rule());
        }
        assert_eq!(rules.len(), all.len(), "each violation names its own rule");
        assert_eq!(
            Violation::Malformed(DecodeError::DupOnQoS0).rule(),
            "MQTT-3.3.1-2"
        );
    }
}
