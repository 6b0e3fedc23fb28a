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

    /// Up to `limit` retained messages matching `filter` whose topics come after `after`,
    /// in topic order (level by level; a topic before the topics under it): one page of a
    /// listing that never holds more than a page. Subtrees wholly before `after` are
    /// skipped, not walked.
    pub(crate) fn page(
        &self,
        filter: &TopicFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Arc<Message>> {
        let levels: Vec<&str> = filter.as_str().split('/').collect();
        let after: Option<Vec<&str>> = after.map(|a| a.split('/').collect());
        let mut page = Page {
            after: after.as_deref(),
            limit,
            path: Vec::new(),
            out: Vec::new(),
        };
        page.walk(&self.root, &levels, true);
        page.out
    }
}

/// One page being collected (see [`RetainedStore::page`]).
struct Page<'a> {
    after: Option<&'a [&'a str]>,
    limit: usize,
    /// The levels of the node being visited.
    path: Vec<&'a str>,
    out: Vec<Arc<Message>>,
}

impl<'a> Page<'a> {
    fn full(&self) -> bool {
        self.out.len() >= self.limit
    }

    /// Whether every topic at or under `path` comes before the cursor.
    fn before_cursor(&self) -> bool {
        let Some(after) = self.after else {
            return false;
        };
        for (level, cursor) in self.path.iter().zip(after) {
            match level.cmp(cursor) {
                std::cmp::Ordering::Less => return true,
                std::cmp::Ordering::Greater => return false,
                std::cmp::Ordering::Equal => {}
            }
        }
        false
    }

    /// Takes the message at `path` if it comes after the cursor.
    fn take(&mut self, node: &Node) {
        let Some(message) = &node.message else {
            return;
        };
        let after = match self.after {
            Some(after) => self.path.as_slice() > after,
            None => true,
        };
        if after && !self.full() {
            self.out.push(Arc::clone(message));
        }
    }

    /// The children of `node` in level order (`$` levels left out at the root:
    /// MQTT-4.7.2-1).
    fn children(node: &'a Node, root: bool) -> Vec<(&'a str, &'a Node)> {
        let mut children: Vec<(&'a str, &'a Node)> = node
            .children
            .entries()
            .into_iter()
            .map(|(level, child)| (&**level, child))
            .filter(|(level, _)| !(root && level.starts_with('$')))
            .collect();
        children.sort_unstable_by(|a, b| a.0.cmp(b.0));
        children
    }

    fn walk(&mut self, node: &'a Node, levels: &[&str], root: bool) {
        let Some((&first, rest)) = levels.split_first() else {
            self.take(node);
            return;
        };
        match first {
            "#" => self.all(node, root),
            "+" => {
                for (level, child) in Self::children(node, root) {
                    self.visit(level, |page| page.walk(child, rest, false));
                    if self.full() {
                        return;
                    }
                }
            }
            literal => {
                let found = node
                    .children
                    .entries()
                    .into_iter()
                    .find(|(level, _)| &***level == literal);
                if let Some((level, child)) = found {
                    self.visit(level, |page| page.walk(child, rest, false));
                }
            }
        }
    }

    /// `node` itself ("a/#" matches "a") and everything under it.
    fn all(&mut self, node: &'a Node, root: bool) {
        self.take(node);
        for (level, child) in Self::children(node, root) {
            self.visit(level, |page| page.all(child, false));
            if self.full() {
                return;
            }
        }
    }

    /// Runs `f` one level down, unless that subtree is wholly before the cursor.
    fn visit(&mut self, level: &'a str, f: impl FnOnce(&mut Self)) {
        self.path.push(level);
        if !self.before_cursor() && !self.full() {
            f(self);
        }
        self.path.pop();
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
    fn pages_follow_topic_order_and_resume_after_the_cursor() {
        let mut s = RetainedStore::default();
        for t in ["b", "a/y", "a", "a/x/1", "c/z", "a/x", "$SYS/q", "b/a"] {
            s.apply(msg(t, b"1"), 100, usize::MAX);
        }
        let page = |filter: &str, after: Option<&str>, limit: usize| -> Vec<String> {
            s.page(&TopicFilter::new(filter).expect("valid"), after, limit)
                .iter()
                .map(|m| m.topic.to_string())
                .collect()
        };
        assert_eq!(page("#", None, 3), ["a", "a/x", "a/x/1"]);
        assert_eq!(page("#", Some("a/x/1"), 3), ["a/y", "b", "b/a"]);
        assert_eq!(page("#", Some("b/a"), 3), ["c/z"]);
        assert!(page("#", Some("c/z"), 3).is_empty());
        assert_eq!(page("+/x", None, 10), ["a/x"]);
        assert_eq!(page("a/+", Some("a/x"), 10), ["a/y"]);
        // Every match, whatever the page size, once: the pages add up to `matches`.
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let p = page("#", after.as_deref(), 2);
            if p.is_empty() {
                break;
            }
            after = p.last().cloned();
            all.extend(p);
        }
        assert_eq!(all, topics(&s, "#"));
        assert_eq!(page("$SYS/#", None, 10), ["$SYS/q"]);
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
