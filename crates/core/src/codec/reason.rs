//! Reason codes (MQTT 5.0 section 2.4) and the MQTT 3.1.1 return codes that map onto them.
//!
//! One enum serves both protocol levels so the broker reasons in a single vocabulary: a 3.1.1
//! CONNACK return code or SUBACK code is the v5 reason code with the same meaning (3.1.1's
//! return codes 1..5 map to 0x84, 0x85, 0x88, 0x86, 0x87), and the encoder translates back
//! when it writes a 3.1.1 packet.

use std::fmt;

macro_rules! reason_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:literal ),* $(,)?) => {
        /// An MQTT 5.0 reason code. The value `0x00` has several names in the standard
        /// (Success, Normal disconnection, Granted QoS 0); here it is [`ReasonCode::Success`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum ReasonCode {
            $( $(#[$doc])* $name = $value, )*
        }

        impl ReasonCode {
            /// Every reason code, in ascending order of value.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$name),*];

            /// The code for a wire value, or `None` for a value the standard does not define.
            pub fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $( $value => Some(ReasonCode::$name), )*
                    _ => None,
                }
            }
        }
    };
}

reason_codes! {
    /// 0x00: Success, Normal disconnection, or Granted QoS 0.
    Success = 0x00,
    /// 0x01: Granted QoS 1.
    GrantedQoS1 = 0x01,
    /// 0x02: Granted QoS 2.
    GrantedQoS2 = 0x02,
    /// 0x04: Disconnect with Will Message.
    DisconnectWithWillMessage = 0x04,
    /// 0x10: No matching subscribers.
    NoMatchingSubscribers = 0x10,
    /// 0x11: No subscription existed.
    NoSubscriptionExisted = 0x11,
    /// 0x18: Continue authentication.
    ContinueAuthentication = 0x18,
    /// 0x19: Re-authenticate.
    ReAuthenticate = 0x19,
    /// 0x80: Unspecified error (3.1.1 SUBACK "Failure").
    UnspecifiedError = 0x80,
    /// 0x81: Malformed Packet.
    MalformedPacket = 0x81,
    /// 0x82: Protocol Error.
    ProtocolError = 0x82,
    /// 0x83: Implementation specific error.
    ImplementationSpecificError = 0x83,
    /// 0x84: Unsupported Protocol Version (3.1.1 CONNACK 0x01).
    UnsupportedProtocolVersion = 0x84,
    /// 0x85: Client Identifier not valid (3.1.1 CONNACK 0x02).
    ClientIdentifierNotValid = 0x85,
    /// 0x86: Bad User Name or Password (3.1.1 CONNACK 0x04).
    BadUserNameOrPassword = 0x86,
    /// 0x87: Not authorized (3.1.1 CONNACK 0x05).
    NotAuthorized = 0x87,
    /// 0x88: Server unavailable (3.1.1 CONNACK 0x03).
    ServerUnavailable = 0x88,
    /// 0x89: Server busy.
    ServerBusy = 0x89,
    /// 0x8A: Banned.
    Banned = 0x8A,
    /// 0x8B: Server shutting down.
    ServerShuttingDown = 0x8B,
    /// 0x8C: Bad authentication method.
    BadAuthenticationMethod = 0x8C,
    /// 0x8D: Keep Alive timeout.
    KeepAliveTimeout = 0x8D,
    /// 0x8E: Session taken over.
    SessionTakenOver = 0x8E,
    /// 0x8F: Topic Filter invalid.
    TopicFilterInvalid = 0x8F,
    /// 0x90: Topic Name invalid.
    TopicNameInvalid = 0x90,
    /// 0x91: Packet Identifier in use.
    PacketIdentifierInUse = 0x91,
    /// 0x92: Packet Identifier not found.
    PacketIdentifierNotFound = 0x92,
    /// 0x93: Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93,
    /// 0x94: Topic Alias invalid.
    TopicAliasInvalid = 0x94,
    /// 0x95: Packet too large.
    PacketTooLarge = 0x95,
    /// 0x96: Message rate too high.
    MessageRateTooHigh = 0x96,
    /// 0x97: Quota exceeded.
    QuotaExceeded = 0x97,
    /// 0x98: Administrative action.
    AdministrativeAction = 0x98,
    /// 0x99: Payload format invalid.
    PayloadFormatInvalid = 0x99,
    /// 0x9A: Retain not supported.
    RetainNotSupported = 0x9A,
    /// 0x9B: QoS not supported.
    QoSNotSupported = 0x9B,
    /// 0x9C: Use another server.
    UseAnotherServer = 0x9C,
    /// 0x9D: Server moved.
    ServerMoved = 0x9D,
    /// 0x9E: Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0x9F: Connection rate exceeded.
    ConnectionRateExceeded = 0x9F,
    /// 0xA0: Maximum connect time.
    MaximumConnectTime = 0xA0,
    /// 0xA1: Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// 0xA2: Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The standard's name for the code (for Reason Strings and logs).
    pub fn description(self) -> &'static str {
        use ReasonCode::*;
        match self {
            Success => "Success",
            GrantedQoS1 => "Granted QoS 1",
            GrantedQoS2 => "Granted QoS 2",
            DisconnectWithWillMessage => "Disconnect with Will Message",
            NoMatchingSubscribers => "No matching subscribers",
            NoSubscriptionExisted => "No subscription existed",
            ContinueAuthentication => "Continue authentication",
            ReAuthenticate => "Re-authenticate",
            UnspecifiedError => "Unspecified error",
            MalformedPacket => "Malformed Packet",
            ProtocolError => "Protocol Error",
            ImplementationSpecificError => "Implementation specific error",
            UnsupportedProtocolVersion => "Unsupported Protocol Version",
            ClientIdentifierNotValid => "Client Identifier not valid",
            BadUserNameOrPassword => "Bad User Name or Password",
            NotAuthorized => "Not authorized",
            ServerUnavailable => "Server unavailable",
            ServerBusy => "Server busy",
            Banned => "Banned",
            ServerShuttingDown => "Server shutting down",
            BadAuthenticationMethod => "Bad authentication method",
            KeepAliveTimeout => "Keep Alive timeout",
            SessionTakenOver => "Session taken over",
            TopicFilterInvalid => "Topic Filter invalid",
            TopicNameInvalid => "Topic Name invalid",
            PacketIdentifierInUse => "Packet Identifier in use",
            PacketIdentifierNotFound => "Packet Identifier not found",
            ReceiveMaximumExceeded => "Receive Maximum exceeded",
            TopicAliasInvalid => "Topic Alias invalid",
            PacketTooLarge => "Packet too large",
            MessageRateTooHigh => "Message rate too high",
            QuotaExceeded => "Quota exceeded",
            AdministrativeAction => "Administrative action",
            PayloadFormatInvalid => "Payload format invalid",
            RetainNotSupported => "Retain not supported",
            QoSNotSupported => "QoS not supported",
            UseAnotherServer => "Use another server",
            ServerMoved => "Server moved",
            SharedSubscriptionsNotSupported => "Shared Subscriptions not supported",
            ConnectionRateExceeded => "Connection rate exceeded",
            MaximumConnectTime => "Maximum connect time",
            SubscriptionIdentifiersNotSupported => "Subscription Identifiers not supported",
            WildcardSubscriptionsNotSupported => "Wildcard Subscriptions not supported",
        }
    }

    /// True for codes below 0x80 (success or a normal outcome).
    pub fn is_success(self) -> bool {
        self.as_u8() < 0x80
    }

    /// The 3.1.1 CONNACK return code (section 3.2.2.3) with this meaning. Codes with no
    /// 3.1.1 equivalent map to the closest one: refusals of the client to 0x05 (not
    /// authorized), trouble on the server's side to 0x03 (server unavailable).
    pub fn to_v3_connack(self) -> u8 {
        use ReasonCode::*;
        match self {
            Success => 0x00,
            UnsupportedProtocolVersion => 0x01,
            ClientIdentifierNotValid => 0x02,
            ServerUnavailable
            | ServerBusy
            | ServerShuttingDown
            | UseAnotherServer
            | ServerMoved
            | ConnectionRateExceeded
            | QuotaExceeded
            | UnspecifiedError
            | ImplementationSpecificError => 0x03,
            BadUserNameOrPassword | BadAuthenticationMethod => 0x04,
            _ => 0x05,
        }
    }

    /// The reason code for a 3.1.1 CONNACK return code, or `None` for a reserved value.
    pub fn from_v3_connack(code: u8) -> Option<Self> {
        Some(match code {
            0x00 => ReasonCode::Success,
            0x01 => ReasonCode::UnsupportedProtocolVersion,
            0x02 => ReasonCode::ClientIdentifierNotValid,
            0x03 => ReasonCode::ServerUnavailable,
            0x04 => ReasonCode::BadUserNameOrPassword,
            0x05 => ReasonCode::NotAuthorized,
            _ => return None,
        })
    }

    /// The 3.1.1 SUBACK return code for this code: granted QoS 0/1/2, any failure 0x80.
    pub fn to_v3_suback(self) -> u8 {
        match self {
            ReasonCode::Success => 0x00,
            ReasonCode::GrantedQoS1 => 0x01,
            ReasonCode::GrantedQoS2 => 0x02,
            _ => 0x80,
        }
    }
}

impl Default for ReasonCode {
    /// Success (0x00), the code a v5 packet implies when it leaves its reason code out.
    fn default() -> Self {
        ReasonCode::Success
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (0x{:02X})", self, self.as_u8())
    }
}

/// Reads a v5 reason code byte that must be one of `table` (the codes `packet` may carry).
pub(crate) fn check(
    code: u8,
    packet: super::PacketType,
    table: &[ReasonCode],
) -> Result<ReasonCode, super::DecodeError> {
    ReasonCode::from_u8(code)
        .filter(|c| table.contains(c))
        .ok_or(super::DecodeError::InvalidReasonCode { packet, code })
}

/// The reason codes each v5 packet may carry (the tables of sections 3.2.2.2, 3.4.2.1,
/// 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1 and 3.15.2.1).
pub(crate) mod allowed {
    use super::ReasonCode::{self, *};

    pub(crate) const CONNACK: &[ReasonCode] = &[
        Success,
        UnspecifiedError,
        MalformedPacket,
        ProtocolError,
        ImplementationSpecificError,
        UnsupportedProtocolVersion,
        ClientIdentifierNotValid,
        BadUserNameOrPassword,
        NotAuthorized,
        ServerUnavailable,
        ServerBusy,
        Banned,
        BadAuthenticationMethod,
        TopicNameInvalid,
        PacketTooLarge,
        QuotaExceeded,
        PayloadFormatInvalid,
        RetainNotSupported,
        QoSNotSupported,
        UseAnotherServer,
        ServerMoved,
        ConnectionRateExceeded,
    ];
    pub(crate) const PUBACK: &[ReasonCode] = &[
        Success,
        NoMatchingSubscribers,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicNameInvalid,
        PacketIdentifierInUse,
        QuotaExceeded,
        PayloadFormatInvalid,
    ];
    /// PUBREC has the same table as PUBACK.
    pub(crate) const PUBREC: &[ReasonCode] = PUBACK;
    pub(crate) const PUBREL: &[ReasonCode] = &[Success, PacketIdentifierNotFound];
    pub(crate) const PUBCOMP: &[ReasonCode] = PUBREL;
    pub(crate) const SUBACK: &[ReasonCode] = &[
        Success,
        GrantedQoS1,
        GrantedQoS2,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicFilterInvalid,
        PacketIdentifierInUse,
        QuotaExceeded,
        SharedSubscriptionsNotSupported,
        SubscriptionIdentifiersNotSupported,
        WildcardSubscriptionsNotSupported,
    ];
    pub(crate) const UNSUBACK: &[ReasonCode] = &[
        Success,
        NoSubscriptionExisted,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicFilterInvalid,
        PacketIdentifierInUse,
    ];
    pub(crate) const DISCONNECT: &[ReasonCode] = &[
        Success,
        DisconnectWithWillMessage,
        UnspecifiedError,
        MalformedPacket,
        ProtocolError,
        ImplementationSpecificError,
        NotAuthorized,
        ServerBusy,
        ServerShuttingDown,
        KeepAliveTimeout,
        SessionTakenOver,
        TopicFilterInvalid,
        TopicNameInvalid,
        ReceiveMaximumExceeded,
        TopicAliasInvalid,
        PacketTooLarge,
        MessageRateTooHigh,
        QuotaExceeded,
        AdministrativeAction,
        PayloadFormatInvalid,
        RetainNotSupported,
        QoSNotSupported,
        UseAnotherServer,
        ServerMoved,
        SharedSubscriptionsNotSupported,
        ConnectionRateExceeded,
        MaximumConnectTime,
        SubscriptionIdentifiersNotSupported,
        WildcardSubscriptionsNotSupported,
    ];
    pub(crate) const AUTH: &[ReasonCode] = &[Success, ContinueAuthentication, ReAuthenticate];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_value() {
        for &code in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_u8(code.as_u8()), Some(code));
        }
        assert_eq!(ReasonCode::from_u8(0x03), None);
        assert_eq!(ReasonCode::from_u8(0xA3), None);
    }

    #[test]
    fn v3_connack_codes_map_both_ways() {
        for code in 0u8..=5 {
            let reason = ReasonCode::from_v3_connack(code).expect("defined");
            assert_eq!(reason.to_v3_connack(), code);
        }
        assert_eq!(ReasonCode::from_v3_connack(6), None);
        assert_eq!(ReasonCode::Banned.to_v3_connack(), 0x05);
        assert_eq!(ReasonCode::ServerBusy.to_v3_connack(), 0x03);
    }
}
