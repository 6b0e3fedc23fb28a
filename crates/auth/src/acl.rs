//! Mosquitto's ACL file format and the [`Authorizer`] over it.
//!
//! ```text
//! # Rules before any `user` line apply to clients without a user name.
//! topic read public/#
//!
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret/#
//!
//! # Patterns apply to every client: %c is its client identifier, %u its user name.
//! pattern write devices/%c/status
//! pattern read users/%u/inbox/#
//! ```
//!
//! `topic` and `pattern` take an optional access (`read`, `write`, `readwrite` — the
//! default — or `deny`) and a topic filter. For a publish (write) or a delivery (read) on a
//! topic, a matching `deny` rule wins; otherwise a matching rule with that access allows;
//! otherwise the answer is no. A subscription is allowed if a readable rule overlaps its
//! filter and no `deny` rule covers it entirely; each delivery is then checked against the
//! topic it carries, so `#` receives exactly the readable topics and nothing else. Shared
//! subscriptions are checked on their inner filter. Wildcards in the first level never match
//! `$` topics, here as in routing (MQTT-4.7.2-1).
//!
//! "User name" here is always the authenticated one ([`ClientInfo::user`], the identity the
//! authenticators vouched for, for example a certificate's name under mutual TLS), never the
//! User Name a client merely claims in CONNECT.
//!
//! A client identifier or user name containing `+`, `#` or `/` makes every pattern that
//! would substitute it inapplicable, so it can never widen a pattern's reach.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use roost_core::codec::{QoS, ReasonCode};
use roost_core::plugin::{Authorizer, ClientInfo, Decision, SubscribeDecision};
use roost_core::topic::{covers, matches, overlaps, validate_topic_filter, TopicFilter, TopicName};

use crate::AuthError;

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive and subscribe.
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Neither, overriding rules that would allow.
    Deny,
}

impl Access {
    fn grants(self, want: Access) -> bool {
        match self {
            Access::ReadWrite => want != Access::Deny,
            Access::Deny => false,
            a => a == want,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// Parsed ACL rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclRules {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// A substituted value that can be used in a pattern: non-empty, no wildcard, no level
/// separator.
fn safe(value: &str) -> bool {
    !value.is_empty() && !value.contains(['+', '#', '/'])
}

impl AclRules {
    /// Parses the text of an ACL file; on error, the 1-based line and what is wrong.
    pub fn parse(text: &str) -> Result<Self, (usize, &'static str)> {
        let mut rules = AclRules::default();
        let mut current: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err((i + 1, "user needs a name"));
                    }
                    current = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let (access, filter) = match rest.split_once(char::is_whitespace) {
                        Some(("read", f)) => (Access::Read, f.trim()),
                        Some(("write", f)) => (Access::Write, f.trim()),
                        Some(("readwrite", f)) => (Access::ReadWrite, f.trim()),
                        Some(("deny", f)) => (Access::Deny, f.trim()),
                        _ => (Access::ReadWrite, rest),
                    };
                    if validate_topic_filter(filter).is_err() {
                        return Err((i + 1, "invalid topic filter"));
                    }
                    let rule = Rule {
                        access,
                        filter: filter.to_string(),
                    };
                    match (keyword, &current) {
                        ("pattern", _) => rules.patterns.push(rule),
                        (_, Some(user)) => rules.users.entry(user.clone()).or_default().push(rule),
                        (_, None) => rules.anonymous.push(rule),
                    }
                }
                _ => return Err((i + 1, "expected user, topic or pattern")),
            }
        }
        Ok(rules)
    }

    /// The rules that apply to a client, patterns substituted.
    fn applicable(&self, username: Option<&str>, client_id: &str) -> Vec<Rule> {
        let own = match username {
            Some(u) => self.users.get(u).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        let mut out: Vec<Rule> = own.to_vec();
        for p in &self.patterns {
            let needs_c = p.filter.contains("%c");
            let needs_u = p.filter.contains("%u");
            if needs_c && !safe(client_id) {
                continue;
            }
            let mut filter = p.filter.replace("%c", client_id);
            if needs_u {
                match username {
                    Some(u) if safe(u) => filter = filter.replace("%u", u),
                    _ => continue,
                }
            }
            out.push(Rule {
                access: p.access,
                filter,
            });
        }
        out
    }

    /// May the client read (`Access::Read`) or write (`Access::Write`) `topic`?
    pub fn allows(
        &self,
        username: Option<&str>,
        client_id: &str,
        topic: &str,
        want: Access,
    ) -> bool {
        let rules = self.applicable(username, client_id);
        if rules
            .iter()
            .any(|r| r.access == Access::Deny && matches(&r.filter, topic))
        {
            return false;
        }
        rules
            .iter()
            .any(|r| r.access.grants(want) && matches(&r.filter, topic))
    }

    /// May the client subscribe to `filter` (the inner filter of a shared subscription)?
    pub fn allows_subscribe(&self, username: Option<&str>, client_id: &str, filter: &str) -> bool {
        let rules = self.applicable(username, client_id);
        if rules
            .iter()
            .any(|r| r.access == Access::Deny && covers(&r.filter, filter))
        {
            return false;
        }
        rules
            .iter()
            .any(|r| r.access.grants(Access::Read) && overlaps(&r.filter, filter))
    }
}

/// Mosquitto's ACL file as an [`Authorizer`]; see the module docs for the rules.
///
/// [`AclFile::reload`] re-reads it without dropping connections; a file that fails to load
/// leaves the previous rules in force. Combine with
/// [`BrokerHandle::set_authorizers`](roost_core::BrokerHandle::set_authorizers) to re-check
/// live subscriptions after a reload.
#[derive(Debug)]
pub struct AclFile {
    path: Option<PathBuf>,
    rules: RwLock<Arc<AclRules>>,
}

impl AclFile {
    /// Loads `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref().to_path_buf();
        let rules = Self::read(&path)?;
        Ok(Self {
            path: Some(path),
            rules: RwLock::new(Arc::new(rules)),
        })
    }

    /// Rules from text (for rules built in code); `reload` is then a no-op.
    pub fn from_rules(rules: AclRules) -> Self {
        Self {
            path: None,
            rules: RwLock::new(Arc::new(rules)),
        }
    }

    /// Re-reads the file.
    pub fn reload(&self) -> Result<(), AuthError> {
        if let Some(path) = &self.path {
            let rules = Self::read(path)?;
            *self.rules.write() = Arc::new(rules);
        }
        Ok(())
    }

    fn read(path: &Path) -> Result<AclRules, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        AclRules::parse(&text).map_err(|(line, reason)| AuthError::Parse {
            path: path.to_path_buf(),
            line,
            reason,
        })
    }

    fn rules(&self) -> Arc<AclRules> {
        Arc::clone(&self.rules.read())
    }
}

fn decision(allowed: bool) -> Decision {
    if allowed {
        Decision::Allow
    } else {
        Decision::Deny(ReasonCode::NotAuthorized)
    }
}

#[async_trait]
impl Authorizer for AclFile {
    async fn authorize_publish(
        &self,
        client: &ClientInfo,
        topic: &TopicName,
        _: QoS,
        _: bool,
    ) -> Decision {
        let user = client.user();
        decision(
            self.rules()
                .allows(user, &client.client_id, topic.as_str(), Access::Write),
        )
    }

    async fn authorize_subscribe(
        &self,
        client: &ClientInfo,
        filter: &TopicFilter,
        qos: QoS,
    ) -> SubscribeDecision {
        let inner = match filter.shared() {
            Ok(Some((_, inner))) => inner,
            _ => filter.clone(),
        };
        let user = client.user();
        if self
            .rules()
            .allows_subscribe(user, &client.client_id, inner.as_str())
        {
            SubscribeDecision::Allow(qos)
        } else {
            SubscribeDecision::Deny(ReasonCode::NotAuthorized)
        }
    }

    fn authorize_receive(&self, client: &ClientInfo, topic: &TopicName, _: QoS) -> Decision {
        let user = client.user();
        decision(
            self.rules()
                .allows(user, &client.client_id, topic.as_str(), Access::Read),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret/#
topic $SYS/#

user bob
topic write bob/out

pattern write devices/%c/status
pattern read users/%u/inbox/#
";

    fn rules() -> AclRules {
        AclRules::parse(FILE).expect("parses")
    }

    #[test]
    fn user_and_anonymous_rules() {
        let r = rules();
        assert!(r.allows(None, "anon", "public/news", Access::Read));
        assert!(!r.allows(None, "anon", "public/news", Access::Write));
        assert!(!r.allows(None, "anon", "alice/x", Access::Read));
        assert!(r.allows(Some("alice"), "a1", "alice/x", Access::Write));
        assert!(
            !r.allows(Some("alice"), "a1", "public/news", Access::Read),
            "anonymous rules are for anonymous clients"
        );
        assert!(r.allows(Some("bob"), "b1", "bob/out", Access::Write));
        assert!(!r.allows(Some("bob"), "b1", "bob/out", Access::Read));
    }

    #[test]
    fn deny_wins() {
        let r = rules();
        assert!(!r.allows(Some("alice"), "a1", "alice/secret/key", Access::Read));
        assert!(!r.allows_subscribe(Some("alice"), "a1", "alice/secret/#"));
        // A broader subscription is allowed; deliveries from the secret part are not.
        assert!(r.allows_subscribe(Some("alice"), "a1", "alice/#"));
    }

    #[test]
    fn patterns_substitute_client_id_and_user_name() {
        let r = rules();
        assert!(r.allows(Some("bob"), "dev7", "devices/dev7/status", Access::Write));
        assert!(!r.allows(Some("bob"), "dev7", "devices/dev8/status", Access::Write));
        assert!(r.allows(Some("bob"), "x", "users/bob/inbox/1", Access::Read));
        assert!(
            !r.allows(None, "x", "users//inbox/1", Access::Read),
            "no user name: %u rules do not apply"
        );
    }

    #[test]
    fn wildcards_and_separators_in_ids_cannot_widen_patterns() {
        let r = rules();
        for id in ["+", "#", "a/b", "dev7/+"] {
            assert!(
                !r.allows(Some("bob"), id, "devices/dev7/status", Access::Write),
                "{id}"
            );
            assert!(
                !r.allows(
                    Some("bob"),
                    id,
                    &format!("devices/{id}/status"),
                    Access::Write
                ),
                "{id}"
            );
        }
        for user in ["+", "#", "bob/x"] {
            assert!(
                !r.allows(Some(user), "c", "users/bob/inbox/1", Access::Read),
                "{user}"
            );
        }
    }

    #[test]
    fn dollar_topics_need_explicit_rules() {
        let all = AclRules::parse("topic read #\n").expect("parses");
        assert!(all.allows(None, "c", "a/b", Access::Read));
        assert!(!all.allows(None, "c", "$SYS/broker/load", Access::Read));
        assert!(rules().allows(Some("alice"), "a1", "$SYS/broker/load", Access::Read));
    }

    #[test]
    fn parse_errors_name_the_line() {
        assert_eq!(
            AclRules::parse("topic read a/#/b\n"),
            Err((1, "invalid topic filter"))
        );
        assert_eq!(
            AclRules::parse("# c\nuser\n"),
            Err((2, "user needs a name"))
        );
        assert_eq!(
            AclRules::parse("bogus x\n"),
            Err((1, "expected user, topic or pattern"))
        );
    }
}
