//! Topic rules of a bridge, in the form of Mosquitto's `topic` bridge option:
//! `topic <pattern> [out | in | both [<qos> [<local-prefix> <remote-prefix>]]]`.
//!
//! A rule subscribes, on the side a message comes from, to the pattern behind that side's
//! prefix; a matching topic loses that prefix and gains the other side's. An empty pattern
//! maps one topic: the local prefix is the local topic and the remote prefix the remote one.
//! A topic that matches the filter but does not start with the prefix (`a` under `a/#` with
//! prefix `a/`) is not forwarded: it has no place on the other side.
//!
//! The outbound bridge (issue 16) is built on these; until it lands they are exercised by
//! their unit tests only.

#![cfg_attr(not(test), allow(dead_code))]

use crate::codec::QoS;
use crate::topic::{matches, TopicError, TopicFilter, TopicName};

/// Which way a rule forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Local messages go to the remote broker.
    Out,
    /// Remote messages come into the local broker.
    In,
    /// Both.
    Both,
}

/// Why a rule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RuleError {
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
}

/// One `topic` line of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicRule {
    direction: Direction,
    qos: QoS,
    local_prefix: String,
    remote_prefix: String,
    local_filter: TopicFilter,
    remote_filter: TopicFilter,
}

impl TopicRule {
    /// A rule, checked: prefixes without wildcards, filters valid on both sides.
    pub(crate) fn new(
        pattern: &str,
        direction: Direction,
        qos: QoS,
        local_prefix: &str,
        remote_prefix: &str,
    ) -> Result<Self, RuleError> {
        for (side, prefix) in [("local", local_prefix), ("remote", remote_prefix)] {
            if prefix.contains(['+', '#']) {
                return Err(RuleError::WildcardInPrefix(side));
            }
        }
        if pattern.is_empty() && (local_prefix.is_empty() || remote_prefix.is_empty()) {
            return Err(RuleError::EmptyPatternWithoutPrefixes);
        }
        let filter = |side: &'static str, prefix: &str| {
            let filter = format!("{prefix}{pattern}");
            TopicFilter::new(filter.clone()).map_err(|error| RuleError::InvalidFilter {
                side,
                filter,
                error,
            })
        };
        Ok(TopicRule {
            direction,
            qos,
            local_filter: filter("local", local_prefix)?,
            remote_filter: filter("remote", remote_prefix)?,
            local_prefix: local_prefix.to_string(),
            remote_prefix: remote_prefix.to_string(),
        })
    }

    /// The QoS the rule subscribes with.
    pub(crate) fn qos(&self) -> QoS {
        self.qos
    }

    /// What the bridge subscribes to on the local broker (`out` and `both` rules).
    pub(crate) fn local_subscription(&self) -> Option<&TopicFilter> {
        (self.direction != Direction::In).then_some(&self.local_filter)
    }

    /// What the bridge subscribes to on the remote broker (`in` and `both` rules).
    pub(crate) fn remote_subscription(&self) -> Option<&TopicFilter> {
        (self.direction != Direction::Out).then_some(&self.remote_filter)
    }

    /// The remote topic a local message on `topic` is published to, if this rule sends it.
    pub(crate) fn outbound(&self, topic: &str) -> Option<TopicName> {
        self.local_subscription()?;
        map(
            topic,
            &self.local_filter,
            &self.local_prefix,
            &self.remote_prefix,
        )
    }

    /// The local topic a remote message on `topic` is published to, if this rule takes it.
    pub(crate) fn inbound(&self, topic: &str) -> Option<TopicName> {
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

    fn rule(pattern: &str, direction: Direction, local: &str, remote: &str) -> TopicRule {
        TopicRule::new(pattern, direction, QoS::AtLeastOnce, local, remote).expect("valid")
    }

    fn name(topic: Option<TopicName>) -> Option<String> {
        topic.map(|t| t.as_str().to_string())
    }

    #[test]
    fn prefixes_move_a_topic_between_the_two_trees() {
        // Mosquitto's example: `topic sensors/# both 1 home/ office/`.
        let r = rule("sensors/#", Direction::Both, "home/", "office/");
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
        let out = rule("cmd/#", Direction::Out, "", "");
        assert_eq!(name(out.outbound("cmd/a")), Some("cmd/a".into()));
        assert_eq!(out.inbound("cmd/a"), None, "an out rule takes nothing in");
        assert!(out.remote_subscription().is_none());
        let inbound = rule("cmd/#", Direction::In, "", "");
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
        let r = rule("", Direction::Both, "local/topic", "remote/topic");
        assert_eq!(name(r.outbound("local/topic")), Some("remote/topic".into()));
        assert_eq!(name(r.inbound("remote/topic")), Some("local/topic".into()));
        assert_eq!(r.outbound("local/topic/sub"), None);
        assert_eq!(
            TopicRule::new("", Direction::Out, QoS::AtMostOnce, "local/topic", ""),
            Err(RuleError::EmptyPatternWithoutPrefixes)
        );
    }

    #[test]
    fn the_parent_level_that_hash_matches_has_no_place_on_the_other_side() {
        // `a/#` matches `a` (MQTT-4.7.1-2), but `a` does not start with the prefix `a/`.
        let r = rule("#", Direction::Both, "a/", "b/");
        assert_eq!(r.outbound("a"), None);
        assert_eq!(name(r.outbound("a/x")), Some("b/x".into()));
    }

    #[test]
    fn wildcards_in_prefixes_and_invalid_filters_are_refused() {
        assert_eq!(
            TopicRule::new("#", Direction::Out, QoS::AtMostOnce, "a/+/", ""),
            Err(RuleError::WildcardInPrefix("local"))
        );
        assert_eq!(
            TopicRule::new("#", Direction::Out, QoS::AtMostOnce, "", "x/#/"),
            Err(RuleError::WildcardInPrefix("remote"))
        );
        assert!(matches!(
            TopicRule::new("a/#/b", Direction::Out, QoS::AtMostOnce, "", ""),
            Err(RuleError::InvalidFilter { side: "local", .. })
        ));
    }
}
