//! Crash test: a broker child process with sled in a temp dir takes QoS 1 and QoS 2 load
//! from several publishers to persistent-session subscribers and is killed with SIGKILL at
//! random moments, several rounds, restarted on the same directory each time. Every
//! message the broker acknowledged to a publisher must reach each subscriber at least once
//! (QoS 1) or exactly once (QoS 2), and the retained state must be right.
//!
//! Randomness is seeded; the seed is printed (`ROOST_CRASH_SEED=<n>` replays a run).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use roost::codec::{
    decode, Connect, DecodeLimits, Packet, ProtocolVersion, PubResponse, Publish, PublishQoS,
    Subscribe, SubscriptionOptions,
};
use roost::storage::{OnCorrupt, SledStorage};
use roost::{Broker, Durability, QoS};
use support::{filter, pid, topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const V4: ProtocolVersion = ProtocolVersion::V311;
const PUBLISHERS: usize = 3;
const SUBSCRIBERS: [&str; 2] = ["crash-sub-a", "crash-sub-b"];
const ROUNDS: usize = 4;

/// The child: a broker on the directory and port file named in `ROOST_CRASH_CHILD`, until
/// it is killed. Run only by the crash test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the crash test"]
async fn crash_child() {
    let spec = std::env::var("ROOST_CRASH_CHILD").expect("run by the crash test");
    let (dir, port_file) = spec.split_once('|').expect("dir|port_file");
    let store = SledStorage::open(dir, OnCorrupt::Fail).expect("opens after a crash");
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .storage(Arc::new(store), Durability::Acked)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let port = broker.local_addrs()[0].port();
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

async fn spawn_child(dir: &Path, round: usize) -> Child {
    let port_file = dir.with_extension(format!("port{round}"));
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
            format!("{}|{}", dir.display(), port_file.display()),
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
    Child { process, port }
}

/// A minimal MQTT 3.1.1 connection over a raw socket.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn open(port: u16, id: &str, clean: bool) -> Option<Conn> {
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
            Packet::ConnAck(a) if a.reason_code.is_success() => Some(c),
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

async fn run_subscriber(
    port: u16,
    id: &'static str,
    state: Arc<Mutex<SubState>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut c) = Conn::open(port, id, false).await else {
        return;
    };
    loop {
        let packet = tokio::select! {
            p = c.recv() => p,
            _ = stop.changed() => return,
        };
        let reply = match packet {
            Some(Packet::Publish(p)) => {
                let payload = String::from_utf8_lossy(&p.payload).to_string();
                let mut st = state.lock();
                let fresh = match p.qos {
                    PublishQoS::ExactlyOnce(id) => st.awaiting_rel.insert(id.get()),
                    _ => true,
                };
                if fresh {
                    *st.counts.entry(payload).or_default() += 1;
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
            None => return,
        };
        if let Some(reply) = reply {
            if c.send(reply).await.is_none() {
                return;
            }
        }
    }
}

/// What publishers got acknowledged.
#[derive(Default)]
struct Acked {
    qos1: HashSet<String>,
    qos2: HashSet<String>,
    /// Highest acknowledged retained value per publisher.
    retained: HashMap<usize, u64>,
    /// Highest retained value sent (acknowledged or not) per publisher.
    retained_sent: HashMap<usize, u64>,
}

async fn run_publisher(
    port: u16,
    p: usize,
    round: usize,
    acked: Arc<Mutex<Acked>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut c) = Conn::open(port, &format!("crash-pub-{p}"), true).await else {
        return;
    };
    let mut n: u64 = 0;
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        n += 1;
        let id = pid(u16::try_from(n % 60_000 + 1).unwrap_or(1));
        let (t, payload, qos, retain) = if n % 10 == 0 {
            let value = (round as u64) * 1_000_000 + n;
            acked.lock().retained_sent.insert(p, value);
            (
                format!("state/{p}"),
                value.to_string(),
                PublishQoS::AtLeastOnce(id),
                true,
            )
        } else if n % 2 == 0 {
            (
                format!("load/{p}"),
                format!("q1-{p}-{round}-{n}"),
                PublishQoS::AtLeastOnce(id),
                false,
            )
        } else {
            (
                format!("load/{p}"),
                format!("q2-{p}-{round}-{n}"),
                PublishQoS::ExactlyOnce(id),
                false,
            )
        };
        let mut m = Publish::new(topic(&t), qos, bytes::Bytes::from(payload.clone()));
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
                    a.qos1.insert(payload);
                }
            }
            (PublishQoS::ExactlyOnce(_), Some(Packet::PubRec(_))) => {
                // PUBREC: the broker owns the message now (method B routes it at once).
                acked.lock().qos2.insert(payload);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    let seed = std::env::var("ROOST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("crash test seed: {seed} (ROOST_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let dir: PathBuf = std::env::temp_dir().join(format!("roost-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let subs: Vec<Arc<Mutex<SubState>>> = SUBSCRIBERS.iter().map(|_| Arc::default()).collect();

    for round in 0..ROUNDS {
        let mut child = spawn_child(&dir, round).await;
        if round == 0 {
            for id in SUBSCRIBERS {
                subscribe_once(child.port, id).await;
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for (i, id) in SUBSCRIBERS.iter().enumerate() {
            tasks.push(tokio::spawn(run_subscriber(
                child.port,
                id,
                subs[i].clone(),
                stop_rx.clone(),
            )));
        }
        for p in 0..PUBLISHERS {
            tasks.push(tokio::spawn(run_publisher(
                child.port,
                p,
                round,
                acked.clone(),
                stop_rx.clone(),
            )));
        }
        // Let the load run a random while, then kill the broker mid-flight.
        let run_for = rng.range(150, 600);
        tokio::time::sleep(Duration::from_millis(run_for)).await;
        child.process.start_kill().expect("SIGKILL");
        let _ = child.process.wait().await;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        let a = acked.lock();
        println!(
            "round {round}: killed after {run_for} ms; acknowledged so far: {} QoS 1, {} QoS 2",
            a.qos1.len(),
            a.qos2.len()
        );
    }

    // Final life: no more publishing; subscribers drain what the broker still owes them.
    let mut child = spawn_child(&dir, ROUNDS).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (i, id) in SUBSCRIBERS.iter().enumerate() {
        tasks.push(tokio::spawn(run_subscriber(
            child.port,
            id,
            subs[i].clone(),
            stop_rx.clone(),
        )));
    }
    let (want1, want2, retained, retained_sent) = {
        let a = acked.lock();
        (
            a.qos1.clone(),
            a.qos2.clone(),
            a.retained.clone(),
            a.retained_sent.clone(),
        )
    };
    assert!(
        !want1.is_empty() && !want2.is_empty(),
        "the load produced acknowledged messages"
    );
    let complete = |s: &SubState| want1.iter().chain(&want2).all(|m| s.counts.contains_key(m));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !subs.iter().all(|s| complete(&s.lock())) {
        if tokio::time::Instant::now() >= deadline {
            for (i, s) in subs.iter().enumerate() {
                let s = s.lock();
                let missing: Vec<&String> = want1
                    .iter()
                    .chain(&want2)
                    .filter(|m| !s.counts.contains_key(*m))
                    .collect();
                println!(
                    "{}: {} missing, e.g. {:?}",
                    SUBSCRIBERS[i],
                    missing.len(),
                    &missing[..missing.len().min(8)]
                );
            }
            panic!("acknowledged messages missing after recovery (seed {seed})");
        }
        // Waiting for another task's progress, bounded by the deadline above.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    for (i, s) in subs.iter().enumerate() {
        let s = s.lock();
        for m in &want1 {
            assert!(
                s.counts.get(m).copied().unwrap_or(0) >= 1,
                "{}: QoS 1 {m} lost",
                SUBSCRIBERS[i]
            );
        }
        for m in &want2 {
            assert_eq!(
                s.counts.get(m).copied().unwrap_or(0),
                1,
                "{}: QoS 2 {m} not exactly once",
                SUBSCRIBERS[i]
            );
        }
    }
    // Retained state: each topic holds the last acknowledged value or one sent after it.
    let mut probe = Conn::open(child.port, "crash-probe", true)
        .await
        .expect("connects");
    let sub = Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(filter("state/#"), SubscriptionOptions::new(QoS::AtMostOnce))],
    };
    probe.send(Packet::Subscribe(sub)).await.expect("sends");
    let mut seen = HashMap::new();
    while seen.len() < retained.len() {
        match probe.recv().await {
            Some(Packet::Publish(p)) => {
                let t = p.topic.to_string();
                let v: u64 = String::from_utf8_lossy(&p.payload).parse().unwrap_or(0);
                seen.insert(t, v);
            }
            Some(_) => {}
            None => panic!("probe connection closed"),
        }
    }
    for (p, v) in &retained {
        let got = seen.get(&format!("state/{p}")).copied().unwrap_or(0);
        assert!(
            got >= *v && got <= retained_sent[p],
            "state/{p}: retained {got}, acknowledged {v}"
        );
    }
    println!(
        "crash test: {ROUNDS} SIGKILLs, {} QoS 1 and {} QoS 2 acknowledged messages, all delivered to {} subscribers",
        want1.len(),
        want2.len(),
        SUBSCRIBERS.len()
    );
    let _ = child.process.start_kill();
    let _ = child.process.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}
