//! Crash test: a broker child process with sled in a temp dir takes QoS 1 and QoS 2 load
//! from several publishers to persistent-session subscribers and is killed with SIGKILL at
//! random moments, several rounds, restarted on the same directory each time. Every
//! message the broker acknowledged to a publisher must reach each subscriber at least once
//! (QoS 1) or exactly once (QoS 2), and the retained state must be right.
//!
//! The power-loss tests do the same on [`lossyfs`], a FUSE file system that keeps every
//! write that was not synced in memory and drops it at the cut (as a power failure does),
//! with the subscribers offline, so what they get after recovery is what was on disk.
//!
//! Randomness is seeded; the seed is printed (`ROOST_CRASH_SEED=<n>` replays a run).
//! `ROOST_CRASH_DEBUG=1` prints each child's port, what it recovered, and the data directory
//! after each power cut.

#[cfg(target_os = "linux")]
mod lossyfs;
mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use roost::codec::{
    decode, Connect, DecodeLimits, Packet, ProtocolVersion, PubResponse, Publish, PublishQoS,
    Subscribe, SubscriptionOptions,
};
use roost::storage::{OnCorrupt, RedbStorage, SledStorage, Storage};
use roost::{Broker, Durability, Limits, QoS};
use support::{filter, pid, topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const V4: ProtocolVersion = ProtocolVersion::V311;
const PUBLISHERS: usize = 3;
/// Subscriber names; client ids are `<plan>-<name>` (plans run in parallel).
const SUBSCRIBERS: [&str; 2] = ["sub-a", "sub-b"];
/// Acknowledged load messages per plan, at most. The power-loss plans' subscribers are away
/// for every round, and a persistent session's stored QoS 1/2 message holds a packet id while
/// it waits: 65,535 at most, and further ones are dropped as the queue's overflow policy
/// says, which is no loss of durability. Release builds reach that within the rounds.
const MAX_LOAD: usize = 60_000;

/// The child: a broker on the directory and port file named in `ROOST_CRASH_CHILD`, until
/// it is killed. Run only by the crash test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the crash test"]
async fn crash_child() {
    let spec = std::env::var("ROOST_CRASH_CHILD").expect("run by the crash test");
    let mut parts = spec.split('|');
    let (Some(dir), Some(port_file), Some(periodic_ms), Some(backend)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("dir|port_file|periodic_ms|backend");
    };
    let durability = match periodic_ms.parse::<u64>() {
        Ok(ms) if ms > 0 => Durability::Periodic(Duration::from_millis(ms)),
        _ => Durability::Acked,
    };
    let store: Arc<dyn Storage> = match backend {
        "redb" => Arc::new(RedbStorage::open(dir, OnCorrupt::Fail).expect("opens after a crash")),
        _ => Arc::new(SledStorage::open(dir, OnCorrupt::Fail).expect("opens after a crash")),
    };
    if std::env::var_os("ROOST_CRASH_DEBUG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_writer(std::io::stderr)
            .try_init();
        let snap = store.load().await.expect("loads");
        let queued: usize = snap.sessions.iter().map(|s| s.queue.len()).sum();
        let subs: Vec<String> = snap
            .sessions
            .iter()
            .filter(|s| s.client_id.contains("sub-"))
            .map(|s| format!("{}:{}", s.client_id, s.queue.len()))
            .collect();
        eprintln!(
            "child {} {dir}: {} sessions, {queued} queued; {subs:?}",
            std::process::id(),
            snap.sessions.len()
        );
    }
    // Offline subscribers hold everything sent while they are away.
    let limits = Limits::default()
        .with_max_queued_messages(1_000_000)
        .with_max_queued_bytes(1 << 30);
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .storage(store, durability)
        .limits(limits)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let port = broker.local_addrs()[0].port();
    if std::env::var_os("ROOST_CRASH_DEBUG").is_some() {
        eprintln!("child {} {dir}: port {port}", std::process::id());
    }
    std::fs::write(format!("{port_file}.tmp"), port.to_string()).expect("port file");
    std::fs::rename(format!("{port_file}.tmp"), port_file).expect("port file");
    std::future::pending::<()>().await;
}

/// xorshift64*: small and seedable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

struct Child {
    process: tokio::process::Child,
    port: u16,
}

async fn spawn_child(dir: &Path, round: usize, plan: &Plan) -> Child {
    let durability = plan.durability;
    let periodic_ms = match durability {
        Durability::Periodic(every) => every.as_millis().max(1),
        Durability::Acked => 0,
        other => panic!("no plan for {other:?}"),
    };
    // Named after the plan: the plans run in parallel in this one process.
    let port_file = std::env::temp_dir().join(format!(
        "roost-{}-{}.port{round}",
        plan.name,
        std::process::id()
    ));
    let _ = std::fs::remove_file(&port_file);
    let process = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "ROOST_CRASH_CHILD",
            format!(
                "{}|{}|{periodic_ms}|{}",
                dir.display(),
                port_file.display(),
                plan.backend
            ),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("child starts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            if let Ok(port) = text.trim().parse() {
                break port;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "child did not start"
        );
        // Polling a file another process writes: there is no event to wait on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = std::fs::remove_file(&port_file);
    if std::env::var_os("ROOST_CRASH_DEBUG").is_some() {
        println!(
            "  {} round {round}: child {:?} on port {port}",
            plan.name,
            process.id()
        );
    }
    Child { process, port }
}

/// A minimal MQTT 3.1.1 connection over a raw socket.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn open(port: u16, id: &str, clean: bool) -> Option<Conn> {
        Self::open_session(port, id, clean).await.map(|(c, _)| c)
    }

    /// Connects; also says whether the broker had a session for `id` (Session Present).
    async fn open_session(port: u16, id: &str, clean: bool) -> Option<(Conn, bool)> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut c = Conn {
            stream,
            buf: BytesMut::new(),
        };
        let mut connect = Connect::new(V4, id);
        connect.clean_start = clean;
        connect.keep_alive = 0;
        c.send(Packet::Connect(Box::new(connect))).await?;
        match c.recv().await? {
            Packet::ConnAck(a) if a.reason_code.is_success() => Some((c, a.session_present)),
            _ => None,
        }
    }
    async fn send(&mut self, p: Packet) -> Option<()> {
        let mut out = BytesMut::new();
        p.encode(V4, &mut out).ok()?;
        self.stream.write_all(&out).await.ok()
    }
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = decode(&mut self.buf, &DecodeLimits::new(V4)).ok()? {
                return Some(p);
            }
            let read =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await;
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }
}

/// What a subscriber has seen, kept across its reconnections (like a real client's state).
#[derive(Default)]
struct SubState {
    counts: HashMap<String, u32>,
    awaiting_rel: HashSet<u16>,
    /// New QoS 2 messages (DUP 0) that came under an id the subscriber still held for
    /// another: dropped as duplicates, as a receiver must (MQTT-4.3.3-2).
    swallowed: Vec<String>,
}

/// Creates a subscriber's persistent session and subscription, waiting for the SUBACK.
async fn subscribe_once(port: u16, id: &str) {
    let mut c = Conn::open(port, id, false).await.expect("connects");
    let sub = Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(filter("load/#"), SubscriptionOptions::new(QoS::ExactlyOnce))],
    };
    c.send(Packet::Subscribe(sub)).await.expect("sends");
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))), "SUBACK");
    c.send(Packet::Disconnect(Default::default()))
        .await
        .expect("sends");
}

/// Creates persistent sessions with one subscription each (`late/<client id>`), one after
/// another until stopped, recording each SUBACK: every acknowledged subscription must
/// survive.
async fn run_session_maker(
    port: u16,
    plan: &'static str,
    round: usize,
    acked: Arc<Mutex<Acked>>,
    mut stop: watch::Receiver<bool>,
    killed: Arc<AtomicBool>,
) {
    for k in 0.. {
        // Once the broker is killed its port may go to another plan's broker: never
        // connect again, and count nothing that arrives after the kill.
        if *stop.borrow_and_update() || killed.load(Ordering::SeqCst) {
            return;
        }
        let id = format!("{plan}-late-{round}-{k}");
        let Some(mut c) = Conn::open(port, &id, false).await else {
            return;
        };
        let sub = Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: vec![(
                filter(&format!("late/{id}")),
                SubscriptionOptions::new(QoS::AtLeastOnce),
            )],
        };
        if c.send(Packet::Subscribe(sub)).await.is_none() {
            return;
        }
        match c.recv().await {
            Some(Packet::SubAck(a)) if a.reason_codes.iter().all(|r| r.is_success()) => {
                if killed.load(Ordering::SeqCst) {
                    return;
                }
                acked.lock().sessions.insert(id, (round, Instant::now()));
            }
            _ => return,
        }
        let _ = c.send(Packet::Disconnect(Default::default())).await;
        // Paced: a few dozen sessions a round are enough.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

async fn run_subscriber(
    port: u16,
    id: String,
    state: Arc<Mutex<SubState>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut c) = Conn::open(port, &id, false).await else {
        println!("  {id}: cannot connect to port {port}");
        return;
    };
    loop {
        let packet = tokio::select! {
            p = c.recv() => p,
            _ = stop.changed() => return,
        };
        let reply = match packet {
            Some(Packet::Publish(p)) => {
                // A message is named by what comes before any '|' (large ones are padded).
                let payload = String::from_utf8_lossy(&p.payload)
                    .split('|')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let mut st = state.lock();
                let fresh = match p.qos {
                    PublishQoS::ExactlyOnce(id) => st.awaiting_rel.insert(id.get()),
                    _ => true,
                };
                if fresh {
                    *st.counts.entry(payload).or_default() += 1;
                } else if !p.dup {
                    st.swallowed.push(payload);
                }
                match p.qos {
                    PublishQoS::AtMostOnce => None,
                    PublishQoS::AtLeastOnce(id) => Some(Packet::PubAck(PubResponse::new(id))),
                    PublishQoS::ExactlyOnce(id) => Some(Packet::PubRec(PubResponse::new(id))),
                }
            }
            Some(Packet::PubRel(r)) => {
                state.lock().awaiting_rel.remove(&r.packet_id.get());
                Some(Packet::PubComp(PubResponse::new(r.packet_id)))
            }
            Some(_) => None,
            None => {
                println!("  {id}: connection to port {port} ended");
                return;
            }
        };
        if let Some(reply) = reply {
            if c.send(reply).await.is_none() {
                return;
            }
        }
    }
}

/// What publishers (and the session maker) got acknowledged, and when.
#[derive(Default)]
struct Acked {
    /// QoS 1 payload → (round, when its PUBACK arrived).
    qos1: HashMap<String, (usize, Instant)>,
    /// QoS 2 payload → (round, when its PUBREC arrived).
    qos2: HashMap<String, (usize, Instant)>,
    /// Session maker's client id → (round, when its SUBACK arrived).
    sessions: HashMap<String, (usize, Instant)>,
    /// Highest acknowledged retained value per publisher.
    retained: HashMap<usize, u64>,
    /// Highest retained value sent (acknowledged or not) per publisher.
    retained_sent: HashMap<usize, u64>,
}

impl Acked {
    /// Load messages acknowledged.
    fn load(&self) -> usize {
        self.qos1.len() + self.qos2.len()
    }
}

async fn run_publisher(
    port: u16,
    plan: &'static str,
    large: bool,
    p: usize,
    round: usize,
    acked: Arc<Mutex<Acked>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut c) = Conn::open(port, &format!("{plan}-pub-{p}"), true).await else {
        return;
    };
    let mut n: u64 = 0;
    loop {
        if *stop.borrow_and_update() || acked.lock().load() >= MAX_LOAD {
            return;
        }
        n += 1;
        let id = pid(u16::try_from(n % 60_000 + 1).unwrap_or(1));
        let (t, payload, qos, retain) = if n.is_multiple_of(10) {
            let value = (round as u64) * 1_000_000 + n;
            acked.lock().retained_sent.insert(p, value);
            (
                format!("state/{p}"),
                value.to_string(),
                PublishQoS::AtLeastOnce(id),
                true,
            )
        } else if n.is_multiple_of(2) {
            (
                format!("load/{p}"),
                format!("{plan}-q1-{p}-{round}-{n}"),
                PublishQoS::AtLeastOnce(id),
                false,
            )
        } else {
            (
                format!("load/{p}"),
                format!("{plan}-q2-{p}-{round}-{n}"),
                PublishQoS::ExactlyOnce(id),
                false,
            )
        };
        // With `large`, every 40th message is 150 KB: stores keep values that large apart
        // (redb in overflow pages; sled in files of their own under blobs/).
        let body = if large && n % 40 == 21 {
            format!("{payload}|{}", "x".repeat(150_000))
        } else {
            payload.clone()
        };
        let mut m = Publish::new(topic(&t), qos, bytes::Bytes::from(body));
        m.retain = retain;
        if c.send(Packet::Publish(m)).await.is_none() {
            return;
        }
        match (qos, c.recv().await) {
            (PublishQoS::AtLeastOnce(_), Some(Packet::PubAck(_))) => {
                let mut a = acked.lock();
                if retain {
                    let v: u64 = payload.parse().unwrap_or(0);
                    let e = a.retained.entry(p).or_default();
                    *e = (*e).max(v);
                } else {
                    a.qos1.insert(payload, (round, Instant::now()));
                }
            }
            (PublishQoS::ExactlyOnce(_), Some(Packet::PubRec(_))) => {
                // PUBREC: the broker owns the message now (method B routes it at once).
                acked.lock().qos2.insert(payload, (round, Instant::now()));
                if c.send(Packet::PubRel(PubResponse::new(id))).await.is_none() {
                    return;
                }
                if !matches!(c.recv().await, Some(Packet::PubComp(_))) {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// How a round ends, and what must hold after recovery.
struct Plan {
    name: &'static str,
    /// The store: "sled" or "redb".
    backend: &'static str,
    rounds: usize,
    durability: Durability,
    /// Cut the power (drop every unsynced write) as well as kill the broker; the data
    /// directory is on [`lossyfs`]. The subscribers stay offline during the load, so only
    /// what was on disk reaches them.
    power_loss: bool,
    /// A round lasts a random time in this range (ms) before the cut.
    run_ms: (u64, u64),
    /// Some messages are large (150 KB).
    large: bool,
}

/// What was acknowledged but did not survive, with how long before its round's cut the
/// acknowledgement came.
#[derive(Default)]
struct Losses {
    messages: Vec<(String, Duration)>,
    sessions: Vec<(String, Duration)>,
}

impl Losses {
    fn window(&self) -> Duration {
        self.messages
            .iter()
            .chain(&self.sessions)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }
}

/// The file system the data directory is on: a plain temporary directory, or (for power
/// loss) a [`lossyfs`] mount.
enum Disk {
    Plain,
    #[cfg(target_os = "linux")]
    Lossy(lossyfs::LossyMount),
}

impl Disk {
    /// `None` (with the reason printed) where FUSE cannot be mounted and
    /// `ROOST_REQUIRE_FUSE` is not set.
    fn new(power_loss: bool, base: &Path) -> Option<Disk> {
        if !power_loss {
            return Some(Disk::Plain);
        }
        let required = support::required("ROOST_REQUIRE_FUSE");
        #[cfg(target_os = "linux")]
        {
            let mnt = base.join("mnt");
            std::fs::create_dir_all(&mnt).expect("mount point");
            match lossyfs::LossyMount::mount(&mnt) {
                Ok(m) => Some(Disk::Lossy(m)),
                Err(e) if !required => {
                    println!(
                        "SKIPPED: cannot mount the power-loss file system on {} ({e}); it needs \
                         /dev/fuse and root (set ROOST_REQUIRE_FUSE=1 to make this a failure)",
                        mnt.display()
                    );
                    None
                }
                Err(e) => panic!("ROOST_REQUIRE_FUSE is set and FUSE cannot be mounted: {e}"),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = base;
            assert!(
                !required,
                "ROOST_REQUIRE_FUSE is set: the power-loss test runs on Linux"
            );
            println!("SKIPPED: the power-loss file system is Linux only");
            None
        }
    }

    /// Where the broker keeps its data.
    fn data_dir(&self, base: &Path) -> PathBuf {
        match self {
            Disk::Plain => base.join("data"),
            #[cfg(target_os = "linux")]
            Disk::Lossy(_) => base.join("mnt").join("data"),
        }
    }

    /// After the broker was killed: a power cut drops what was not synced. Every other
    /// cut lets a random half of the unsynced pages through (torn, out-of-order writes);
    /// the others drop them all.
    fn cut(self, rng: &mut Rng, torn: bool) -> Disk {
        match self {
            Disk::Plain => Disk::Plain,
            #[cfg(target_os = "linux")]
            Disk::Lossy(m) => {
                let unsynced = m.unsynced_pages();
                let writes = m.writes();
                let mut kept = 0;
                let m = m
                    .power_cut(&mut || {
                        let keep = torn && rng.next().is_multiple_of(2);
                        kept += usize::from(keep);
                        keep
                    })
                    .expect("remounts after the power cut");
                println!(
                    "  power cut: {writes} writes since the last; {unsynced} unsynced pages, {kept} of them written anyway"
                );
                if std::env::var_os("ROOST_CRASH_DEBUG").is_some() {
                    for root in [
                        m.path().to_path_buf(),
                        m.path().join("data"),
                        m.path().join("data").join("blobs"),
                    ] {
                        let names: Vec<String> = std::fs::read_dir(&root)
                            .map(|d| {
                                d.flatten()
                                    .map(|e| {
                                        let len = e.metadata().map_or(0, |m| m.len());
                                        format!("{}:{len}", e.file_name().to_string_lossy())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        println!("    {}: {names:?}", root.display());
                    }
                }
                Disk::Lossy(m)
            }
        }
    }
}

fn seed() -> u64 {
    std::env::var("ROOST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

/// Starts every subscriber of the plan on the broker at `port`.
fn spawn_subscribers(
    port: u16,
    plan: &'static str,
    subs: &[Arc<Mutex<SubState>>],
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    SUBSCRIBERS
        .iter()
        .zip(subs)
        .map(|(id, state)| {
            tokio::spawn(run_subscriber(
                port,
                format!("{plan}-{id}"),
                state.clone(),
                stop.clone(),
            ))
        })
        .collect()
}

/// Plans that measure a time window (periodic durability) take it whole; the others share
/// it and run side by side. On two cores the other plans' brokers, clients and lossyfs
/// daemons beside a periodic plan delayed its broker's flush by more than the bound's slack
/// (in CI: losses 743 and 767 ms old against a bound of 700, none over 460 ms alone), which
/// measured the machine's load, not the broker's bound.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Runs the rounds of `plan`, recovers, and returns what was acknowledged but lost. QoS 2
/// messages are never duplicated, whatever the plan; the caller judges the losses.
/// `None` if the plan's file system is unavailable here.
async fn run_plan(plan: Plan) -> Option<Losses> {
    let (_alone, _beside) = match plan.durability {
        Durability::Periodic(_) => (Some(MACHINE.write().await), None),
        _ => (None, Some(MACHINE.read().await)),
    };
    let seed = seed();
    println!(
        "{}: seed {seed} (ROOST_CRASH_SEED={seed} replays it)",
        plan.name
    );
    let mut rng = Rng(seed);
    let base: PathBuf =
        std::env::temp_dir().join(format!("roost-{}-{}", plan.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("base dir");
    let mut disk = Disk::new(plan.power_loss, &base)?;
    let dir = disk.data_dir(&base);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let subs: Vec<Arc<Mutex<SubState>>> = SUBSCRIBERS.iter().map(|_| Arc::default()).collect();
    let mut cuts = Vec::new();
    let mut load_ms = 0;

    for round in 0..plan.rounds {
        let mut child = spawn_child(&dir, round, &plan).await;
        if round == 0 {
            for id in SUBSCRIBERS {
                subscribe_once(child.port, &format!("{}-{id}", plan.name)).await;
            }
            if let Durability::Periodic(every) = plan.durability {
                // Their SUBACKs did not wait for the disk: let a flush or two pass, or a
                // cut would lose the subscriptions and, with them, every message after.
                tokio::time::sleep(every * 3).await;
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if !plan.power_loss {
            tasks = spawn_subscribers(child.port, plan.name, &subs, &stop_rx);
        }
        for p in 0..PUBLISHERS {
            tasks.push(tokio::spawn(run_publisher(
                child.port,
                plan.name,
                plan.large,
                p,
                round,
                acked.clone(),
                stop_rx.clone(),
            )));
        }
        let killed = Arc::new(AtomicBool::new(false));
        tasks.push(tokio::spawn(run_session_maker(
            child.port,
            plan.name,
            round,
            acked.clone(),
            stop_rx.clone(),
            killed.clone(),
        )));
        // Let the load run a random while, then kill the broker mid-flight.
        let run_for = rng.range(plan.run_ms.0, plan.run_ms.1);
        load_ms += run_for;
        tokio::time::sleep(Duration::from_millis(run_for)).await;
        killed.store(true, Ordering::SeqCst);
        child.process.start_kill().expect("SIGKILL");
        let _ = child.process.wait().await;
        cuts.push(Instant::now());
        disk = disk.cut(&mut rng, round % 2 == 1);
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        let a = acked.lock();
        println!(
            "  round {round}: cut after {run_for} ms; acknowledged so far: {} QoS 1, {} QoS 2, {} sessions",
            a.qos1.len(),
            a.qos2.len(),
            a.sessions.len()
        );
    }

    // Final life: no more publishing; subscribers drain what the broker still owes them.
    let mut child = spawn_child(&dir, plan.rounds, &plan).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks = spawn_subscribers(child.port, plan.name, &subs, &stop_rx);
    let (messages, sessions, retained, retained_sent) = {
        let a = acked.lock();
        let mut messages = a.qos1.clone();
        messages.extend(a.qos2.clone());
        (
            messages,
            a.sessions.clone(),
            a.retained.clone(),
            a.retained_sent.clone(),
        )
    };
    assert!(
        !messages.is_empty() && !sessions.is_empty(),
        "the load produced acknowledged messages and sessions"
    );
    let received = |s: &SubState| {
        messages
            .keys()
            .filter(|m| s.counts.contains_key(*m))
            .count()
    };
    // Until everything arrived, or (where losses are possible) nothing more comes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, Instant::now());
    loop {
        let now: usize = subs.iter().map(|s| received(&s.lock())).sum();
        if now == messages.len() * subs.len() || Instant::now() >= deadline {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        // Waiting for other tasks' progress, bounded by the deadline above.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let age = |round: usize, at: Instant| cuts[round].saturating_duration_since(at);
    let mut losses = Losses::default();
    for (i, s) in subs.iter().enumerate() {
        let s = s.lock();
        // Whatever the plan: the broker never gives a new message an id the subscriber
        // holds, even one a crash made it forget (MQTT-2.3.1-2).
        assert!(
            s.swallowed.is_empty(),
            "{}: new QoS 2 messages under ids still held: {:?}",
            SUBSCRIBERS[i],
            s.swallowed
        );
        for (m, (round, at)) in &messages {
            match s.counts.get(m).copied().unwrap_or(0) {
                0 => losses
                    .messages
                    .push((format!("{}: {m}", SUBSCRIBERS[i]), age(*round, *at))),
                1 => {}
                // Periodic promises no exactly-once across a crash: the state of a QoS 2
                // exchange with a subscriber may be older than the exchange itself.
                _ if matches!(plan.durability, Durability::Periodic(_)) => {}
                n => assert!(
                    !m.contains("-q2-"),
                    "{}: QoS 2 {m} delivered {n} times (MQTT-4.3.3-2: exactly once)",
                    SUBSCRIBERS[i]
                ),
            }
        }
    }
    // Every acknowledged session is there with its subscription.
    let mut probe = Conn::open(child.port, &format!("{}-probe", plan.name), true)
        .await
        .expect("connects");
    for (id, (round, at)) in &sessions {
        let (mut c, present) = Conn::open_session(child.port, id, false)
            .await
            .expect("connects");
        let kept = present
            && {
                let m = Publish::new(
                    topic(&format!("late/{id}")),
                    PublishQoS::AtMostOnce,
                    bytes::Bytes::from_static(b"still subscribed"),
                );
                probe.send(Packet::Publish(m)).await.expect("sends");
                matches!(c.recv().await, Some(Packet::Publish(p)) if p.topic.to_string() == format!("late/{id}"))
            };
        if !kept {
            losses.sessions.push((id.clone(), age(*round, *at)));
        }
        let _ = c.send(Packet::Disconnect(Default::default())).await;
    }
    // Retained state: each topic holds the last acknowledged value or one sent after it.
    let sub = Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(filter("state/#"), SubscriptionOptions::new(QoS::AtMostOnce))],
    };
    probe.send(Packet::Subscribe(sub)).await.expect("sends");
    let mut seen = HashMap::new();
    while seen.len() < retained.len() {
        match tokio::time::timeout(Duration::from_secs(3), probe.recv()).await {
            Ok(Some(Packet::Publish(p))) => {
                let t = p.topic.to_string();
                let v: u64 = String::from_utf8_lossy(&p.payload).parse().unwrap_or(0);
                seen.insert(t, v);
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    for (p, v) in &retained {
        let got = seen.get(&format!("state/{p}")).copied().unwrap_or(0);
        assert!(
            got <= retained_sent[p],
            "state/{p}: retained {got}, never sent"
        );
        if got < *v {
            losses.messages.push((
                format!("retained state/{p}={v} (found {got})"),
                Duration::ZERO,
            ));
        }
    }
    println!(
        "{}: {} cuts; acknowledged {} messages in {load_ms} ms of load ({:.0}/s) (x{} subscribers), {} sessions; \
         lost {} messages, {} sessions; oldest lost acknowledgement {:?} before its cut",
        plan.name,
        plan.rounds,
        messages.len(),
        messages.len() as f64 * 1000.0 / load_ms.max(1) as f64,
        subs.len(),
        sessions.len(),
        losses.messages.len(),
        losses.sessions.len(),
        losses.window()
    );
    if std::env::var_os("ROOST_CRASH_DEBUG").is_some() {
        for round in 0..plan.rounds {
            let tag = format!("-{round}-");
            let acked_n = messages.iter().filter(|(_, (r, _))| *r == round).count();
            let lost_n = losses
                .messages
                .iter()
                .filter(|(m, _)| m.contains(&tag) && m.contains(SUBSCRIBERS[0]))
                .count();
            let max_age = losses
                .messages
                .iter()
                .filter(|(m, _)| m.contains(&tag))
                .map(|(_, a)| *a)
                .max()
                .unwrap_or_default();
            println!("  round {round}: {acked_n} acknowledged, {lost_n} lost (oldest {max_age:?})");
        }
    }
    for (what, age) in losses.messages.iter().chain(&losses.sessions).take(8) {
        println!("  lost: {what} (acknowledged {age:?} before the cut)");
    }
    let _ = child.process.start_kill();
    let _ = child.process.wait().await;
    drop(disk);
    let _ = std::fs::remove_dir_all(&base);
    Some(losses)
}

/// Every acknowledgement the broker gave must survive: a PUBACK/PUBREC means the message
/// is stored, a SUBACK that the session and its subscription are.
fn assert_nothing_lost(name: &str, losses: &Losses) {
    assert!(
        losses.messages.is_empty() && losses.sessions.is_empty(),
        "{name}: {} acknowledged messages and {} acknowledged sessions lost (seed above)",
        losses.messages.len(),
        losses.sessions.len()
    );
}

impl Plan {
    /// Acked durability on `backend`: SIGKILLs (4 rounds), or power cuts (6 rounds).
    fn acked(name: &'static str, backend: &'static str, power_loss: bool) -> Plan {
        Plan {
            name,
            backend,
            rounds: if power_loss { 6 } else { 4 },
            durability: Durability::Acked,
            power_loss,
            run_ms: if power_loss { (100, 900) } else { (150, 600) },
            // sled keeps values over 128 KB in blob files that its log points at; a power
            // cut can keep a log record whose blob it lost, and sled 0.34 then panics at
            // open (README, "Persistence"). redb is tested with them.
            large: backend == "redb",
        }
    }

    /// Runs the plan; nothing acknowledged may be lost. Skips (with a message) where the
    /// power-loss file system cannot be mounted and ROOST_REQUIRE_FUSE is not set.
    async fn loses_nothing(self) {
        let name = self.name;
        if let Some(losses) = run_plan(self).await {
            assert_nothing_lost(name, &losses);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    Plan::acked("crash", "sled", false).loses_nothing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_redb() {
    Plan::acked("crash-redb", "redb", false)
        .loses_nothing()
        .await;
}

/// Issue 20: acked means durable after a power cut too. The broker is killed and every
/// write it did not sync is dropped, at random points, several rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_power_loss() {
    Plan::acked("power-loss", "sled", true)
        .loses_nothing()
        .await;
}

/// The same with the redb backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_power_loss_redb() {
    Plan::acked("power-loss-redb", "redb", true)
        .loses_nothing()
        .await;
}

/// `Durability::Periodic(interval)` may lose what was acknowledged since the last flush,
/// and no more: nothing acknowledged longer than the interval (plus one flush) before the
/// power cut is lost. The oldest loss measured is printed (README, "Persistence").
async fn periodic_loses_at_most_its_interval(name: &'static str, backend: &'static str) {
    let interval = Duration::from_millis(200);
    let plan = Plan {
        name,
        backend,
        rounds: 5,
        durability: Durability::Periodic(interval),
        // sled 0.34 keeps no bound under a power cut in periodic mode: between flushes it
        // writes megabytes unsynced, and cuts here lost acknowledgements 0.9 s old with
        // every unsynced write dropped, and left logs it cannot recover with some of them
        // kept out of order (README, "sled and periodic"; `backend_tests.rs` reproduces
        // the second). Its bound is checked against a crash of the process; redb's
        // against power cuts, torn ones included.
        power_loss: backend == "redb",
        run_ms: (300, 1_200),
        // The window measured is the broker's, not the time the test's file system takes
        // to copy megabytes at each sync.
        large: false,
    };
    if let Some(losses) = run_plan(plan).await {
        // One interval, plus the flush and write under way at the cut: a few ms alone, up
        // to ~120 ms with the other plans running beside it in this process (debug builds).
        let bound = interval + Duration::from_millis(500);
        assert!(
            losses.window() <= bound,
            "{name}: periodic({interval:?}) lost an acknowledgement {:?} old (bound {bound:?})",
            losses.window()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_durability_loses_at_most_its_interval() {
    periodic_loses_at_most_its_interval("crash-periodic", "sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_durability_loses_at_most_its_interval_redb() {
    periodic_loses_at_most_its_interval("power-loss-periodic-redb", "redb").await;
}
