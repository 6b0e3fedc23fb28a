//! Outbound topic aliases (MQTT 5.0 §3.3.2.3.4): the Topic Alias map the broker keeps for
//! the PUBLISHes it sends on one connection.
//!
//! The client says how many aliases it accepts (Topic Alias Maximum in CONNECT); the
//! broker uses at most that many, and at most its own `Capabilities::outbound_topic_aliases`
//! (MQTT-3.1.2-26, -27). When every alias is taken, the least recently used one is given to
//! the new topic. Topics of three bytes or fewer are sent as they are: an alias (three
//! bytes of property) would not make them shorter.
//!
//! The map lives and dies with the connection (aliases never carry over, MQTT-3.3.2-7 and
//! its v5 counterpart), and owns the topics it holds, so it never keeps a read buffer alive.

use hashbrown::HashMap;

use crate::codec::TopicAliasUse;
use crate::topic::TopicName;

/// No slot (the end of the recency list).
const NIL: u16 = u16::MAX;

/// Topics this short or shorter are never aliased.
const SHORTEST_WORTH_ALIASING: usize = 4;

/// One alias: its topic and its place in the recency list.
#[derive(Debug)]
struct Slot {
    topic: TopicName,
    /// More recently used neighbour.
    newer: u16,
    /// Less recently used neighbour.
    older: u16,
}

/// The aliases of one connection, with least-recently-used replacement. Every operation
/// is O(1).
#[derive(Debug)]
pub(crate) struct OutboundAliases {
    /// How many aliases may be used (1..=65534; alias `n` lives in `slots[n - 1]`).
    max: u16,
    by_topic: HashMap<TopicName, u16>,
    slots: Vec<Slot>,
    /// Most recently used slot.
    newest: u16,
    /// Least recently used slot: the next to be replaced once every alias is taken.
    oldest: u16,
}

impl OutboundAliases {
    /// A map of at most `max` aliases; `None` for 0 (no aliases).
    pub(crate) fn new(max: u16) -> Option<Self> {
        (max > 0).then(|| Self {
            // NIL stays free as the list terminator.
            max: max.min(NIL - 1),
            by_topic: HashMap::new(),
            slots: Vec::new(),
            newest: NIL,
            oldest: NIL,
        })
    }

    /// How to send `topic`: with the alias the client already knows, with a new (or
    /// reused) alias set, or, for a topic too short to be worth it, `None`.
    pub(crate) fn alias_for(&mut self, topic: &TopicName) -> Option<TopicAliasUse> {
        if topic.as_str().len() < SHORTEST_WORTH_ALIASING {
            return None;
        }
        if let Some(&slot) = self.by_topic.get(topic) {
            self.unlink(slot);
            self.push_newest(slot);
            return Some(TopicAliasUse::Use(slot + 1));
        }
        // The map owns its topics: a routed message's topic may be a slice of a read
        // buffer, which must not live as long as the connection.
        let owned = topic.owned();
        let slot = if self.slots.len() < usize::from(self.max) {
            self.slots.push(Slot {
                topic: owned.clone(),
                newer: NIL,
                older: NIL,
            });
            (self.slots.len() - 1) as u16
        } else {
            let slot = self.oldest;
            self.unlink(slot);
            let old = std::mem::replace(&mut self.slots[usize::from(slot)].topic, owned.clone());
            // Unless that topic was forgotten and has a newer alias since.
            if self.by_topic.get(&old) == Some(&slot) {
                self.by_topic.remove(&old);
            }
            slot
        };
        self.by_topic.insert(owned, slot);
        self.push_newest(slot);
        Some(TopicAliasUse::Set(slot + 1))
    }

    /// Takes back an alias whose PUBLISH was not sent after all (it failed to encode): the
    /// client never learned it, so it must be set again before it is used.
    pub(crate) fn forget(&mut self, alias: u16) {
        let slot = alias.wrapping_sub(1);
        let Some(s) = self.slots.get(usize::from(slot)) else {
            return;
        };
        if self.by_topic.get(&s.topic) == Some(&slot) {
            let topic = s.topic.clone();
            self.by_topic.remove(&topic);
            // The slot stays in the list with a topic no lookup finds, as the oldest: the
            // next new topic takes it.
            self.unlink(slot);
            self.push_oldest(slot);
        }
    }

    fn unlink(&mut self, slot: u16) {
        let Slot { newer, older, .. } = self.slots[usize::from(slot)];
        match newer {
            NIL => self.newest = older,
            n => self.slots[usize::from(n)].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[usize::from(o)].newer = newer,
        }
    }

    fn push_oldest(&mut self, slot: u16) {
        let s = &mut self.slots[usize::from(slot)];
        s.older = NIL;
        s.newer = self.oldest;
        match self.oldest {
            NIL => self.newest = slot,
            o => self.slots[usize::from(o)].older = slot,
        }
        self.oldest = slot;
    }

    fn push_newest(&mut self, slot: u16) {
        let s = &mut self.slots[usize::from(slot)];
        s.newer = NIL;
        s.older = self.newest;
        match self.newest {
            NIL => self.oldest = slot,
            n => self.slots[usize::from(n)].newer = slot,
        }
        self.newest = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> TopicName {
        TopicName::new(s).expect("valid topic")
    }

    #[test]
    fn a_topic_is_set_once_then_used() {
        let mut a = OutboundAliases::new(4).expect("on");
        assert_eq!(
            a.alias_for(&topic("sensors/1")),
            Some(TopicAliasUse::Set(1))
        );
        assert_eq!(
            a.alias_for(&topic("sensors/2")),
            Some(TopicAliasUse::Set(2))
        );
        assert_eq!(
            a.alias_for(&topic("sensors/1")),
            Some(TopicAliasUse::Use(1))
        );
        assert_eq!(
            a.alias_for(&topic("sensors/2")),
            Some(TopicAliasUse::Use(2))
        );
    }

    #[test]
    fn the_least_recently_used_alias_is_replaced() {
        let mut a = OutboundAliases::new(2).expect("on");
        a.alias_for(&topic("aaaa"));
        a.alias_for(&topic("bbbb"));
        // "aaaa" is used again, so "bbbb" is the oldest.
        assert_eq!(a.alias_for(&topic("aaaa")), Some(TopicAliasUse::Use(1)));
        assert_eq!(a.alias_for(&topic("cccc")), Some(TopicAliasUse::Set(2)));
        assert_eq!(a.alias_for(&topic("aaaa")), Some(TopicAliasUse::Use(1)));
        // "bbbb" lost its alias and gets the oldest one now ("cccc"'s).
        assert_eq!(a.alias_for(&topic("bbbb")), Some(TopicAliasUse::Set(2)));
        assert_eq!(a.alias_for(&topic("cccc")), Some(TopicAliasUse::Set(1)));
    }

    #[test]
    fn aliases_never_exceed_the_maximum() {
        // MQTT-3.1.2-26 (v5): never above the client's Topic Alias Maximum.
        let mut a = OutboundAliases::new(3).expect("on");
        for i in 0..100 {
            let alias = a
                .alias_for(&topic(&format!("t/{i:04}")))
                .expect("long enough")
                .alias();
            assert!((1..=3).contains(&alias), "alias {alias}");
        }
        assert_eq!(a.by_topic.len(), 3);
    }

    #[test]
    fn zero_means_no_aliases_and_short_topics_go_as_they_are() {
        // MQTT-3.1.2-27 (v5): no Topic Alias Maximum, no aliases.
        assert!(OutboundAliases::new(0).is_none());
        let mut a = OutboundAliases::new(8).expect("on");
        assert_eq!(a.alias_for(&topic("abc")), None);
    }

    #[test]
    fn a_forgotten_alias_is_the_next_one_reused() {
        let mut a = OutboundAliases::new(2).expect("on");
        a.alias_for(&topic("t/one"));
        assert_eq!(a.alias_for(&topic("t/two")), Some(TopicAliasUse::Set(2)));
        a.forget(2);
        // "t/one" is older, but the forgotten alias goes first.
        assert_eq!(a.alias_for(&topic("t/three")), Some(TopicAliasUse::Set(2)));
        assert_eq!(a.alias_for(&topic("t/one")), Some(TopicAliasUse::Use(1)));
    }

    #[test]
    fn a_forgotten_alias_is_set_again() {
        let mut a = OutboundAliases::new(2).expect("on");
        assert_eq!(a.alias_for(&topic("t/one")), Some(TopicAliasUse::Set(1)));
        a.forget(1);
        assert_eq!(a.alias_for(&topic("t/one")), Some(TopicAliasUse::Set(2)));
        assert_eq!(a.alias_for(&topic("t/two")), Some(TopicAliasUse::Set(1)));
        assert_eq!(a.alias_for(&topic("t/one")), Some(TopicAliasUse::Use(2)));
    }
}
