//! Persistence across broker restarts, over both storage backends, in both durability
//! modes; storage failures become refusals, never silent acknowledgements.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use roost::codec::{
    Connect, Packet, ProtocolVersion, PubResponse, Publish, PublishQoS, ReasonCode,
};
use roost::storage::{
    MemoryStorage, OnCorrupt, Op, RedbStorage, SledStorage, Snapshot, Storage, StorageError,
};
use roost::{Broker, BrokerHandle, Durability, QoS};
use support::*;
use tokio::sync::Semaphore;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

async fn broker_on(storage: Arc<dyn Storage>, durability: Durability) -> BrokerHandle {
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .storage(storage, durability)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts")
}

fn persistent(v: ProtocolVersion, id: &str) -> Connect {
    let mut c = Connect::new(v, id);
    c.clean_start = false;
    if v.is_v5() {
        c.properties.session_expiry_interval = Some(3600);
    }
    c
}

/// The restart scenario, over whatever storage `open` gives (called once per broker life).
async fn survives_restart(open: impl Fn() -> Arc<dyn Storage>, durability: Durability) {
    // Life 1: a persistent subscriber, a retained message, queued and in-flight messages.
    let broker = broker_on(open(), durability).await;
    let (mut sub, _) = Raw::connect_with(&broker, persistent(V4, "keeper")).await;
    sub.subscribe(1, "data/#", QoS::ExactlyOnce).await;
    let mut p = Raw::connect(&broker, V5, "pub").await;
    p.publish(
        "data/retained",
        b"kept",
        PublishQoS::AtLeastOnce(pid(1)),
        true,
    )
    .await;
    p.publish("data/a", b"one", PublishQoS::AtLeastOnce(pid(2)), false)
        .await;
    p.ping().await;
    // The subscriber receives two (retained-flag-cleared live copies) and acknowledges
    // neither: they are in flight.
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert_eq!(&first.payload[..], b"kept");
    assert_eq!(&second.payload[..], b"one");
    drop(sub);
    // While it is away: one more, queued.
    p.publish("data/b", b"two", PublishQoS::ExactlyOnce(pid(3)), false)
        .await;
    p.ping().await;
    broker.shutdown().await;

    // Life 2: everything is back.
    let broker = broker_on(open(), durability).await;
    assert_eq!(broker.metrics().sessions, 1);
    let (mut sub, ack) = Raw::connect_with(&broker, persistent(V4, "keeper")).await;
    assert!(
        matches!(ack, Packet::ConnAck(a) if a.session_present),
        "session restored"
    );
    let again1 = sub.recv_publish().await;
    let again2 = sub.recv_publish().await;
    assert!(
        again1.dup && again2.dup,
        "in-flight messages re-sent with DUP"
    );
    assert_eq!(again1.qos, first.qos, "with their packet ids");
    assert_eq!(&again2.payload[..], b"one");
    sub.ack(&again1).await;
    sub.ack(&again2).await;
    let queued = sub.recv_publish().await;
    assert_eq!(&queued.payload[..], b"two");
    // DUP may be set: after a restart the broker cannot know it was never sent.
    sub.ack(&queued).await;
    assert!(sub.ping().await.is_empty());
    // The subscription is there too.
    let mut p = Raw::connect(&broker, V5, "pub").await;
    p.publish("data/c", b"three", PublishQoS::AtLeastOnce(pid(4)), false)
        .await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"three");
    // And the retained message.
    let mut late = Raw::connect(&broker, V4, "late").await;
    late.subscribe(1, "data/retained", QoS::AtMostOnce).await;
    assert_eq!(&late.recv_publish().await.payload[..], b"kept");
    broker.shutdown().await;

    // Life 3: acknowledged messages are gone for good.
    let broker = broker_on(open(), durability).await;
    let (mut sub, _) = Raw::connect_with(&broker, persistent(V4, "keeper")).await;
    let left = sub.ping().await;
    assert!(
        left.iter()
            .all(|p| !matches!(p, Packet::Publish(m) if &m.payload[..] != b"three")),
        "{left:?}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn memory_storage_survives_restart_acked() {
    let store = Arc::new(MemoryStorage::new());
    survives_restart(|| store.clone(), Durability::Acked).await;
}

#[tokio::test]
async fn sled_storage_survives_restart_acked() {
    let dir = TempDir::new("acked");
    survives_restart(
        || Arc::new(SledStorage::open(&dir.0, OnCorrupt::Fail).expect("opens")),
        Durability::Acked,
    )
    .await;
}

#[tokio::test]
async fn redb_storage_survives_restart_acked() {
    let dir = TempDir::new("redb-acked");
    survives_restart(
        || Arc::new(RedbStorage::open(&dir.0, OnCorrupt::Fail).expect("opens")),
        Durability::Acked,
    )
    .await;
}

#[tokio::test]
async fn redb_storage_survives_restart_periodic() {
    let dir = TempDir::new("redb-periodic");
    survives_restart(
        || Arc::new(RedbStorage::open(&dir.0, OnCorrupt::Fail).expect("opens")),
        Durability::Periodic(Duration::from_millis(20)),
    )
    .await;
}

#[tokio::test]
async fn sled_storage_survives_restart_periodic() {
    let dir = TempDir::new("periodic");
    survives_restart(
        || Arc::new(SledStorage::open(&dir.0, OnCorrupt::Fail).expect("opens")),
        Durability::Periodic(Duration::from_millis(20)),
    )
    .await;
}

#[tokio::test]
async fn qos2_stays_exactly_once_across_a_restart() {
    // The inbound packet id awaiting PUBREL is stored: a re-sent PUBLISH after the restart
    // is acknowledged, not routed again.
    let store = Arc::new(MemoryStorage::new());
    let broker = broker_on(store.clone(), Durability::Acked).await;
    let (mut sub, _) = Raw::connect_with(&broker, persistent(V5, "sub")).await;
    sub.subscribe(1, "x", QoS::ExactlyOnce).await;
    let (mut p, _) = Raw::connect_with(&broker, persistent(V5, "pub")).await;
    p.publish("x", b"once", PublishQoS::ExactlyOnce(pid(9)), false)
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
    let got = sub.recv_publish().await;
    sub.ack(&got).await;
    sub.ping().await; // the PUBCOMP has been processed
    broker.shutdown().await;
    let broker = broker_on(store, Durability::Acked).await;
    let (mut sub, _) = Raw::connect_with(&broker, persistent(V5, "sub")).await;
    let (mut p, _) = Raw::connect_with(&broker, persistent(V5, "pub")).await;
    let mut again = Publish::new(topic("x"), PublishQoS::ExactlyOnce(pid(9)), &b"once"[..]);
    again.dup = true;
    p.send(Packet::Publish(again)).await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(r)) if r.packet_id == pid(9)));
    p.send(Packet::PubRel(PubResponse::new(pid(9)))).await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(_))));
    assert!(sub.ping().await.is_empty(), "not delivered twice");
    broker.shutdown().await;
}

#[tokio::test]
async fn sessions_that_expired_while_down_are_dropped() {
    let store = Arc::new(MemoryStorage::new());
    let broker = broker_on(store.clone(), Durability::Acked).await;
    let mut c = Connect::new(V5, "brief");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(1);
    let (mut s, _) = Raw::connect_with(&broker, c.clone()).await;
    s.subscribe(1, "t", QoS::AtLeastOnce).await;
    s.send(Packet::Disconnect(Default::default())).await;
    s.closed_promptly().await;
    broker.shutdown().await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // the broker is down meanwhile
    let broker = broker_on(store, Durability::Acked).await;
    assert_eq!(broker.metrics().sessions, 0);
    let (_s, ack) = Raw::connect_with(&broker, c).await;
    assert!(matches!(ack, Packet::ConnAck(a) if !a.session_present));
    broker.shutdown().await;
}

/// A store that can hold flushes back, fail them, or claim a size on disk.
#[derive(Default)]
struct Controlled {
    inner: MemoryStorage,
    fail: AtomicBool,
    gate: Option<Arc<Semaphore>>,
    size: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl Storage for Controlled {
    async fn load(&self) -> Result<Snapshot, StorageError> {
        self.inner.load().await
    }
    async fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.inner.write(ops).await
    }
    async fn flush(&self) -> Result<(), StorageError> {
        if let Some(gate) = &self.gate {
            let _ = gate.acquire().await.map(|p| p.forget());
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StorageError::Backend("injected failure"));
        }
        self.inner.flush().await
    }
    fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.size.load(Ordering::SeqCst))
    }
}

#[tokio::test]
async fn over_the_size_budget_new_copies_for_persistent_sessions_are_dropped() {
    let store = Arc::new(Controlled::default());
    store.size.store(10_000_000, Ordering::SeqCst);
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .limits(roost::Limits::default().with_max_storage_bytes(Some(1_000_000)))
        .storage(store.clone(), Durability::Acked)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    // The session write makes the store measure itself: over budget.
    let (mut sub, _) = Raw::connect_with(&broker, persistent(V4, "full")).await;
    sub.subscribe(1, "t", QoS::AtLeastOnce).await;
    let mut p = Raw::connect(&broker, V4, "p").await;
    p.publish("t", b"x", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    assert!(
        matches!(p.recv().await, Some(Packet::PubAck(_))),
        "the publisher is still served"
    );
    assert!(sub.ping().await.is_empty(), "the copy was dropped");
    assert_eq!(broker.metrics().messages_dropped_storage_full, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn acked_mode_sends_puback_only_after_the_flush() {
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(Controlled {
        gate: Some(gate.clone()),
        ..Controlled::default()
    });
    let broker = broker_on(store, Durability::Acked).await;
    // Flushes are held: a retained QoS 1 publish is not acknowledged yet.
    let mut p = Raw::connect(&broker, V4, "p").await;
    p.publish("r", b"v", PublishQoS::AtLeastOnce(pid(1)), true)
        .await;
    p.send(Packet::PingReq).await;
    // The PINGRESP waits behind the PUBACK (order is kept), so nothing arrives.
    let early = tokio::time::timeout(Duration::from_millis(200), p.recv()).await;
    assert!(early.is_err(), "acknowledged before durable: {early:?}");
    gate.add_permits(1000);
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    assert!(matches!(p.recv().await, Some(Packet::PingResp)));
    // A QoS 1 message nobody persists (no retain, no persistent subscriber) is not held.
    p.publish("plain", b"v", PublishQoS::AtLeastOnce(pid(2)), false)
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    broker.shutdown().await;
}

#[tokio::test]
async fn failed_writes_refuse_instead_of_acknowledging() {
    // MQTT-4.8.0-2 (3.1.1): a transient error (the store) while processing a PUBLISH closes a
    // 3.1.1 connection, which has no code to refuse it with.
    let store = Arc::new(Controlled::default());
    store.fail.store(true, Ordering::SeqCst);
    let broker = broker_on(store.clone(), Durability::Acked).await;
    // v5: PUBACK 0x80.
    let mut p5 = Raw::connect(&broker, V5, "p5").await;
    p5.publish("r", b"v", PublishQoS::AtLeastOnce(pid(1)), true)
        .await;
    match p5.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::UnspecifiedError),
        other => panic!("expected PUBACK 0x80, got {other:?}"),
    }
    // 3.1.1: no refusal code for PUBACK, so the connection closes.
    let mut p4 = Raw::connect(&broker, V4, "p4").await;
    p4.publish("r", b"v", PublishQoS::AtLeastOnce(pid(1)), true)
        .await;
    assert!(p4.closed_promptly().await.is_empty());
    assert!(broker.metrics().storage_failures >= 2);
    // Storage recovers: acknowledgements resume.
    store.fail.store(false, Ordering::SeqCst);
    p5.publish("r", b"w", PublishQoS::AtLeastOnce(pid(2)), true)
        .await;
    assert!(matches!(p5.recv().await, Some(Packet::PubAck(a)) if a.reason_code.is_success()));
    broker.shutdown().await;
}

#[tokio::test]
async fn corrupted_data_dir_is_a_clear_error_or_quarantined() {
    let dir = TempDir::new("corrupt");
    std::fs::create_dir_all(&dir.0).expect("dir");
    std::fs::write(dir.0.join("conf"), b"\xff\xfe not sled").expect("write");
    std::fs::write(dir.0.join("db"), vec![0x5A; 8192]).expect("write");
    let err = SledStorage::open(&dir.0, OnCorrupt::Fail).expect_err("refuses");
    assert!(err.to_string().contains("corrupted or unreadable"), "{err}");
    let store = SledStorage::open(&dir.0, OnCorrupt::Quarantine).expect("starts empty");
    let broker = broker_on(Arc::new(store), Durability::Acked).await;
    Raw::connect(&broker, V4, "ok").await;
    broker.shutdown().await;
    for entry in std::fs::read_dir(std::env::temp_dir())
        .expect("lists")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(&format!(
            "roost-test-{}-corrupt.corrupt-",
            std::process::id()
        )) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Publishes and returns the PUBACK's or PUBREC's reason code.
async fn publish_code(p: &mut Raw, topic: &str, qos: PublishQoS) -> ReasonCode {
    let publish = Publish::new(support::topic(topic), qos, &b"m"[..]);
    p.send(Packet::Publish(publish)).await;
    match p.recv().await {
        Some(Packet::PubAck(a)) | Some(Packet::PubRec(a)) => a.reason_code,
        other => panic!("expected PUBACK/PUBREC, got {other:?}"),
    }
}

/// Issue 12 §4: a message whose acknowledgement refuses it (storage failed: v5 PUBACK /
/// PUBREC 0x80) reaches no subscriber — neither an offline persistent one when it comes
/// back, nor one connected at the time — at QoS 1 and 2. What was acknowledged arrives.
#[tokio::test]
async fn a_refused_publish_reaches_no_subscriber() {
    let store = Arc::new(Controlled::default());
    let broker = broker_on(store.clone(), Durability::Acked).await;
    let (mut away, _) = Raw::connect_with(&broker, persistent(V5, "away")).await;
    away.subscribe(1, "full/#", QoS::ExactlyOnce).await;
    drop(away);
    let mut online = Raw::connect(&broker, V5, "online").await;
    online.subscribe(1, "full/#", QoS::ExactlyOnce).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    assert_eq!(
        publish_code(&mut p, "full/1", PublishQoS::AtLeastOnce(pid(1))).await,
        ReasonCode::Success
    );
    store.fail.store(true, Ordering::SeqCst);
    assert_eq!(
        publish_code(&mut p, "full/2", PublishQoS::AtLeastOnce(pid(2))).await,
        ReasonCode::UnspecifiedError
    );
    assert_eq!(
        publish_code(&mut p, "full/3", PublishQoS::ExactlyOnce(pid(3))).await,
        ReasonCode::UnspecifiedError
    );
    store.fail.store(false, Ordering::SeqCst);
    // The refused QoS 2 exchange is over: its packet id carries a new message.
    assert_eq!(
        publish_code(&mut p, "full/4", PublishQoS::ExactlyOnce(pid(3))).await,
        ReasonCode::Success
    );
    p.send(Packet::PubRel(PubResponse::new(pid(3)))).await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(_))));
    assert_eq!(online.drain_topics().await, vec!["full/1", "full/4"]);
    let (mut away, ack) = Raw::connect_with(&broker, persistent(V5, "away")).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.session_present));
    assert_eq!(away.drain_topics().await, vec!["full/1", "full/4"]);
    assert!(broker.metrics().messages_withdrawn_storage >= 4);
    broker.shutdown().await;
}

/// Issue 12 §4: a subscriber whose queue is full exists; the publisher is told 0x97 Quota
/// exceeded (QoS 1 and 2), never 0x10 No matching subscribers.
#[tokio::test]
async fn a_full_queue_is_quota_exceeded_not_no_subscribers() {
    let broker = start_broker_with(roost::Limits::default().with_max_queued_messages(2)).await;
    let (mut away, _) = Raw::connect_with(&broker, persistent(V5, "away")).await;
    away.subscribe(1, "q/#", QoS::AtLeastOnce).await;
    drop(away);
    let mut p = Raw::connect(&broker, V5, "p").await;
    let mut codes = Vec::new();
    for qos in [
        PublishQoS::AtLeastOnce(pid(1)),
        PublishQoS::AtLeastOnce(pid(2)),
        PublishQoS::AtLeastOnce(pid(3)),
        PublishQoS::ExactlyOnce(pid(4)),
    ] {
        codes.push(publish_code(&mut p, "q/x", qos).await);
    }
    assert_eq!(
        codes,
        vec![
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded,
            ReasonCode::QuotaExceeded
        ]
    );
    // Nobody subscribed: that is what 0x10 means.
    assert_eq!(
        publish_code(&mut p, "elsewhere", PublishQoS::AtLeastOnce(pid(5))).await,
        ReasonCode::NoMatchingSubscribers
    );
    assert_eq!(broker.metrics().messages_dropped, 2);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_will_waiting_out_its_delay_survives_a_restart() {
    // README, persistence: wills waiting out their delay are stored and restored. The
    // broker stops 0.3 s into a 2 s Will Delay Interval; after the restart the will is
    // published once (MQTT-3.1.3-9 (v5): not before the delay), to the persistent watcher.
    let dir = TempDir::new("will-restart");
    let open = || -> Arc<dyn Storage> {
        Arc::new(RedbStorage::open(&dir.0, OnCorrupt::Fail).expect("opens"))
    };
    let broker = broker_on(open(), Durability::Acked).await;
    let (mut watcher, _) = Raw::connect_with(&broker, persistent(V5, "watcher")).await;
    watcher.subscribe(1, "wills/#", QoS::AtLeastOnce).await;
    watcher.send(Packet::Disconnect(Default::default())).await;
    watcher.closed_promptly().await;
    let mut dev = persistent(V5, "dev");
    dev.will = Some(roost::codec::LastWill {
        topic: topic("wills/dev"),
        payload: bytes::Bytes::from_static(b"dev lost"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: roost::codec::WillProperties {
            will_delay_interval: Some(2),
            ..Default::default()
        },
    });
    let (d, _) = Raw::connect_with(&broker, dev).await;
    let lost = std::time::Instant::now();
    drop(d);
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.shutdown().await;

    let broker = broker_on(open(), Durability::Acked).await;
    let (mut watcher, ack) = Raw::connect_with(&broker, persistent(V5, "watcher")).await;
    assert!(support::connack(ack).session_present);
    let will = watcher.next_message().await;
    assert_eq!(will.topic, topic("wills/dev"));
    assert_eq!(&will.payload[..], b"dev lost");
    assert!(
        lost.elapsed() >= Duration::from_millis(1900),
        "published {:?} after the connection was lost",
        lost.elapsed()
    );
    assert!(watcher.ping().await.is_empty(), "published once");
    broker.shutdown().await;
}

/// A store that loses, at a cut, every write since its last flush: what a crash does to
/// the writes a store was given but had not flushed (only flushed writes are durable).
#[derive(Default)]
struct Cut {
    inner: MemoryStorage,
    unflushed: parking_lot::Mutex<Vec<Op>>,
    /// Cut: writes and flushes of the broker that "crashed" go nowhere.
    dead: AtomicBool,
}

impl Cut {
    /// Flushes what was written so far, once the session `client_id` is in it with a
    /// subscription (its SUBACK does not wait for the store under periodic durability).
    async fn flush_with_subscription_of(&self, client_id: &str) {
        within(async {
            loop {
                self.flush().await.expect("flushes");
                let snapshot = self.inner.load().await.expect("loads");
                let subscribed = snapshot
                    .sessions
                    .iter()
                    .any(|s| s.client_id == client_id && !s.session.subscriptions.is_empty());
                if subscribed {
                    return;
                }
                // Polling the broker's storage task, which has no event to wait on.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// The crash: what was not flushed is gone, and the dead broker writes nothing more.
    fn cut(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.unflushed.lock().clear();
    }
}

#[async_trait]
impl Storage for Cut {
    async fn load(&self) -> Result<Snapshot, StorageError> {
        // The next broker's start: it finds what was flushed, and its writes count again.
        self.dead.store(false, Ordering::SeqCst);
        self.inner.load().await
    }
    async fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        if !self.dead.load(Ordering::SeqCst) {
            self.unflushed.lock().extend(ops);
        }
        Ok(())
    }
    async fn flush(&self) -> Result<(), StorageError> {
        if self.dead.load(Ordering::SeqCst) {
            return Ok(());
        }
        let ops = std::mem::take(&mut *self.unflushed.lock());
        self.inner.write(ops).await?;
        self.inner.flush().await
    }
    fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.inner.size_on_disk()
    }
}

/// MQTT-4.3.3-2 (3.1.1), MQTT-4.3.3-10 (v5): until a QoS 2 receiver gets the PUBREL for a
/// packet id, a PUBLISH with that id is a duplicate it must not deliver. Under periodic
/// durability a crash can lose a QoS 2 delivery (and its id) that already reached the
/// subscriber; the restarted broker must not make the subscriber drop a later message that
/// it gives the same id. It releases the ids first (MQTT-4.3.3-11, -12: the receiver answers
/// any PUBREL with PUBCOMP, and a PUBLISH after it is new), even after a clean run the
/// subscriber did not come back in.
#[tokio::test]
async fn an_id_a_crash_lost_does_not_swallow_a_later_qos2_message() {
    let store = Arc::new(Cut::default());
    // Nothing is flushed but what the test flushes (the first tick aside).
    let periodic = Durability::Periodic(Duration::from_secs(3600));
    let broker = broker_on(store.clone(), periodic).await;
    let (mut sub, _) = Raw::connect_with(&broker, persistent(V4, "holder")).await;
    sub.subscribe(1, "t", QoS::ExactlyOnce).await;
    store.flush_with_subscription_of("holder").await;
    // Acknowledged to its publisher, reaches the subscriber, and is lost in the crash.
    let mut p = Raw::connect(&broker, V4, "pub").await;
    p.publish("t", b"lost", PublishQoS::ExactlyOnce(pid(1)), false)
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
    let first = sub.recv_publish().await;
    let PublishQoS::ExactlyOnce(held) = first.qos else {
        panic!("QoS 2 expected: {first:?}");
    };
    // The subscriber takes the id and answers PUBREC; the crash comes before it reads a
    // PUBREL.
    sub.send(Packet::PubRec(PubResponse::new(held))).await;
    let mut awaiting_rel = std::collections::HashSet::from([held.get()]);
    store.cut();
    drop(sub);
    broker.shutdown().await;
    // A run the subscriber does not come back in, ended cleanly: the release is still owed.
    let broker = broker_on(store.clone(), periodic).await;
    broker.shutdown().await;

    let broker = broker_on(store.clone(), periodic).await;
    let (mut sub, ack) = Raw::connect_with(&broker, persistent(V4, "holder")).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.session_present));
    let mut p = Raw::connect(&broker, V4, "pub").await;
    p.publish("t", b"later", PublishQoS::ExactlyOnce(pid(1)), false)
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
    // The subscriber behaves as a receiver must.
    let mut released = 0u32;
    let later = loop {
        match sub.recv().await.expect("the connection stays up") {
            Packet::PubRel(r) => {
                awaiting_rel.remove(&r.packet_id.get());
                released += 1;
                sub.send(Packet::PubComp(PubResponse::new(r.packet_id)))
                    .await;
            }
            Packet::Publish(m) => {
                let PublishQoS::ExactlyOnce(id) = m.qos else {
                    panic!("QoS 2 expected: {m:?}");
                };
                assert!(
                    !awaiting_rel.contains(&id.get()),
                    "{:?} came under id {id:?}, which the subscriber still holds for the lost \
                     message: it must drop it as a duplicate (MQTT-4.3.3-2)",
                    m.payload
                );
                break m;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(&later.payload[..], b"later");
    assert!(released > 0, "the held id was released");
    broker.shutdown().await;
}

/// A clean shutdown leaves nothing unsure: the QoS 2 subscriber of a restarted periodic
/// broker is not sent a PUBREL for every packet id (65,535 of them) before its messages.
#[tokio::test]
async fn after_a_clean_shutdown_no_packet_id_is_released_again() {
    let store = Arc::new(MemoryStorage::new());
    let periodic = Durability::Periodic(Duration::from_millis(50));
    let broker = broker_on(store.clone(), periodic).await;
    let (mut sub, _) = Raw::connect_with(&broker, persistent(V4, "calm")).await;
    sub.subscribe(1, "t", QoS::ExactlyOnce).await;
    drop(sub);
    broker.shutdown().await;

    let broker = broker_on(store, periodic).await;
    let (mut sub, ack) = Raw::connect_with(&broker, persistent(V4, "calm")).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.session_present));
    let mut p = Raw::connect(&broker, V4, "pub").await;
    p.publish("t", b"next", PublishQoS::ExactlyOnce(pid(1)), false)
        .await;
    let first = sub.recv().await;
    assert!(
        matches!(&first, Some(Packet::Publish(m)) if &m.payload[..] == b"next"),
        "the message comes first: {first:?}"
    );
    broker.shutdown().await;
}
