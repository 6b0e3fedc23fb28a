//! A session's queue: deliveries one by one, and runs of QoS 0 copies shared between
//! sessions.
//!
//! A publisher's reader routes everything one read brought in before it queues anything
//! (see [`super::Fanout`]). With many subscribers to the same topics, each of them gets the
//! same QoS 0 messages from such a run, in the same order, with the same wire form (no
//! Subscription Identifier, no RETAIN flag, no expiry countdown). Those copies are queued as
//! one [`Run`], shared by every session that gets exactly those messages: one queue entry
//! per session instead of one per message, one reference count taken per message instead
//! of one per copy (the count's cache line moved between the publisher's core and the
//! subscribers' cores for every copy), and one encoding of the whole run, which each
//! subscriber's writer sends from where it is ([`Run::encoded`]) instead of copying every
//! message into its own buffer.
//!
//! A writer that cannot send the run as it is (topic aliases, delivery transforms, hooks
//! that see each delivery, a Maximum Packet Size a message exceeds, an authorizer change
//! since routing) takes its messages one at a time as ordinary deliveries
//! ([`Queue::pop_front`]), and everything those paths check is checked as before. A run
//! counts as many messages and bytes against the session's bounds as its messages would
//! one by one.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};

use crate::codec::{EncodeError, ProtocolVersion, PublishQoS, QoS};
use crate::message::{Delivery, Message};

/// QoS 0 messages, in order, queued for every session that gets exactly these copies.
#[derive(Debug)]
pub(crate) struct Run {
    messages: Box<[Arc<Message>]>,
    /// What the messages count against a queue's byte bound ([`Message::size`]).
    bytes: usize,
    /// The run encoded, per wire form (3.1 and 3.1.1 share one; 5.0).
    forms: [OnceLock<Result<RunForm, EncodeError>>; 2],
}

/// A run as one buffer of PUBLISH packets.
#[derive(Debug)]
pub(crate) struct RunForm {
    /// The packets, back to back.
    pub(crate) bytes: Bytes,
    /// The largest packet among them (for the client's Maximum Packet Size).
    pub(crate) largest: usize,
}

impl Run {
    /// A run of these messages (at least one; each shares one wire form for every copy:
    /// see [`Message::shares_form`]).
    pub(crate) fn new(messages: Box<[Arc<Message>]>) -> Arc<Self> {
        let bytes = messages.iter().map(|m| m.size()).sum();
        Arc::new(Self {
            messages,
            bytes,
            forms: Default::default(),
        })
    }

    /// Messages in the run.
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// The run as QoS 0 PUBLISH packets without RETAIN or DUP, for `version`: encoded by
    /// the first writer that asks, then shared.
    pub(crate) fn encoded(&self, version: ProtocolVersion) -> Result<&RunForm, EncodeError> {
        let slot = usize::from(version.is_v5());
        self.forms[slot]
            .get_or_init(|| {
                let mut largest = 0;
                let mut total = 0;
                for m in self.messages.iter() {
                    let len = m.encoded(version, false)?.len();
                    largest = largest.max(len);
                    total += len;
                }
                let mut out = BytesMut::with_capacity(total);
                for m in self.messages.iter() {
                    m.encoded(version, false)?.write(
                        &mut out,
                        false,
                        PublishQoS::AtMostOnce,
                        false,
                    )?;
                }
                Ok(RunForm {
                    bytes: out.freeze(),
                    largest,
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// One session's place in a shared run.
#[derive(Debug, Clone)]
pub(crate) struct RunCopy {
    pub(crate) run: Arc<Run>,
    /// The messages before this one were taken already.
    next: u32,
    /// The authorizers' epoch in which the receive checks passed (0: check again).
    pub(crate) authorized_epoch: u32,
}

impl RunCopy {
    /// This session's copy of `run`, checked in `epoch`.
    pub(crate) fn new(run: Arc<Run>, authorized_epoch: u32) -> Self {
        Self {
            run,
            next: 0,
            authorized_epoch,
        }
    }

    /// The copies not taken yet, as ordinary deliveries.
    pub(crate) fn deliveries(&self) -> impl Iterator<Item = Delivery> + '_ {
        self.run.messages[self.next as usize..]
            .iter()
            .map(|m| self.delivery(m))
    }

    fn delivery(&self, message: &Arc<Message>) -> Delivery {
        let mut d = Delivery::new(Arc::clone(message), QoS::AtMostOnce, false, Vec::new());
        d.authorized_epoch = self.authorized_epoch;
        d
    }
}

#[derive(Debug)]
enum Entry {
    One(Delivery),
    Run(RunCopy),
}

/// A session's queued deliveries (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Queue {
    entries: VecDeque<Entry>,
    /// Messages queued beyond one per entry (the rest of each run), so `len` counts
    /// messages.
    extra: usize,
}

impl Queue {
    /// Messages queued.
    pub(crate) fn len(&self) -> usize {
        self.entries.len() + self.extra
    }

    /// True if nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues one delivery last.
    pub(crate) fn push_back(&mut self, delivery: Delivery) {
        self.entries.push_back(Entry::One(delivery));
    }

    /// Queues a run last.
    pub(crate) fn push_run(&mut self, copy: RunCopy) {
        let left = copy.run.len() - copy.next as usize;
        if left == 0 {
            return;
        }
        self.extra += left - 1;
        self.entries.push_back(Entry::Run(copy));
    }

    /// The first delivery, unless the queue starts with a run (whose copies wait for
    /// nothing: no storage record, no publisher's acknowledgement).
    pub(crate) fn front_delivery(&self) -> Option<&Delivery> {
        match self.entries.front()? {
            Entry::One(d) => Some(d),
            Entry::Run(_) => None,
        }
    }

    /// The run the queue starts with, if none of its copies was taken yet.
    pub(crate) fn front_run(&self) -> Option<&RunCopy> {
        match self.entries.front()? {
            Entry::Run(copy) if copy.next == 0 => Some(copy),
            _ => None,
        }
    }

    /// Takes the next message (out of the first run, if the queue starts with one).
    pub(crate) fn pop_front(&mut self) -> Option<Delivery> {
        match self.entries.front_mut()? {
            Entry::One(_) => match self.entries.pop_front() {
                Some(Entry::One(d)) => Some(d),
                _ => None,
            },
            Entry::Run(copy) => {
                let at = copy.next as usize;
                let delivery = copy.delivery(copy.run.messages.get(at)?);
                if at + 1 < copy.run.len() {
                    copy.next += 1;
                    self.extra -= 1;
                } else {
                    self.entries.pop_front();
                }
                Some(delivery)
            }
        }
    }

    /// Takes the first run whole (see [`Queue::front_run`]).
    pub(crate) fn take_run(&mut self) -> Option<RunCopy> {
        self.front_run()?;
        match self.entries.pop_front() {
            Some(Entry::Run(copy)) => {
                self.extra -= copy.run.len() - 1;
                Some(copy)
            }
            _ => None,
        }
    }

    /// Forgets everything queued.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.extra = 0;
    }
}

/// Bytes a run's untaken copies count against a queue's byte bound.
pub(crate) fn run_bytes(copy: &RunCopy) -> usize {
    if copy.next == 0 {
        copy.run.bytes
    } else {
        copy.run.messages[copy.next as usize..]
            .iter()
            .map(|m| m.size())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::TopicName;

    fn message(i: u8) -> Arc<Message> {
        let topic = TopicName::new("a/b").expect("valid");
        Arc::new(Message::new(
            topic,
            Bytes::from(vec![i; 3]),
            QoS::AtMostOnce,
            false,
        ))
    }

    #[test]
    fn a_run_counts_as_its_messages_and_pops_them_in_order() {
        let run = Run::new(vec![message(1), message(2), message(3)].into_boxed_slice());
        let mut q = Queue::default();
        q.push_back(Delivery::new(
            message(0),
            QoS::AtMostOnce,
            false,
            Vec::new(),
        ));
        q.push_run(RunCopy::new(Arc::clone(&run), 7));
        q.push_back(Delivery::new(
            message(4),
            QoS::AtMostOnce,
            false,
            Vec::new(),
        ));
        assert_eq!(q.len(), 5);
        assert!(q.front_run().is_none(), "a delivery comes first");
        let mut seen = Vec::new();
        while let Some(d) = q.pop_front() {
            seen.push(d.message.payload[0]);
            if d.message.payload[0] != 0 && d.message.payload[0] != 4 {
                assert_eq!(d.authorized_epoch, 7, "the run's check travels with it");
            }
        }
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert_eq!(q.len(), 0);
        assert!(q.is_empty());
    }

    #[test]
    fn a_run_is_taken_whole_only_before_any_copy_of_it_left() {
        let run = Run::new(vec![message(1), message(2)].into_boxed_slice());
        let mut q = Queue::default();
        q.push_run(RunCopy::new(Arc::clone(&run), 1));
        assert_eq!(run_bytes(q.front_run().expect("a run")), run.bytes);
        let first = q.pop_front().expect("one copy");
        assert_eq!(first.message.payload[0], 1);
        assert!(q.front_run().is_none() && q.take_run().is_none());
        assert_eq!(q.len(), 1);
        q.push_run(RunCopy::new(Arc::clone(&run), 1));
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop_front().expect("second").message.payload[0], 2);
        let whole = q.take_run().expect("the second run, whole");
        assert_eq!(whole.run.len(), 2);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_run_is_encoded_once_as_its_packets_back_to_back() {
        let run = Run::new(vec![message(1), message(2)].into_boxed_slice());
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let form = run.encoded(version).expect("encodes");
            let mut expected = BytesMut::new();
            for m in run.messages.iter() {
                let one = m.encoded(version, false).expect("encodes");
                one.write(&mut expected, false, PublishQoS::AtMostOnce, false)
                    .expect("writes");
            }
            assert_eq!(form.bytes, expected.freeze());
            assert_eq!(
                form.largest,
                run.messages[0]
                    .encoded(version, false)
                    .expect("encodes")
                    .len()
            );
            let again = run.encoded(version).expect("cached");
            assert_eq!(again.bytes.as_ptr(), form.bytes.as_ptr(), "encoded once");
        }
    }
}
