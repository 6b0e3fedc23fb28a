//! The tests every file backend passes, run for each.

use std::path::{Path, PathBuf};

use crate::record::{MessageRecord, QueueRecord, QueueStage, SessionRecord, SubscriptionRecord};
use crate::{OnCorrupt, Op, RedbStorage, SledStorage, Storage, StorageError};

/// A backend under test.
struct Backend<S> {
    name: &'static str,
    open: fn(&Path, OnCorrupt) -> Result<S, StorageError>,
    /// The files of its data directory (overwritten with garbage to corrupt it).
    files: &'static [&'static str],
}

fn sled() -> Backend<SledStorage> {
    Backend {
        name: "sled",
        open: |p, c| SledStorage::open(p, c),
        files: &["conf", "db"],
    }
}

fn redb() -> Backend<RedbStorage> {
    Backend {
        name: "redb",
        open: |p, c| RedbStorage::open(p, c),
        files: &["roost.redb"],
    }
}

fn temp_dir(kind: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roost-{kind}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Opens `dir` again after the previous handle was dropped. sled can hold its file lock a
/// moment longer (a background thread still has the database), which it reports as
/// `InUse`: waited out here, for at most 5 s, rather than failing the test on a race the
/// backend itself documents.
fn reopen<S>(b: &Backend<S>, dir: &std::path::Path) -> S {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match (b.open)(dir, OnCorrupt::Fail) {
            Err(StorageError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other.expect("reopens"),
        }
    }
}

fn msg(topic: &str) -> MessageRecord {
    MessageRecord {
        topic: topic.into(),
        payload: b"p".to_vec(),
        qos: 1,
        ..MessageRecord::default()
    }
}

async fn survives_reopen_and_deletes_session_state<S: Storage + std::fmt::Debug>(b: Backend<S>) {
    let dir = temp_dir(b.name, "reopen");
    {
        let s = (b.open)(&dir, OnCorrupt::Fail).expect("opens");
        s.write(vec![
            Op::PutRetained("r".into(), msg("r")),
            Op::PutSession(
                "a".into(),
                SessionRecord {
                    expiry_interval: 60,
                    subscriptions: vec![SubscriptionRecord {
                        filter: "x/#".into(),
                        qos: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ),
            Op::PutQueued {
                client: "a".into(),
                seq: 2,
                record: QueueRecord {
                    message: msg("x/1"),
                    qos: 1,
                    retain: false,
                    subscription_ids: vec![],
                    stage: QueueStage::Published(9),
                    packet_id: None,
                },
            },
            Op::PutQueued {
                client: "a".into(),
                seq: 1,
                record: QueueRecord {
                    message: msg("x/0"),
                    qos: 1,
                    retain: false,
                    subscription_ids: vec![],
                    stage: QueueStage::Queued,
                    packet_id: None,
                },
            },
            Op::PutInbound {
                client: "a".into(),
                packet_id: 4,
            },
            Op::PutSession("ab".into(), SessionRecord::default()),
            Op::PutQueued {
                client: "ab".into(),
                seq: 1,
                record: QueueRecord {
                    message: msg("y"),
                    qos: 2,
                    retain: false,
                    subscription_ids: vec![],
                    stage: QueueStage::Queued,
                    packet_id: None,
                },
            },
        ])
        .await
        .expect("writes");
        s.flush().await.expect("flushes");
    }
    let s = reopen(&b, &dir);
    let snap = s.load().await.expect("loads");
    assert_eq!(snap.retained.len(), 1);
    let a = snap
        .sessions
        .iter()
        .find(|x| x.client_id == "a")
        .expect("session a");
    assert_eq!(
        a.queue.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![1, 2],
        "in order"
    );
    assert_eq!(a.inbound, vec![4]);
    let ab = snap
        .sessions
        .iter()
        .find(|x| x.client_id == "ab")
        .expect("session ab");
    assert_eq!(ab.queue.len(), 1, "prefix scans do not mix 'a' and 'ab'");
    s.write(vec![Op::DeleteSession("a".into())])
        .await
        .expect("writes");
    let snap = s.load().await.expect("loads");
    assert_eq!(snap.sessions.len(), 1);
    assert_eq!(snap.sessions[0].queue.len(), 1);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn corrupt_directory_fails_or_is_quarantined<S: Storage + std::fmt::Debug>(b: Backend<S>) {
    let dir = temp_dir(b.name, "corrupt");
    std::fs::create_dir_all(&dir).expect("dir");
    // Not a database of this backend.
    for f in b.files {
        std::fs::write(dir.join(f), vec![0xAB; 4096]).expect("write");
    }
    let err = (b.open)(&dir, OnCorrupt::Fail).expect_err("refuses");
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err:?}");
    let s = (b.open)(&dir, OnCorrupt::Quarantine).expect("starts empty");
    assert!(s.load().await.expect("loads").sessions.is_empty());
    drop(s);
    let parent = dir.parent().expect("parent");
    let name = dir.file_name().expect("name").to_string_lossy().to_string();
    let moved: Vec<_> = std::fs::read_dir(parent)
        .expect("lists")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.corrupt-"))
        })
        .collect();
    assert_eq!(moved.len(), 1, "the damaged directory was kept aside");
    for m in moved {
        let _ = std::fs::remove_dir_all(m.path());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 12 §1.7: a store that a running broker holds is "in use", never "corrupt", and
/// Quarantine leaves it where it is with its data.
async fn a_store_in_use_is_never_quarantined<S: Storage + std::fmt::Debug>(b: Backend<S>) {
    let dir = temp_dir(b.name, "in-use");
    let live = (b.open)(&dir, OnCorrupt::Fail).expect("opens");
    live.write(vec![Op::DeleteRetained("x".into())])
        .await
        .expect("writes");
    for policy in [OnCorrupt::Fail, OnCorrupt::Quarantine] {
        let err = (b.open)(&dir, policy).expect_err("held by the live store");
        assert!(
            matches!(err, StorageError::InUse { .. }),
            "{policy:?}: {err:?}"
        );
        assert!(err.to_string().contains("in use by another process"));
    }
    assert!(dir.exists(), "not moved aside");
    let parent = dir.parent().expect("parent");
    let name = dir.file_name().expect("name").to_string_lossy().to_string();
    let moved = std::fs::read_dir(parent)
        .expect("lists")
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.corrupt-"))
        });
    assert!(!moved, "nothing quarantined");
    live.load().await.expect("the live store still reads");
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Plugin values survive a reopen, in their own namespaces, and go when deleted.
async fn plugin_state_survives_reopen<S: Storage + std::fmt::Debug>(b: Backend<S>) {
    let dir = temp_dir(b.name, "plugin");
    let entry = |p: &str, k: &[u8], v: &[u8]| crate::PluginEntry {
        plugin: p.into(),
        key: k.to_vec(),
        value: v.to_vec(),
    };
    {
        let s = (b.open)(&dir, OnCorrupt::Fail).expect("opens");
        s.write(vec![
            Op::PutPluginState(entry("protect", b"dev-1", &7u64.to_be_bytes())),
            Op::PutPluginState(entry("protect", b"dev-2", b"")),
            Op::PutPluginState(entry("protect2", b"dev-1", b"other")),
            Op::PutPluginState(entry("protect", b"dev-1", &9u64.to_be_bytes())),
            Op::PutPluginState(entry("gone", b"k", b"v")),
            Op::DeletePluginState {
                plugin: "gone".into(),
                key: b"k".to_vec(),
            },
        ])
        .await
        .expect("writes");
        s.flush().await.expect("flushes");
    }
    let s = reopen(&b, &dir);
    let snap = s.load().await.expect("loads");
    assert_eq!(
        snap.plugin_state,
        vec![
            entry("protect", b"dev-1", &9u64.to_be_bytes()),
            entry("protect", b"dev-2", b""),
            entry("protect2", b"dev-1", b"other"),
        ]
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sled_plugin_state_survives_reopen() {
    plugin_state_survives_reopen(sled()).await;
}

#[tokio::test]
async fn redb_plugin_state_survives_reopen() {
    plugin_state_survives_reopen(redb()).await;
}

#[tokio::test]
async fn memory_plugin_state_is_kept_in_the_same_form() {
    let s = crate::MemoryStorage::new();
    let put = |k: &[u8], v: &[u8]| {
        Op::PutPluginState(crate::PluginEntry {
            plugin: "p".into(),
            key: k.to_vec(),
            value: v.to_vec(),
        })
    };
    s.write(vec![put(b"b", b"2"), put(b"a", b"1")])
        .await
        .expect("writes");
    let snap = s.load().await.expect("loads");
    let keys: Vec<_> = snap.plugin_state.iter().map(|e| e.key.clone()).collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(snap.plugin_state[1].value, b"2");
}

#[tokio::test]
async fn sled_survives_reopen_and_deletes_session_state() {
    survives_reopen_and_deletes_session_state(sled()).await;
}

#[tokio::test]
async fn redb_survives_reopen_and_deletes_session_state() {
    survives_reopen_and_deletes_session_state(redb()).await;
}

#[tokio::test]
async fn sled_corrupt_directory_fails_or_is_quarantined() {
    corrupt_directory_fails_or_is_quarantined(sled()).await;
}

#[tokio::test]
async fn redb_corrupt_directory_fails_or_is_quarantined() {
    corrupt_directory_fails_or_is_quarantined(redb()).await;
}

#[tokio::test]
async fn sled_store_in_use_is_never_quarantined() {
    a_store_in_use_is_never_quarantined(sled()).await;
}

#[tokio::test]
async fn redb_store_in_use_is_never_quarantined() {
    a_store_in_use_is_never_quarantined(redb()).await;
}

/// `Limits::max_storage_bytes` compares `size_on_disk` with the budget: what the store
/// holds must go down again when what it held is deleted, or a store that was once over
/// its budget would stay over it for good.
async fn size_goes_down_after_deletes<S: Storage + std::fmt::Debug>(b: Backend<S>) -> (u64, u64) {
    let dir = temp_dir(b.name, "size");
    let s = (b.open)(&dir, OnCorrupt::Fail).expect("opens");
    let record = |i: u64| QueueRecord {
        message: MessageRecord {
            topic: format!("t/{i}"),
            payload: vec![0x5A; 1024],
            qos: 1,
            ..MessageRecord::default()
        },
        qos: 1,
        retain: false,
        subscription_ids: vec![],
        stage: QueueStage::Queued,
        packet_id: None,
    };
    s.write_durable(vec![Op::PutSession("c".into(), SessionRecord::default())])
        .await
        .expect("writes");
    for chunk in 0..20u64 {
        let ops = (0..200)
            .map(|i| Op::PutQueued {
                client: "c".into(),
                seq: chunk * 200 + i,
                record: record(i),
            })
            .collect();
        s.write_durable(ops).await.expect("writes");
    }
    let full = s.size_on_disk().expect("size");
    for chunk in 0..20u64 {
        let ops = (0..200)
            .map(|i| Op::DeleteQueued {
                client: "c".into(),
                seq: chunk * 200 + i,
            })
            .collect();
        s.write_durable(ops).await.expect("writes");
    }
    let emptied = s.size_on_disk().expect("size");
    s.write_durable(vec![Op::PutRetained("r".into(), record(1).message)])
        .await
        .expect("writes");
    let before = s.size_on_disk().expect("size");
    drop(s);
    let s = reopen(&b, &dir);
    assert_eq!(
        s.size_on_disk().expect("size"),
        before,
        "counted again at open"
    );
    s.write_durable(vec![
        Op::DeleteSession("c".into()),
        Op::DeleteRetained("r".into()),
    ])
    .await
    .expect("writes");
    assert_eq!(s.size_on_disk().expect("size"), 0, "nothing held");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
    (full, emptied)
}

#[tokio::test]
async fn redb_size_goes_down_after_deletes() {
    let (full, emptied) = size_goes_down_after_deletes(redb()).await;
    assert!(full > 4_000_000, "4,000 KiB stored: {full}");
    assert!(
        emptied < full / 4,
        "{full} bytes, then {emptied} after deleting it all"
    );
}

#[tokio::test]
async fn sled_size_goes_down_after_deletes() {
    let (full, emptied) = size_goes_down_after_deletes(sled()).await;
    assert!(full > 4_000_000, "4,000 KiB stored: {full}");
    assert!(
        emptied < full / 4,
        "{full} bytes, then {emptied} after deleting it all"
    );
}

/// sled 0.34 assumes its unsynced log writes reach the disk in order. A power cut on a
/// drive that kept some later pages and lost others leaves a log whose recovery can panic
/// inside sled (seen in `tests/crash.rs` with `Durability::Periodic`). Opening such a store
/// reports [`StorageError::Corrupt`] (so `OnCorrupt::Quarantine` can start empty), never a
/// panic. The stores here are made by writing a log in phases and laying a random half of
/// the last phase's pages over an earlier, complete state of the file.
#[test]
fn sled_log_persisted_out_of_order_is_corrupt_not_a_panic() {
    let base = temp_dir("sled", "out-of-order");
    let src = base.join("src");
    let mut states = Vec::new();
    {
        let db = sled::Config::new()
            .path(&src)
            .flush_every_ms(None)
            .open()
            .expect("opens");
        let tree = db.open_tree("queue").expect("tree");
        for phase in 0..5u32 {
            for i in 0..3000u32 {
                let k = (phase * 1000 + i) % 5000;
                tree.insert(k.to_be_bytes(), vec![phase as u8; 100])
                    .expect("insert");
                if i % 3 == 0 {
                    tree.remove(((k + 2500) % 5000).to_be_bytes())
                        .expect("remove");
                }
            }
            db.flush().expect("flush");
            states.push(std::fs::read(src.join("db")).expect("reads"));
        }
    }
    let last = states.pop().expect("states");
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let (mut opened, mut corrupt) = (0, 0);
    for trial in 0..40 {
        let dir = base.join(format!("cut{trial}"));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::copy(src.join("conf"), dir.join("conf")).expect("conf");
        let mut bytes = states[trial % states.len()].clone();
        for (page, new) in last.chunks(4096).enumerate() {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            if rng.wrapping_mul(0x2545_F491_4F6C_DD1D).is_multiple_of(2) {
                continue;
            }
            let from = page * 4096;
            if bytes.len() < from + new.len() {
                bytes.resize(from + new.len(), 0);
            }
            bytes[from..from + new.len()].copy_from_slice(new);
        }
        std::fs::write(dir.join("db"), &bytes).expect("writes");
        let result = std::panic::catch_unwind(|| SledStorage::open(&dir, OnCorrupt::Fail));
        match result.expect("open never panics") {
            Ok(_) => opened += 1,
            Err(StorageError::Corrupt { .. }) => {
                corrupt += 1;
                if corrupt == 1 {
                    let s = SledStorage::open(&dir, OnCorrupt::Quarantine).expect("starts empty");
                    assert_eq!(s.read_all().expect("reads").sessions.len(), 0);
                }
            }
            Err(e) => panic!("trial {trial}: {e:?}"),
        }
    }
    // Without the guard about a third of these panicked.
    assert!(
        corrupt > 0,
        "the out-of-order logs include unrecoverable ones"
    );
    // And the others open: the stores are real sled logs (24 of 40 open when written).
    assert!(
        opened > 0,
        "no out-of-order log opened: the test's stores are broken"
    );
    assert_eq!(opened + corrupt, 40);
    // Quarantined directories are moved aside within `base`.
    let _ = std::fs::remove_dir_all(&base);
}
