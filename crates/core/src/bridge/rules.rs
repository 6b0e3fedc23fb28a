//! Topic rules of a bridge, in the form of Mosquitto's `topic` bridge option:
//! `topic <pattern> [out | in | both [<qos> [<local-prefix> <remote-prefix>]]]`.
//!
//! A rule subscribes, on the side a message comes from, to the pattern behind that side's
//! prefix; a matching topic loses that prefix and gains the other side's. An empty pattern
//! maps one topic: the local prefix is the local topic and the remote prefix the remote one.
//! A topic that matches the filter but does not start with the prefix (`a` under `a/#` with
//! prefix `a/`) is not forwarded: it has no place on the other side.

use crate::codec::QoS;
use crate::topic::{matches, TopicError, TopicFilter, TopicName};

/// Which way a rule forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeDirection {
    /// Local messages go to the remote broker.
    Out,
    /// Remote messages come into the local broker.
    In,
    /// Both.
    Both,
}

/// Why a rule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeTopicError {
    /// A prefix holds `+` or `#` (it is prepended to topic names, which cannot).
    #[error("the {0} prefix contains a wildcard")]
    WildcardInPrefix(&'static str),
    /// An empty pattern names one topic on each side: both prefixes are needed.
    #[error("an empty pattern needs both a local and a remote prefix")]
    EmptyPatternWithoutPrefixes,
    /// Prefix and pattern together are not a valid topic filter.
    #[error("{side} filter {filter:?}: {error}")]
    InvalidFilter {
        /// `local` or `remote`.
        side: &'static str,
        /// The filter.
        filter: String,
        /// Why.
        error: TopicError,
    },
    /// A `topic` line in Mosquitto's form that cannot be read.
    #[error("topic rule: {0}")]
    Syntax(&'static str),
}

/// One `topic` line of a bridge: which way, at what QoS, and how topics are renamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    direction: BridgeDirection,
    qos: QoS,
    local_prefix: String,
    remote_prefix: String,
    local_filter: TopicFilter,
    remote_filter: TopicFilter,
}

impl BridgeTopic {
    /// A rule, checked: prefixes without wildcards, filters valid on both sides.
    pub fn new(
        pattern: &str,
        direction: BridgeDirection,
        qos: QoS,
        local_prefix: &str,
        remote_prefix: &str,
    ) -> Result<Self, BridgeTopicError> {
        for (side, prefix) in [("local", local_prefix), ("remote", remote_prefix)] {
            if prefix.contains(['+', '#']) {
                return Err(BridgeTopicError::WildcardInPrefix(side));
            }
        }
        if pattern.is_empty() && (local_prefix.is_empty() || remote_prefix.is_empty()) {
            return Err(BridgeTopicError::EmptyPatternWithoutPrefixes);
        }
        let filter = |side: &'static str, prefix: &str| {
            let filter = format!("{prefix}{pattern}");
            TopicFilter::new(filter.clone()).map_err(|error| BridgeTopicError::InvalidFilter {
                side,
                filter,
                error,
            })
        };
        Ok(BridgeTopic {
            direction,
            qos,
            local_filter: filter("local", local_prefix)?,
            remote_filter: filter("remote", remote_prefix)?,
            local_prefix: local_prefix.to_string(),
            remote_prefix: remote_prefix.to_string(),
        })
    }

    /// A rule written as the value of Mosquitto's `topic` bridge option:
    /// `<pattern> [out | in | both [<qos> [<local-prefix> <remote-prefix>]]]`, where `""`
    /// stands for an empty pattern or prefix. Direction defaults to `out`, QoS to 0.
    ///
    /// ```
    /// use roost_core::bridge::{BridgeDirection, BridgeTopic};
    /// let rule = BridgeTopic::parse("# both 1 site/ edge7/").unwrap();
    /// assert_eq!(rule.direction(), BridgeDirection::Both);
    /// assert_eq!(rule.outbound("site/temp").unwrap().as_str(), "edge7/temp");
    /// assert_eq!(rule.inbound("edge7/cmd").unwrap().as_str(), "site/cmd");
    /// ```
    pub fn parse(line: &str) -> Result<Self, BridgeTopicError> {
        let words: Vec<&str> = line
            .split_whitespace()
            .map(|w| if w == "\"\"" { "" } else { w })
            .collect();
        let (pattern, rest) = words
            .split_first()
            .ok_or(BridgeTopicError::Syntax("no pattern"))?;
        let direction = match rest.first().copied() {
            None | Some("out") => BridgeDirection::Out,
            Some("in") => BridgeDirection::In,
            Some("both") => BridgeDirection::Both,
            Some(_) => return Err(BridgeTopicError::Syntax("direction is not out, in or both")),
        };
        let qos = match rest.get(1).copied() {
            None | Some("0") => QoS::AtMostOnce,
            Some("1") => QoS::AtLeastOnce,
            Some("2") => QoS::ExactlyOnce,
            Some(_) => return Err(BridgeTopicError::Syntax("QoS is not 0, 1 or 2")),
        };
        let (local, remote) = match rest.get(2..) {
            None | Some([]) => ("", ""),
            Some([local, remote]) => (*local, *remote),
            Some(_) => {
                return Err(BridgeTopicError::Syntax(
                    "give both prefixes (local then remote) or neither",
                ))
            }
        };
        Self::new(pattern, direction, qos, local, remote)
    }

    /// Which way the rule forwards.
    pub fn direction(&self) -> BridgeDirection {
        self.direction
    }

    /// The QoS the rule subscribes with.
    pub fn qos(&self) -> QoS {
        self.qos
    }

    /// What the bridge subscribes to on the local broker (`out` and `both` rules).
    pub fn local_subscription(&self) -> Option<&TopicFilter> {
        (self.direction != BridgeDirection::In).then_some(&self.local_filter)
    }

    /// What the bridge subscribes to on the remote broker (`in` and `both` rules).
    pub fn remote_subscription(&self) -> Option<&TopicFilter> {
        (self.direction != BridgeDirection::Out).then_some(&self.remote_filter)
    }

    /// The remote topic a local message on `topic` is published to, if this rule sends it.
    pub fn outbound(&self, topic: &str) -> Option<TopicName> {
        self.local_subscription()?;
        map(
            topic,
            &self.local_filter,
            &self.local_prefix,
            &self.remote_prefix,
        )
    }

    /// The local topic a remote message on `topic` is published to, if this rule takes it.
    pub fn inbound(&self, topic: &str) -> Option<TopicName> {
        self.remote_subscription()?;
        map(
            topic,
            &self.remote_filter,
            &self.remote_prefix,
            &self.local_prefix,
        )
    }
}

/// `topic` moved from behind `from` to behind `to`, if it matches `filter` and has the
/// prefix.
fn map(topic: &str, filter: &TopicFilter, from: &str, to: &str) -> Option<TopicName> {
    if !matches(filter.as_str(), topic) {
        return None;
    }
    let rest = topic.strip_prefix(from)?;
    TopicName::new(format!("{to}{rest}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, direction: BridgeDirection, local: &str, remote: &str) -> BridgeTopic {
        BridgeTopic::new(pattern, direction, QoS::AtLeastOnce, local, remote).expect("valid")
    }

    fn name(topic: Option<TopicName>) -> Option<String> {
        topic.map(|t| t.as_str().to_string())
    }

    #[test]
    fn prefixes_move_a_topic_between_the_two_trees() {
        // Mosquitto's example: `topic sensors/# both 1 home/ office/`.
        let r = rule("sensors/#", BridgeDirection::Both, "home/", "office/");
        assert_eq!(r.qos(), QoS::AtLeastOnce);
        assert_eq!(
            r.local_subscription().map(|f| f.as_str()),
            Some("home/sensors/#")
        );
        assert_eq!(
            r.remote_subscription().map(|f| f.as_str()),
            Some("office/sensors/#")
        );
        assert_eq!(
            name(r.outbound("home/sensors/t1")),
            Some("office/sensors/t1".into())
        );
        assert_eq!(
            name(r.inbound("office/sensors/t1")),
            Some("home/sensors/t1".into())
        );
        // Not under the filter: not forwarded.
        assert_eq!(r.outbound("home/lights/1"), None);
        assert_eq!(r.inbound("home/sensors/t1"), None);
    }

    #[test]
    fn no_prefix_keeps_the_topic_and_directions_are_honoured() {
        let out = rule("cmd/#", BridgeDirection::Out, "", "");
        assert_eq!(name(out.outbound("cmd/a")), Some("cmd/a".into()));
        assert_eq!(out.inbound("cmd/a"), None, "an out rule takes nothing in");
        assert!(out.remote_subscription().is_none());
        let inbound = rule("cmd/#", BridgeDirection::In, "", "");
        assert_eq!(
            inbound.outbound("cmd/a"),
            None,
            "an in rule sends nothing out"
        );
        assert_eq!(name(inbound.inbound("cmd/a")), Some("cmd/a".into()));
        assert!(inbound.local_subscription().is_none());
    }

    #[test]
    fn an_empty_pattern_maps_one_topic() {
        // `topic "" out 0 local/topic remote/topic`.
        let r = rule("", BridgeDirection::Both, "local/topic", "remote/topic");
        assert_eq!(name(r.outbound("local/topic")), Some("remote/topic".into()));
        assert_eq!(name(r.inbound("remote/topic")), Some("local/topic".into()));
        assert_eq!(r.outbound("local/topic/sub"), None);
        assert_eq!(
            BridgeTopic::new("", BridgeDirection::Out, QoS::AtMostOnce, "local/topic", ""),
            Err(BridgeTopicError::EmptyPatternWithoutPrefixes)
        );
    }

    #[test]
    fn the_parent_level_that_hash_matches_has_no_place_on_the_other_side() {
        // `a/#` matches `a` (MQTT-4.7.1-2), but `a` does not start with the prefix `a/`.
        let r = rule("#", BridgeDirection::Both, "a/", "b/");
        assert_eq!(r.outbound("a"), None);
        assert_eq!(name(r.outbound("a/x")), Some("b/x".into()));
    }

    #[test]
    fn mosquittos_topic_lines_parse_with_their_defaults() {
        let r = BridgeTopic::parse("sensors/#").expect("valid");
        assert_eq!(
            (r.direction(), r.qos()),
            (BridgeDirection::Out, QoS::AtMostOnce)
        );
        assert_eq!(name(r.outbound("sensors/a")), Some("sensors/a".into()));
        let r = BridgeTopic::parse("\"\" in 2 local/one remote/one").expect("valid");
        assert_eq!(
            (r.direction(), r.qos()),
            (BridgeDirection::In, QoS::ExactlyOnce)
        );
        assert_eq!(name(r.inbound("remote/one")), Some("local/one".into()));
        let r = BridgeTopic::parse("# both 1 \"\" far/").expect("valid");
        assert_eq!(name(r.outbound("a/b")), Some("far/a/b".into()));
        for bad in [
            "",
            "a sideways",
            "a out 3",
            "a out 1 only-local",
            "a in 1 x/ y/ z/",
        ] {
            assert!(
                matches!(BridgeTopic::parse(bad), Err(BridgeTopicError::Syntax(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wildcards_in_prefixes_and_invalid_filters_are_refused() {
        assert_eq!(
            BridgeTopic::new("#", BridgeDirection::Out, QoS::AtMostOnce, "a/+/", ""),
            Err(BridgeTopicError::WildcardInPrefix("local"))
        );
        assert_eq!(
            BridgeTopic::new("#", BridgeDirection::Out, QoS::AtMostOnce, "", "x/#/"),
            Err(BridgeTopicError::WildcardInPrefix("remote"))
        );
        assert!(matches!(
            BridgeTopic::new("a/#/b", BridgeDirection::Out, QoS::AtMostOnce, "", ""),
            Err(BridgeTopicError::InvalidFilter { side: "local", .. })
        ));
    }
}
