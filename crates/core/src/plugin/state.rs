//! [`PluginState`]: values a plugin keeps under the broker's storage, so they survive a
//! restart with everything else the broker keeps.

use std::cell::Cell;
use std::sync::{Arc, Weak};

use hashbrown::HashMap;
use parking_lot::Mutex;
use roost_storage::{Op, PluginEntry};

use crate::gate::Gate;

/// Where a bound [`PluginState`] sends its writes: the broker's journal.
pub(crate) trait StateSink: Send + Sync + 'static {
    /// Submits `op` to storage, in order with every other write of the broker; returns
    /// what an acknowledgement that depends on it must wait for.
    fn store(&self, op: Op) -> Gate;
}

thread_local! {
    /// The writes plugin states made on this thread inside [`collecting`], if one runs.
    static WRITTEN: Cell<Option<Gate>> = const { Cell::new(None) };
}

/// Runs `f` (hooks, called inline) and returns with its result the storage writes plugin
/// states made meanwhile: what the acknowledgement of the message the hooks looked at
/// must wait for, so that (in acked mode) nothing a plugin's write admitted is
/// acknowledged, or sent on, before that write is durable.
pub(crate) fn collecting<R>(f: impl FnOnce() -> R) -> (R, Gate) {
    let outer = WRITTEN.with(|w| w.replace(Some(Gate::NONE)));
    let r = f();
    let written = WRITTEN.with(|w| w.replace(outer)).unwrap_or(Gate::NONE);
    if let Some(outer) = outer {
        // Nested: the outer collection waits for these writes too.
        WRITTEN.with(|w| w.set(Some(outer.join(written))));
    }
    (r, written)
}

/// Why a [`PluginState`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginStateError {
    /// A plugin's name must not be empty.
    #[error("a plugin state's name must not be empty")]
    EmptyName,
    /// A plugin's name must not contain U+0000 (it separates name and key in storage).
    #[error("a plugin state's name must not contain U+0000")]
    NulInName,
    /// Names starting with `$` are the broker's own.
    #[error("a plugin state's name must not start with '$' (the broker's own names)")]
    ReservedName,
}

/// A plugin's own values (bytes under byte keys) kept in the broker's storage: loaded when
/// the broker starts, written with the broker's other changes.
///
/// Register it with [`BrokerBuilder::plugin_state`](crate::BrokerBuilder::plugin_state)
/// before the broker starts. At start the broker fills it with what its store holds under
/// this name (replacing what it held); from then on every [`put`](Self::put) and
/// [`remove`](Self::remove) is submitted to the store in order with the broker's other
/// writes. That order is the guarantee a plugin builds on: a value put before a message is
/// routed is durable no later than that message, and at the latest with the next flush.
/// A value put by [`Hooks::message_published`](super::Hooks::message_published) is waited
/// for like the message's own writes: in [`Durability::Acked`] mode the publisher's
/// PUBACK/PUBREC, and the copies of a QoS 1/2 message, leave only once it is durable.
///
/// Reads come from memory and never wait. A broker without storage keeps the values in
/// memory only (they last as long as this handle); so does a handle used before its
/// broker starts or after it stopped.
///
/// [`Durability::Acked`]: crate::Durability::Acked
#[derive(Clone)]
pub struct PluginState {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    values: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    sink: Mutex<Option<Weak<dyn StateSink>>>,
}

impl std::fmt::Debug for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginState")
            .field("name", &self.inner.name)
            .field("values", &self.inner.values.lock().len())
            .field("stored", &self.is_stored())
            .finish()
    }
}

impl PluginState {
    /// An empty state named `name`: the namespace of its keys in the store, which must be
    /// unique among the plugins of one broker.
    pub fn new(name: impl Into<String>) -> Result<Self, PluginStateError> {
        let name = name.into();
        if name.is_empty() {
            return Err(PluginStateError::EmptyName);
        }
        if name.contains('\0') {
            return Err(PluginStateError::NulInName);
        }
        if name.starts_with('$') {
            return Err(PluginStateError::ReservedName);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                values: Mutex::default(),
                sink: Mutex::new(None),
            }),
        })
    }

    /// The name (namespace) given at [`new`](Self::new).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.values.lock().get(key).cloned()
    }

    /// Reads the value under `key` without copying it.
    pub fn with<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        f(self.inner.values.lock().get(key).map(Vec::as_slice))
    }

    /// Sets `key` to `value` and submits the change to the store.
    pub fn put(&self, key: &[u8], value: &[u8]) {
        self.inner
            .values
            .lock()
            .insert(key.to_vec(), value.to_vec());
        self.submit(Op::PutPluginState(PluginEntry {
            plugin: self.inner.name.clone(),
            key: key.to_vec(),
            value: value.to_vec(),
        }));
    }

    /// Removes `key` and submits the change to the store.
    pub fn remove(&self, key: &[u8]) {
        self.inner.values.lock().remove(key);
        self.submit(Op::DeletePluginState {
            plugin: self.inner.name.clone(),
            key: key.to_vec(),
        });
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.inner.values.lock().keys().cloned().collect()
    }

    /// True while a running broker with storage keeps this state's writes.
    pub fn is_stored(&self) -> bool {
        self.inner
            .sink
            .lock()
            .as_ref()
            .is_some_and(|s| s.strong_count() > 0)
    }

    fn submit(&self, op: Op) {
        let sink = self.inner.sink.lock().as_ref().and_then(Weak::upgrade);
        if let Some(sink) = sink {
            let gate = sink.store(op);
            WRITTEN.with(|w| {
                if let Some(so_far) = w.get() {
                    w.set(Some(so_far.join(gate)));
                }
            });
        }
    }

    /// Binds the state to a starting broker: its stored values (`entries`, every plugin's)
    /// replace what it held, and its writes go to `sink` (`None`: the broker keeps nothing,
    /// and the values held are kept as they are).
    pub(crate) fn attach(&self, entries: &[PluginEntry], sink: Option<Weak<dyn StateSink>>) {
        if sink.is_some() {
            let mut values = self.inner.values.lock();
            values.clear();
            for e in entries.iter().filter(|e| e.plugin == self.inner.name) {
                values.insert(e.key.clone(), e.value.clone());
            }
        }
        *self.inner.sink.lock() = sink;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(Mutex<Vec<Op>>);

    impl StateSink for Recorder {
        fn store(&self, op: Op) -> Gate {
            let mut ops = self.0.lock();
            ops.push(op);
            Gate::seq(ops.len() as u64)
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            PluginState::new("").expect_err("empty"),
            PluginStateError::EmptyName
        );
        assert_eq!(
            PluginState::new("a\0b").expect_err("nul"),
            PluginStateError::NulInName
        );
        assert_eq!(
            PluginState::new("$roost").expect_err("reserved"),
            PluginStateError::ReservedName
        );
    }

    #[test]
    fn attach_loads_its_own_namespace_and_writes_go_to_the_sink_in_order() {
        let s = PluginState::new("p").expect("name");
        s.put(b"before", b"x");
        assert!(!s.is_stored());
        let entry = |p: &str, k: &[u8]| PluginEntry {
            plugin: p.into(),
            key: k.to_vec(),
            value: b"v".to_vec(),
        };
        let rec: Arc<Recorder> = Arc::new(Recorder(Mutex::default()));
        let sink: Arc<dyn StateSink> = rec.clone();
        s.attach(
            &[entry("p", b"a"), entry("q", b"b")],
            Some(Arc::downgrade(&sink)),
        );
        assert!(s.is_stored());
        assert_eq!(s.get(b"a"), Some(b"v".to_vec()));
        assert_eq!(s.get(b"b"), None, "another plugin's key");
        assert_eq!(s.get(b"before"), None, "the store's values replace");
        let ((), written) = collecting(|| {
            s.put(b"k", b"1");
            s.remove(b"a");
        });
        assert_eq!(
            written,
            Gate::seq(1).join(Gate::seq(2)),
            "both writes collected"
        );
        let ops = rec.0.lock().clone();
        assert_eq!(ops.len(), 2);
        assert!(matches!(&ops[0], Op::PutPluginState(e) if e.key == b"k" && e.plugin == "p"));
        assert!(matches!(&ops[1], Op::DeletePluginState { key, .. } if key == b"a"));
        drop(sink);
        drop(rec);
        assert!(!s.is_stored(), "the broker is gone");
        let ((), written) = collecting(|| s.put(b"k", b"2"));
        assert!(written.is_none(), "nothing stored");
        assert_eq!(s.with(b"k", |v| v.map(<[u8]>::to_vec)), Some(b"2".to_vec()));
    }
}
