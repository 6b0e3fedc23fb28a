//! Retained messages (MQTT 3.3.1.3): one per topic name, kept in a trie of topic levels so a
//! new subscription's filter finds its matches without scanning every retained topic.

use std::sync::Arc;

use bytestring::ByteString;

use crate::topic::SmallMap;

use crate::message::Message;
use crate::topic::{TopicFilter, TopicName};

/// The retained messages of a broker. Not synchronised; the router holds it under a lock.
#[derive(Debug, Default)]
pub(crate) struct RetainedStore {
    root: Node,
    len: usize,
    /// Bytes the stored messages hold (`Message::size`).
    bytes: usize,
}

#[derive(Debug, Default)]
struct Node {
    children: SmallMap<ByteString, Node>,
    message: Option<Arc<Message>>,
}

/// What [`RetainedStore::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetainChange {
    /// A message was stored where there was none.
    Set,
    /// A message replaced the previous one for its topic (MQTT-3.3.1-5).
    Replaced,
    /// A zero-length payload removed the retained message (MQTT-3.3.1-10/-11).
    Cleared,
    /// A zero-length payload found nothing to remove, or the store was full.
    Unchanged,
}

impl RetainedStore {
    /// How many topics hold a retained message.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by the stored messages.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Stores `message` as its topic's retained message, or clears the topic when the payload
    /// is empty. A new topic is refused when `max` topics are already retained; a message
    /// that would take the store past `max_bytes` is refused too, and the topic's previous
    /// message (no longer the current one) is removed.
    pub(crate) fn apply(
        &mut self,
        message: Arc<Message>,
        max: usize,
        max_bytes: usize,
    ) -> RetainChange {
        if message.payload.is_empty() {
            return if self.remove(&message.topic) {
                RetainChange::Cleared
            } else {
                RetainChange::Unchanged
            };
        }
        let size = message.size();
        // Near the budget only: what the topic holds now is given back by a replacement.
        if self.bytes + size > max_bytes
            && self.bytes + size - self.size_of(&message.topic) > max_bytes
        {
            return if self.remove(&message.topic) {
                RetainChange::Cleared
            } else {
                RetainChange::Unchanged
            };
        }
        let full = self.len >= max;
        let topic = message.topic.as_bytestring().clone();
        let mut node = &mut self.root;
        for level in topic.split('/') {
            if full && node.children.get(level).is_none() {
                return RetainChange::Unchanged;
            }
            node = node
                .children
                .get_or_insert_with(topic.slice_ref(level), Node::default);
        }
        match node.message.replace(message) {
            Some(old) => {
                self.bytes = self.bytes + size - old.size();
                RetainChange::Replaced
            }
            None if full => {
                node.message = None;
                RetainChange::Unchanged
            }
            None => {
                self.len += 1;
                self.bytes += size;
                RetainChange::Set
            }
        }
    }

    /// What the retained message of `topic` holds (0 if none).
    fn size_of(&self, topic: &TopicName) -> usize {
        let mut node = &self.root;
        for level in topic.as_str().split('/') {
            match node.children.get(level) {
                Some(child) => node = child,
                None => return 0,
            }
        }
        node.message.as_ref().map_or(0, |m| m.size())
    }

    fn remove(&mut self, topic: &TopicName) -> bool {
        let levels: Vec<&str> = topic.as_str().split('/').collect();
        let removed = Self::remove_at(&mut self.root, &levels);
        if let Some(old) = &removed {
            self.len -= 1;
            self.bytes -= old.size();
        }
        removed.is_some()
    }

    fn remove_at(node: &mut Node, levels: &[&str]) -> Option<Arc<Message>> {
        let Some((&first, rest)) = levels.split_first() else {
            return node.message.take();
        };
        let child = node.children.get_mut(first)?;
        let removed = Self::remove_at(child, rest);
        if child.message.is_none() && child.children.is_empty() {
            node.children.remove(first);
        }
        removed
    }

    /// Appends every retained message whose topic matches `filter` to `out`.
    pub(crate) fn matches(&self, filter: &TopicFilter, out: &mut Vec<Arc<Message>>) {
        let levels: Vec<&str> = filter.as_str().split('/').collect();
        Self::walk(&self.root, &levels, true, out);
    }

    fn walk(node: &Node, levels: &[&str], root: bool, out: &mut Vec<Arc<Message>>) {
        let Some((&first, rest)) = levels.split_first() else {
            out.extend(node.message.iter().cloned());
            return;
        };
        match first {
            "#" => {
                // "a/#" matches "a" itself too; the root has no message.
                out.extend(node.message.iter().cloned());
                node.children.for_each(|level, child| {
                    if !(root && level.starts_with('$')) {
                        Self::collect_all(child, out);
                    }
                });
            }
            "+" => {
                node.children.for_each(|level, child| {
                    // MQTT-4.7.2-1: no `$` topics for a wildcard in the first level.
                    if !(root && level.starts_with('$')) {
                        Self::walk(child, rest, false, out);
                    }
                });
            }
            literal => {
                if let Some(child) = node.children.get(literal) {
                    Self::walk(child, rest, false, out);
                }
            }
        }
    }

    fn collect_all(node: &Node, out: &mut Vec<Arc<Message>>) {
        out.extend(node.message.iter().cloned());
        node.children
            .for_each(|_, child| Self::collect_all(child, out));
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::QoS;

    fn msg(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message::new(
            TopicName::new(topic).expect("valid"),
            Bytes::from_static(payload),
            QoS::AtMostOnce,
            true,
        ))
    }

    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        store.matches(&TopicFilter::new(filter).expect("valid"), &mut out);
        let mut t: Vec<String> = out.iter().map(|m| m.topic.to_string()).collect();
        t.sort();
        t
    }

    #[test]
    fn set_replace_clear() {
        let mut s = RetainedStore::default();
        assert_eq!(s.apply(msg("a/b", b"1"), 10, usize::MAX), RetainChange::Set);
        assert_eq!(
            s.apply(msg("a/b", b"2"), 10, usize::MAX),
            RetainChange::Replaced
        );
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.apply(msg("a/b", b""), 10, usize::MAX),
            RetainChange::Cleared
        );
        assert_eq!(
            s.apply(msg("a/b", b""), 10, usize::MAX),
            RetainChange::Unchanged
        );
        assert_eq!(s.len(), 0);
        assert!(s.root.children.is_empty());
    }

    #[test]
    fn wildcard_matching_skips_dollar_topics() {
        let mut s = RetainedStore::default();
        for t in ["a", "a/b", "a/b/c", "x/b", "$SYS/load"] {
            s.apply(msg(t, b"v"), 100, usize::MAX);
        }
        assert_eq!(topics(&s, "#"), vec!["a", "a/b", "a/b/c", "x/b"]);
        assert_eq!(topics(&s, "a/#"), vec!["a", "a/b", "a/b/c"]);
        assert_eq!(topics(&s, "+/b"), vec!["a/b", "x/b"]);
        assert_eq!(topics(&s, "+"), vec!["a"]);
        assert_eq!(topics(&s, "$SYS/#"), vec!["$SYS/load"]);
    }

    #[test]
    fn limit_refuses_new_topics_only() {
        let mut s = RetainedStore::default();
        assert_eq!(s.apply(msg("a", b"1"), 1, usize::MAX), RetainChange::Set);
        assert_eq!(
            s.apply(msg("b", b"1"), 1, usize::MAX),
            RetainChange::Unchanged
        );
        assert_eq!(
            s.apply(msg("a", b"2"), 1, usize::MAX),
            RetainChange::Replaced
        );
        assert_eq!(topics(&s, "#"), vec!["a"]);
    }

    /// `max_retained_bytes`: a new message past the budget is refused (and its topic's old
    /// one removed), but replacing one with a message of the same size at the budget is not.
    #[test]
    fn byte_budget_counts_what_a_replacement_gives_back() {
        let mut s = RetainedStore::default();
        let one = msg("a", b"1").size();
        assert_eq!(s.apply(msg("a", b"1"), 10, one), RetainChange::Set);
        assert_eq!(s.apply(msg("a", b"2"), 10, one), RetainChange::Replaced);
        assert_eq!(s.bytes(), one);
        assert_eq!(s.apply(msg("b", b"1"), 10, one), RetainChange::Unchanged);
        assert_eq!(s.apply(msg("a", b"22"), 10, one), RetainChange::Cleared);
        assert_eq!((s.len(), s.bytes()), (0, 0));
    }
}
