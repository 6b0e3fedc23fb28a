//! Which storage writes something waits for (an acknowledgement, a held message, a queued
//! delivery). A leaf: the session state, messages and the journal all speak of gates, and
//! none of them needs the others for it.

/// The storage writes something waits for: those numbered in `(after, through]`. An
/// acknowledgement leaves (and a held message is sent) once they are all settled; if any of
/// them failed, the acknowledgement becomes a refusal (and the message is withdrawn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Gate {
    pub(crate) after: u64,
    pub(crate) through: u64,
}

impl Gate {
    /// Waits for nothing.
    pub(crate) const NONE: Gate = Gate {
        after: 0,
        through: 0,
    };

    /// Waits for the one submission `seq` (0: nothing).
    pub(crate) fn seq(seq: u64) -> Gate {
        Gate {
            after: seq.saturating_sub(1),
            through: seq,
        }
    }

    /// Waits for what `self` and `other` wait for. (A span: the writes of others numbered
    /// in between are waited for too, which costs nothing, as writes become durable in
    /// order; their failure counts as this gate's.)
    pub(crate) fn join(self, other: Gate) -> Gate {
        match (self.is_none(), other.is_none()) {
            (true, _) => other,
            (_, true) => self,
            _ => Gate {
                after: self.after.min(other.after),
                through: self.through.max(other.through),
            },
        }
    }

    /// True if it waits for nothing.
    pub(crate) fn is_none(self) -> bool {
        self.through <= self.after
    }
}
