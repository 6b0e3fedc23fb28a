//! The subscription trie: topic filters split into levels, each node holding the subscribers
//! whose filter ends there.
//!
//! Matching a topic name walks its levels once, following the exact child, the `+` child and
//! collecting `#` subscribers at every node on the way, so its cost grows with the depth of
//! the topic and the number of wildcard branches, not with the number of subscriptions.
//! Names beginning with `$` are not matched by a wildcard in the first level
//! (MQTT-4.7.2-1).
//!
//! The trie is not synchronised; the router keeps it under a lock and releases the lock
//! before fanning out.

use std::hash::Hash;

use bytestring::ByteString;

use super::small_map::SmallMap;
use super::{TopicFilter, TopicName};

/// A map from topic filters to subscribers (`K` identifies a subscriber, `V` is its data).
#[derive(Debug)]
pub struct SubscriptionTrie<K, V> {
    root: Node<K, V>,
    len: usize,
}

/// One level. Compact: a node with one child and one subscriber holds exactly those (see
/// [`SmallMap`]); a level's name is a slice of the filter string that created it, not a
/// copy. About 150 bytes per level of a distinct filter.
#[derive(Debug)]
struct Node<K, V> {
    children: SmallMap<ByteString, Node<K, V>>,
    plus: Option<Box<Node<K, V>>>,
    /// Subscribers whose filter ends with `#` right below this node.
    hash: SmallMap<K, V>,
    /// Subscribers whose filter ends at this node.
    here: SmallMap<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self {
            children: SmallMap::default(),
            plus: None,
            hash: SmallMap::default(),
            here: SmallMap::default(),
        }
    }
}

impl<K: Hash + Eq, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_empty()
            && self.here.is_empty()
    }
}

/// The levels to walk for a filter, and whether it ends in `#` below the last of them
/// (`"#"` walks none; `"a/#"` walks `a`; `"/#"` walks one empty level).
fn split_filter(text: &str) -> (Option<&str>, bool) {
    if text == "#" {
        (None, true)
    } else if let Some(path) = text.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(text), false)
    }
}

impl<K: Hash + Eq, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V> SubscriptionTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }

    /// Number of (filter, subscriber) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces `key`'s subscription to `filter`; returns the previous value.
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        let old = Self::map_for(&mut self.root, filter).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of `key`'s subscription to `filter`, inserting `make()` if there is none.
    pub fn get_or_insert_with(
        &mut self,
        filter: &TopicFilter,
        key: K,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        let len = &mut self.len;
        Self::map_for(&mut self.root, filter).get_or_insert_with(key, || {
            *len += 1;
            make()
        })
    }

    /// The value of `key`'s subscription to `filter`, if any.
    pub fn get_mut(&mut self, filter: &TopicFilter, key: &K) -> Option<&mut V> {
        let (path, hash) = split_filter(filter.as_str());
        let mut node = &mut self.root;
        for level in path.into_iter().flat_map(|p| p.split('/')) {
            node = if level == "+" {
                node.plus.as_deref_mut()?
            } else {
                node.children.get_mut(level)?
            };
        }
        let map = if hash { &mut node.hash } else { &mut node.here };
        map.get_mut(key)
    }

    /// The subscriber map for `filter`, creating nodes on the way.
    fn map_for<'a>(root: &'a mut Node<K, V>, filter: &TopicFilter) -> &'a mut SmallMap<K, V> {
        let text = filter.as_bytestring();
        let (path, hash) = split_filter(text);
        let mut node = root;
        for level in path.into_iter().flat_map(|p| p.split('/')) {
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.children
                    .get_or_insert_with(text.slice_ref(level), Node::default)
            };
        }
        if hash {
            &mut node.hash
        } else {
            &mut node.here
        }
    }

    /// Removes `key`'s subscription to `filter`, pruning empty nodes; returns its value.
    pub fn remove(&mut self, filter: &TopicFilter, key: &K) -> Option<V> {
        let levels: Vec<&str> = filter.as_str().split('/').collect();
        let removed = Self::remove_at(&mut self.root, &levels, key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    fn remove_at(node: &mut Node<K, V>, levels: &[&str], key: &K) -> Option<V> {
        let Some((&first, rest)) = levels.split_first() else {
            return node.here.remove(key);
        };
        if first == "#" {
            return node.hash.remove(key);
        }
        if first == "+" {
            let child = node.plus.as_mut()?;
            let out = Self::remove_at(child, rest, key);
            if child.is_empty() {
                node.plus = None;
            }
            out
        } else {
            let child = node.children.get_mut(first)?;
            let out = Self::remove_at(child, rest, key);
            if child.is_empty() {
                node.children.remove(first);
            }
            out
        }
    }

    /// Calls `f` for every subscription whose filter matches `topic`. A subscriber with
    /// several matching filters is reported once per filter.
    pub fn for_each_match(&self, topic: &TopicName, mut f: impl FnMut(&K, &V)) {
        // On the stack for topics of up to 16 levels: no allocation per routed message.
        let levels: smallvec::SmallVec<[&str; 16]> = topic.as_str().split('/').collect();
        let system = topic.is_system();
        Self::walk(&self.root, &levels, !system, &mut f);
    }

    fn walk(node: &Node<K, V>, levels: &[&str], wildcards: bool, f: &mut impl FnMut(&K, &V)) {
        // `#` also matches the parent level ("sport/#" matches "sport"), MQTT 4.7.1.2.
        if wildcards {
            node.hash.for_each(|k, v| f(k, v));
        }
        let Some((&first, rest)) = levels.split_first() else {
            node.here.for_each(|k, v| f(k, v));
            return;
        };
        if let Some(child) = node.children.get(first) {
            Self::walk(child, rest, true, f);
        }
        if wildcards {
            if let Some(plus) = &node.plus {
                Self::walk(plus, rest, true, f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(trie: &SubscriptionTrie<u32, ()>, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        trie.for_each_match(&TopicName::new(topic).expect("valid"), |k, _| out.push(*k));
        out.sort_unstable();
        out
    }

    #[test]
    fn examples_of_section_4_7() {
        let mut trie = SubscriptionTrie::new();
        for (i, f) in [
            "sport/tennis/player1/#",
            "sport/#",
            "sport/+",
            "+/+",
            "/+",
            "#",
            "+",
        ]
        .iter()
        .enumerate()
        {
            trie.insert(&TopicFilter::new(*f).expect("valid"), i as u32, ());
        }
        // "sport/tennis/player1/#" matches the parent level too.
        assert_eq!(matches(&trie, "sport/tennis/player1"), vec![0, 1, 5]);
        assert_eq!(matches(&trie, "sport"), vec![1, 5, 6]);
        assert_eq!(matches(&trie, "sport/"), vec![1, 2, 3, 5]);
        assert_eq!(matches(&trie, "/finance"), vec![3, 4, 5]);
    }

    #[test]
    fn dollar_topics_not_matched_by_first_level_wildcards() {
        // MQTT-4.7.2-1 (both): the matcher serves both levels.
        // MQTT-4.7.2-1
        let mut trie = SubscriptionTrie::new();
        trie.insert(&TopicFilter::new("#").expect("valid"), 1, ());
        trie.insert(
            &TopicFilter::new("+/monitor/Clients").expect("valid"),
            2,
            (),
        );
        trie.insert(&TopicFilter::new("$SYS/#").expect("valid"), 3, ());
        trie.insert(&TopicFilter::new("$SYS/monitor/+").expect("valid"), 4, ());
        assert_eq!(matches(&trie, "$SYS/monitor/Clients"), vec![3, 4]);
        assert_eq!(matches(&trie, "x/monitor/Clients"), vec![1, 2]);
    }

    #[test]
    fn remove_prunes_and_counts() {
        let mut trie = SubscriptionTrie::new();
        let f = TopicFilter::new("a/+/c").expect("valid");
        assert_eq!(trie.insert(&f, 1u32, ()), None);
        assert_eq!(trie.insert(&f, 1u32, ()), Some(()));
        assert_eq!(trie.len(), 1);
        assert_eq!(trie.remove(&f, &1), Some(()));
        assert_eq!(trie.remove(&f, &1), None);
        assert!(trie.is_empty());
        assert!(trie.root.is_empty());
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof!["[ab]{0,1}", Just("$s".to_string())]
    }

    proptest! {
        /// The trie agrees with the level-by-level matcher (`topic::matches`) over random filters
        /// and topics.
        #[test]
        fn agrees_with_naive_matcher(
            filters in proptest::collection::vec((proptest::collection::vec(prop_oneof![level(), Just("+".to_string())], 1..4), any::<bool>()), 1..12),
            topics in proptest::collection::vec(proptest::collection::vec(level(), 1..5), 1..12),
        ) {
            let mut trie = SubscriptionTrie::new();
            let mut list = Vec::new();
            for (i, (levels, hash)) in filters.iter().enumerate() {
                let mut f = levels.join("/");
                if *hash { f.push_str("/#"); }
                let Ok(filter) = TopicFilter::new(f.clone()) else { continue };
                trie.insert(&filter, i as u32, ());
                list.push((i as u32, f));
            }
            for t in topics {
                let t = t.join("/");
                let Ok(name) = TopicName::new(t.clone()) else { continue };
                let mut want: Vec<u32> = list.iter().filter(|(_, f)| crate::topic::matches(f, &t)).map(|(i, _)| *i).collect();
                want.sort_unstable();
                let mut got = Vec::new();
                trie.for_each_match(&name, |k, _| got.push(*k));
                got.sort_unstable();
                prop_assert_eq!(got, want, "topic {}", t);
            }
        }
    }
}
