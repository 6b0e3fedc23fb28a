//! A set of packet identifiers that most sessions never fill: one pointer until the first
//! identifier arrives, and the set is given back when it empties again.

use hashbrown::HashSet;

/// The capacity a set of ids starts with (128 buckets, about 400 bytes): a busy client
/// fills it to its window (100 or so) and empties it again, over and over, and a set grown
/// from nothing each time was rehashed up to six times per fill (0.6–0.8% of the CPU in
/// QoS 2 fan-in, for a publisher's inbound ids and a subscriber's inflight window alike).
/// Only a set in use holds it.
const BUSY_CAPACITY: usize = 112;

/// Packet identifiers (the inbound QoS 2 exchanges in progress, the identifiers stored
/// messages hold). Empty, it is a null pointer: every connected session has two of these,
/// and an idle one uses neither.
#[derive(Debug, Default)]
pub(crate) struct IdSet(Option<Box<HashSet<u16>>>);

impl IdSet {
    /// True if `id` is in the set.
    pub(crate) fn contains(&self, id: &u16) -> bool {
        self.0.as_ref().is_some_and(|s| s.contains(id))
    }

    /// Adds `id`; true if it was not there.
    pub(crate) fn insert(&mut self, id: u16) -> bool {
        self.0
            .get_or_insert_with(|| Box::new(HashSet::with_capacity(BUSY_CAPACITY)))
            .insert(id)
    }

    /// Removes `id`; true if it was there. The last one out frees the set.
    pub(crate) fn remove(&mut self, id: &u16) -> bool {
        let Some(set) = &mut self.0 else {
            return false;
        };
        let removed = set.remove(id);
        if set.is_empty() {
            self.0 = None;
        }
        removed
    }

    /// Whether a set is allocated (an empty one never is).
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> bool {
        self.0.is_some()
    }

    /// The identifiers, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().flat_map(|s| s.iter().copied())
    }

    /// How many identifiers the set holds.
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }
}

impl Extend<u16> for IdSet {
    fn extend<I: IntoIterator<Item = u16>>(&mut self, ids: I) {
        for id in ids {
            self.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdSet;

    #[test]
    fn holds_no_set_while_empty() {
        let mut ids = IdSet::default();
        assert!(ids.0.is_none());
        assert!(ids.insert(7));
        assert!(!ids.insert(7));
        ids.extend([8, 9]);
        assert!(ids.contains(&8));
        assert_eq!(ids.len(), 3);
        assert!(ids.remove(&7) && !ids.remove(&7));
        assert!(ids.remove(&8) && ids.remove(&9));
        assert_eq!(ids.len(), 0);
        assert!(ids.0.is_none(), "the last identifier out frees the set");
    }
}
