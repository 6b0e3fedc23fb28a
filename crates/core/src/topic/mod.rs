//! Topic names and topic filters (section 4.7 of both standards).
//!
//! [`TopicName`] and [`TopicFilter`] are validated newtypes over zero-copy strings: once a
//! value exists, its syntax is known to be right, so the router never re-checks it.

use std::fmt;

mod small_map;
pub(crate) use small_map::SmallMap;
mod trie;
pub use trie::SubscriptionTrie;

use bytestring::ByteString;
use thiserror::Error;

/// Why a string is not a valid topic name or topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Zero-length topic name or filter (MQTT-4.7.3-1).
    #[error("topic is empty")]
    Empty,
    /// A wildcard character in a topic name (MQTT-4.7.3-1 of 3.1.1 wording; MQTT-3.3.2-2).
    #[error("topic name contains a wildcard")]
    WildcardInName,
    /// `#` that is not the last character or not a whole level (MQTT-4.7.1-2).
    #[error("'#' must be the last character and stand alone in its level")]
    MisplacedMultiLevelWildcard,
    /// `+` that does not occupy a whole level (MQTT-4.7.1-3).
    #[error("'+' must occupy an entire level")]
    MisplacedSingleLevelWildcard,
    /// The null character U+0000 (MQTT-4.7.3-2).
    #[error("topic contains U+0000")]
    NullCharacter,
    /// Longer than 65,535 bytes (MQTT-4.7.3-3).
    #[error("topic longer than 65,535 bytes")]
    TooLong,
    /// A `$share/` filter whose share name is empty or holds `/`, `+` or `#`, or that has no
    /// filter after the share name (v5 §4.8.2).
    #[error("invalid shared subscription")]
    InvalidShare,
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > usize::from(u16::MAX) {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks the syntax of a topic name: non-empty, no wildcards, no U+0000, at most 65,535
/// bytes.
pub fn validate_topic_name(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    if s.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks the syntax of a topic filter: non-empty, `#` only as the whole last level, `+`
/// only as whole levels, no U+0000, at most 65,535 bytes.
pub fn validate_topic_filter(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    let mut levels = s.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// The topic of a PUBLISH: a UTF-8 string without wildcards.
///
/// It is never empty, except in a v5 PUBLISH that carries a Topic Alias instead of a name,
/// as it comes out of the decoder ([`TopicName::is_empty`] tells); the broker resolves the
/// alias before routing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(ByteString);

impl TopicName {
    /// Validates `name` as a topic name.
    pub fn new(name: impl Into<ByteString>) -> Result<Self, TopicError> {
        let name = name.into();
        validate_topic_name(&name)?;
        Ok(Self(name))
    }

    /// The empty name a v5 PUBLISH uses when it names its topic by Topic Alias only.
    pub fn empty() -> Self {
        Self(ByteString::new())
    }

    /// Validates a decoded string, allowing it to be empty (the caller decides whether an
    /// empty name is acceptable there).
    pub(crate) fn from_wire(name: ByteString) -> Result<Self, TopicError> {
        if name.is_empty() {
            return Ok(Self(name));
        }
        validate_topic_name(&name)?;
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a zero-copy string.
    pub fn as_bytestring(&self) -> &ByteString {
        &self.0
    }

    /// A copy with a buffer of its own: a decoded name is a slice of the read buffer it
    /// arrived in, which a long-lived copy (a topic alias, a retained or queued message)
    /// would keep allocated.
    pub(crate) fn owned(&self) -> Self {
        Self(own(&self.0))
    }

    /// True only for the placeholder of a PUBLISH that uses a Topic Alias.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True for names beginning with `$` (such as `$SYS/...`), which wildcards in the first
    /// level do not match (MQTT-4.7.2-1).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

/// A subscription's topic filter: a UTF-8 string whose wildcards are well placed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(ByteString);

impl TopicFilter {
    /// Validates `filter` as a topic filter.
    pub fn new(filter: impl Into<ByteString>) -> Result<Self, TopicError> {
        let filter = filter.into();
        validate_topic_filter(&filter)?;
        Ok(Self(filter))
    }

    /// The filter as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The filter as a zero-copy string.
    pub fn as_bytestring(&self) -> &ByteString {
        &self.0
    }

    /// A copy with a buffer of its own (see [`TopicName::owned`]); subscriptions outlive
    /// their SUBSCRIBE.
    pub(crate) fn owned(&self) -> Self {
        Self(own(&self.0))
    }

    /// True if the filter holds `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.0.contains(['+', '#'])
    }

    /// For a shared subscription `$share/{ShareName}/{filter}` (v5 §4.8.2), its share name
    /// and the filter that selects messages; `Ok(None)` for an ordinary filter.
    pub fn shared(&self) -> Result<Option<(ByteString, TopicFilter)>, TopicError> {
        let Some(rest) = self.0.strip_prefix("$share/") else {
            return Ok(None);
        };
        let (group, filter) = rest.split_once('/').ok_or(TopicError::InvalidShare)?;
        if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
            return Err(TopicError::InvalidShare);
        }
        let inner = TopicFilter::new(self.0.slice_ref(filter))?;
        Ok(Some((self.0.slice_ref(group), inner)))
    }
}

/// True if `topic` matches `filter` (section 4.7: `+` one level, `#` any number of levels
/// including the parent; a wildcard in the first level never matches a `$` topic,
/// MQTT-4.7.2-1).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True if some topic matches both filters.
pub fn overlaps(a: &str, b: &str) -> bool {
    let dollar = |x: &str| x.starts_with('$');
    let wild = |x: &str| x.starts_with(['+', '#']);
    if (dollar(a) && wild(b)) || (dollar(b) && wild(a)) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

/// True if every topic that matches `specific` also matches `general`.
pub fn covers(general: &str, specific: &str) -> bool {
    if specific.starts_with('$') != general.starts_with('$') && general.starts_with(['+', '#']) {
        return false;
    }
    let mut g = general.split('/');
    let mut s = specific.split('/');
    loop {
        match (g.next(), s.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

macro_rules! string_like {
    ($ty:ident) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<&str> for $ty {
            type Error = TopicError;
            fn try_from(s: &str) -> Result<Self, TopicError> {
                Self::new(ByteString::from(s))
            }
        }
        impl TryFrom<String> for $ty {
            type Error = TopicError;
            fn try_from(s: String) -> Result<Self, TopicError> {
                Self::new(ByteString::from(s))
            }
        }
    };
}
string_like!(TopicName);
string_like!(TopicFilter);

/// A string with a buffer of its own, not a slice of a larger one.
pub(crate) fn own(s: &ByteString) -> ByteString {
    ByteString::from(String::from(&**s))
}

/// True for the broker's own topics, `$SYS` and `$SYS/...`: clients may not publish there
/// unless an authorizer explicitly allows it.
pub fn is_sys_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// True for `$SYS/broker/connection/{client_id}/state`, where a Mosquitto bridge publishes
/// its own connection state (its will and its first message, `notifications true`). A
/// bridge client may publish there, and only there, in `$SYS` (a connection's own state:
/// nothing another client or the broker owns).
pub(crate) fn is_bridge_state_topic(topic: &str, client_id: &str) -> bool {
    topic
        .strip_prefix("$SYS/broker/connection/")
        .and_then(|rest| rest.strip_suffix("/state"))
        == Some(client_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_state_topic_is_its_own_client_ids_only() {
        let own = "$SYS/broker/connection/vm.roost/state";
        assert!(is_bridge_state_topic(own, "vm.roost"));
        assert!(!is_bridge_state_topic(own, "other"));
        assert!(!is_bridge_state_topic(
            "$SYS/broker/connection/vm.roost/other",
            "vm.roost"
        ));
        assert!(!is_bridge_state_topic("$SYS/broker/load", "vm.roost"));
    }

    #[test]
    fn valid_filters() {
        // Examples of section 4.7.1 of both standards.
        for f in [
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "+",
            "+/tennis/#",
            "sport/+/player1",
            "/+",
            "+/+",
            "/finance",
            "$SYS/#",
            "a//b",
        ] {
            assert_eq!(validate_topic_filter(f), Ok(()), "{f}");
        }
    }

    #[test]
    fn multi_level_wildcard_must_be_last_and_alone() {
        // MQTT-4.7.1-2 (3.1.1), MQTT-4.7.1-1 (v5).
        // MQTT-4.7.1-2
        for f in ["a/#/b", "#a", "a#", "sport/tennis#", "##"] {
            assert_eq!(
                validate_topic_filter(f),
                Err(TopicError::MisplacedMultiLevelWildcard),
                "{f}"
            );
        }
    }

    #[test]
    fn single_level_wildcard_must_fill_its_level() {
        // MQTT-4.7.1-3 (3.1.1), MQTT-4.7.1-2 (v5).
        // MQTT-4.7.1-3
        for f in ["a+", "sport+", "+a/b", "a/b+/c"] {
            assert_eq!(
                validate_topic_filter(f),
                Err(TopicError::MisplacedSingleLevelWildcard),
                "{f}"
            );
        }
    }

    #[test]
    fn filter_relations() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(overlaps("a/+", "+/b"));
        assert!(overlaps("#", "a/b/c"));
        assert!(!overlaps("a/b", "a/c"));
        assert!(!overlaps("#", "$SYS/x"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/#"));
    }

    #[test]
    fn shared_subscription_syntax() {
        // MQTT-4.8.2-1 / -2 (v5): "$share/", a ShareName of at least one character without "/", "+"
        // or "#", then "/" and a filter.
        let f = TopicFilter::new("$share/g1/a/+/c").expect("valid");
        let (group, inner) = f.shared().expect("valid share").expect("shared");
        assert_eq!(group, "g1");
        assert_eq!(inner.as_str(), "a/+/c");
        assert_eq!(TopicFilter::new("a/b").expect("valid").shared(), Ok(None));
        for bad in ["$share/g", "$share//a", "$share/+/a", "$share/g/"] {
            let f = TopicFilter::new(bad).expect("valid as a plain filter");
            assert_eq!(f.shared(), Err(TopicError::InvalidShare), "{bad}");
        }
    }

    #[test]
    fn names_reject_wildcards_and_empty() {
        // MQTT-4.7.1-1 (3.1.1), MQTT-4.7.0-1 (v5): no wildcards in a Topic Name; MQTT-4.7.3-1 (both),
        // MQTT-4.7.3-2 (both): at least one character, no U+0000 (the same type serves both levels).
        // MQTT-3.3.2-2 and MQTT-4.7.3-1
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        // MQTT-4.7.3-2
        assert_eq!(validate_topic_name("a\0"), Err(TopicError::NullCharacter));
        assert!(TopicName::new("$SYS/x").expect("valid").is_system());
        assert_eq!(validate_topic_name("/"), Ok(()));
    }
}
