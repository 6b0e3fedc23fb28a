//! Load generator for MQTT brokers (see the `roost-bench` binary): fan-in and fan-out runs at
//! QoS 0, 1 and 2 with delivery checks and broker CPU time from `/proc`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

mod memory;
mod raw;
mod shapes;

pub use memory::{run_memory, MemoryCase, MemoryTarget};

/// Command-line usage.
pub const USAGE: &str =
    "usage: roost-bench [--host H] [--port P] [--sub-port P] [--pid BROKER_PID] \
[--scenario fan-in|fan-out] [--qos 0|1|2] [--publishers N] [--subscribers N] [--messages N] \
[--payload BYTES] [--timeout-s S] [--repeat N] [--seal KEY_HEX] [--batch BYTES [--window N]] [--scenario latency --rate MSGS_PER_S --seconds S] \
[--scenario idle --connections N] [--scenario in-process] \
[--scenario idle-in-process --connections N]";

/// Who publishes to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `publishers` clients publish to `bench/<n>`; one subscriber on `bench/#`.
    FanIn,
    /// One publisher; `subscribers` clients subscribed to `bench/#`.
    FanOut,
    /// One publisher at a fixed rate, one subscriber; latency from a timestamp in the payload.
    Latency,
    /// `connections` idle clients (CONNECT, CONNACK, then silence); connect rate, broker CPU
    /// per connect and broker RSS per connection.
    Idle,
    /// An embedded Roost broker and in-process clients on one thread, no sockets:
    /// `publishers` → `subscribers` on `bench/#`; throughput per CPU-second of the process.
    InProcess,
    /// `connections` idle MQTT connections to an embedded Roost broker over in-memory
    /// streams (no file descriptors, so past a process's limit); RSS per connection.
    IdleInProcess,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Where subscribers connect, if not `port`: the far side of a bridge from the broker
    /// publishers use.
    pub sub_port: Option<u16>,
    /// Broker process, for CPU time (`/proc/PID/stat`).
    pub pid: Option<u32>,
    /// Fan-in or fan-out.
    pub scenario: Scenario,
    /// QoS of publications and subscriptions.
    pub qos: u8,
    /// Publishers in fan-in.
    pub publishers: usize,
    /// Subscribers in fan-out.
    pub subscribers: usize,
    /// Messages per publisher.
    pub messages: u64,
    /// Payload size in bytes.
    pub payload: usize,
    /// Upper bound for the whole run.
    pub timeout: Duration,
    /// Messages per second in the latency run.
    pub rate: u64,
    /// Length of the latency run.
    pub duration: Duration,
    /// Idle connections to open.
    pub connections: usize,
    /// Runs of a throughput scenario; the report gives the median of each figure.
    pub repeat: usize,
    /// Publishers seal each payload as protected devices do (`roost::protect` envelope,
    /// AES-128-GCM, key id 1, this key), so a broker with payload protection opens them.
    pub seal: Option<Vec<u8>>,
    /// Raw clients (issue 19's shapes): publishers write PUBLISHes in batches of about this
    /// many bytes, subscribers read 64 KiB at a time and acknowledge per read. 0: rumqttc
    /// clients.
    pub batch: usize,
    /// Unacknowledged QoS 1/2 messages per raw publisher.
    pub window: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            host: "127.0.0.1".into(),
            port: 1883,
            sub_port: None,
            pid: None,
            scenario: Scenario::FanIn,
            qos: 0,
            publishers: 8,
            subscribers: 32,
            messages: 20_000,
            payload: 64,
            timeout: Duration::from_secs(60),
            rate: 5_000,
            duration: Duration::from_secs(5),
            connections: 10_000,
            repeat: 1,
            seal: None,
            batch: 0,
            window: 100,
        }
    }
}

impl Settings {
    /// Parses command-line flags over the defaults.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Settings, String> {
        let mut s = Settings::default();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let num = |v: &str| -> Result<u64, String> {
                v.parse()
                    .map_err(|_| format!("{flag}: '{v}' is not a number"))
            };
            match flag.as_str() {
                "--host" => s.host = value,
                "--port" => s.port = u16::try_from(num(&value)?).map_err(|e| e.to_string())?,
                "--sub-port" => {
                    s.sub_port = Some(u16::try_from(num(&value)?).map_err(|e| e.to_string())?)
                }
                "--pid" => s.pid = Some(u32::try_from(num(&value)?).map_err(|e| e.to_string())?),
                "--scenario" => {
                    s.scenario = match value.as_str() {
                        "fan-in" => Scenario::FanIn,
                        "fan-out" => Scenario::FanOut,
                        "latency" => Scenario::Latency,
                        "idle" => Scenario::Idle,
                        "in-process" => Scenario::InProcess,
                        "idle-in-process" => Scenario::IdleInProcess,
                        _ => {
                            return Err(format!(
                                "--scenario: '{value}' is not fan-in, fan-out, latency, idle, \
                                 in-process or idle-in-process"
                            ))
                        }
                    }
                }
                "--qos" => {
                    s.qos = match value.as_str() {
                        "0" => 0,
                        "1" => 1,
                        "2" => 2,
                        _ => return Err(format!("--qos: '{value}' is not 0, 1 or 2")),
                    }
                }
                "--publishers" => s.publishers = num(&value)?.max(1) as usize,
                "--subscribers" => s.subscribers = num(&value)?.max(1) as usize,
                "--messages" => s.messages = num(&value)?,
                "--payload" => s.payload = num(&value)? as usize,
                "--timeout-s" => s.timeout = Duration::from_secs(num(&value)?),
                "--rate" => s.rate = num(&value)?.max(1),
                "--seconds" => s.duration = Duration::from_secs(num(&value)?.max(1)),
                "--connections" => s.connections = num(&value)? as usize,
                "--repeat" => s.repeat = num(&value)?.max(1) as usize,
                "--batch" => s.batch = num(&value)? as usize,
                "--window" => s.window = num(&value)?.clamp(1, 65_535) as usize,
                "--seal" => {
                    let key = (0..value.len())
                        .step_by(2)
                        .map(|i| {
                            value
                                .get(i..i + 2)
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                        })
                        .collect::<Option<Vec<u8>>>()
                        .filter(|k| k.len() == 16)
                        .ok_or("--seal: a 16-byte key in hex (32 digits)")?;
                    s.seal = Some(key);
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(s)
    }

    fn publishers(&self) -> usize {
        match self.scenario {
            Scenario::FanIn => self.publishers,
            _ => 1,
        }
    }

    fn subscribers(&self) -> usize {
        match self.scenario {
            Scenario::FanOut => self.subscribers,
            _ => 1,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The settings of the run.
    pub settings: Settings,
    /// Messages published.
    pub published: u64,
    /// Deliveries expected (published × subscribers).
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Deliveries received before the last publisher finished.
    pub delivered_while_publishing: u64,
    /// From the first publish until the last publisher finished.
    pub publishing: Duration,
    /// From the first publish to the last delivery (or the end of waiting).
    pub elapsed: Duration,
    /// Broker CPU time (user + system) over the run, when `--pid` was given.
    pub broker_cpu: Option<Duration>,
    /// The broker's largest resident set size seen during the run (sampled every 10 ms),
    /// in KiB, when `--pid` was given.
    pub peak_rss_kib: Option<u64>,
}

impl Report {
    /// Deliveries per broker-CPU-second, when the broker's CPU time is known.
    pub fn per_broker_cpu_second(&self) -> Option<f64> {
        self.broker_cpu
            .filter(|c| !c.is_zero())
            .map(|c| self.delivered as f64 / c.as_secs_f64())
    }

    /// Deliveries per second.
    pub fn delivered_per_second(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Deliveries per second while publishers were still sending.
    pub fn delivered_while_publishing_per_second(&self) -> f64 {
        self.delivered_while_publishing as f64 / self.publishing.as_secs_f64().max(1e-9)
    }

    /// Share of deliveries that arrived while publishers were still sending, in percent.
    pub fn while_publishing_percent(&self) -> f64 {
        100.0 * self.delivered_while_publishing as f64 / (self.delivered.max(1) as f64)
    }
}

/// The median of each figure over several runs of one scenario.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The runs, in order.
    pub runs: Vec<Report>,
}

impl Summary {
    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => 0.0,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        }
    }

    /// Median deliveries per second.
    pub fn delivered_per_second(&self) -> f64 {
        Self::median(self.runs.iter().map(Report::delivered_per_second).collect())
    }

    /// Median deliveries per broker-CPU-second (runs with a known CPU time).
    pub fn per_broker_cpu_second(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter_map(Report::per_broker_cpu_second)
            .collect();
        (!v.is_empty()).then(|| Self::median(v))
    }

    /// Median share of deliveries inside the publishing window, in percent.
    pub fn while_publishing_percent(&self) -> f64 {
        Self::median(
            self.runs
                .iter()
                .map(Report::while_publishing_percent)
                .collect(),
        )
    }

    /// Median deliveries per second inside the publishing window.
    pub fn delivered_while_publishing_per_second(&self) -> f64 {
        Self::median(
            self.runs
                .iter()
                .map(Report::delivered_while_publishing_per_second)
                .collect(),
        )
    }

    /// Median share of the expected deliveries that arrived, in percent.
    pub fn delivered_percent(&self) -> f64 {
        Self::median(
            self.runs
                .iter()
                .map(|r| 100.0 * r.delivered as f64 / r.expected.max(1) as f64)
                .collect(),
        )
    }

    /// The largest broker RSS any run saw, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.runs.iter().filter_map(|r| r.peak_rss_kib).max()
    }

    /// True when no run lost a QoS 1/2 delivery.
    pub fn complete(&self) -> bool {
        self.runs
            .iter()
            .all(|r| r.settings.qos == 0 || r.delivered == r.expected)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.runs {
            writeln!(f, "{r}")?;
        }
        write!(
            f,
            "median of {}: delivered/s={:.0} delivered_pct={:.2} while_publishing={:.1}% \
             while_publishing/s={:.0}",
            self.runs.len(),
            self.delivered_per_second(),
            self.delivered_percent(),
            self.while_publishing_percent(),
            self.delivered_while_publishing_per_second(),
        )?;
        if let Some(rate) = self.per_broker_cpu_second() {
            write!(f, " per_broker_cpu_s={rate:.0}")?;
        }
        if let Some(kib) = self.peak_rss_kib() {
            write!(f, " peak_rss_kib={kib}")?;
        }
        Ok(())
    }
}

/// Runs a throughput scenario `settings.repeat` times.
pub async fn run_repeated(settings: &Settings) -> Result<Summary, BenchError> {
    let mut runs = Vec::new();
    for _ in 0..settings.repeat {
        runs.push(run(settings).await?);
    }
    Ok(Summary { runs })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "scenario={:?} qos={} publishers={} subscribers={} payload={} published={} \
             expected={} delivered={} ({:.2}%) elapsed={:.3}s delivered/s={:.0} \
             while_publishing={:.1}% while_publishing/s={:.0}",
            s.scenario,
            s.qos,
            s.publishers(),
            s.subscribers(),
            s.payload,
            self.published,
            self.expected,
            self.delivered,
            100.0 * self.delivered as f64 / (self.expected.max(1) as f64),
            secs,
            self.delivered_per_second(),
            self.while_publishing_percent(),
            self.delivered_while_publishing_per_second(),
        )?;
        if let (Some(cpu), Some(rate)) = (self.broker_cpu, self.per_broker_cpu_second()) {
            write!(
                f,
                " broker_cpu={:.3}s per_broker_cpu_s={rate:.0}",
                cpu.as_secs_f64()
            )?;
        }
        if let Some(kib) = self.peak_rss_kib {
            write!(f, " peak_rss_kib={kib}")?;
        }
        if s.batch > 0 {
            write!(f, " batch={} window={}", s.batch, s.window)?;
        }
        Ok(())
    }
}

/// Errors that end a run.
#[derive(Debug)]
pub enum BenchError {
    /// A client could not connect or subscribe.
    Client(String),
    /// `/proc/PID/stat` could not be read or parsed.
    Proc(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Client(e) => write!(f, "client: {e}"),
            BenchError::Proc(e) => write!(f, "/proc: {e}"),
        }
    }
}

impl std::error::Error for BenchError {}

/// CPU time (user + system) of process `pid` so far.
pub fn process_cpu(pid: u32) -> Result<Duration, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| BenchError::Proc(format!("/proc/{pid}/stat: {e}")))?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are
    // plain: state is field 3, utime field 14, stime field 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| BenchError::Proc("no command name".into()))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64, BenchError> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| BenchError::Proc(format!("field {} missing", i + 3)))
    };
    let ticks = tick(11)? + tick(12)?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn options(settings: &Settings, id: String, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, settings.host.clone(), port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_inflight(100);
    o
}

/// Connects a subscriber on `bench/#` and counts what it receives into `count`.
async fn subscriber(
    settings: &Settings,
    n: usize,
    count: Arc<AtomicU64>,
) -> Result<tokio::task::JoinHandle<()>, BenchError> {
    let port = settings.sub_port.unwrap_or(settings.port);
    let (client, mut el) =
        AsyncClient::new(options(settings, format!("bench-sub-{n}"), port), 1024);
    client
        .subscribe("bench/#", qos(settings.qos))
        .await
        .map_err(|e| BenchError::Client(e.to_string()))?;
    // Wait for the SUBACK before publishing starts.
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Incoming::SubAck(_))) => break,
            Ok(_) => continue,
            Err(e) => return Err(BenchError::Client(e.to_string())),
        }
    }
    Ok(tokio::spawn(async move {
        let _client = client; // keeps the request channel open
        while let Ok(event) = el.poll().await {
            if let Event::Incoming(Incoming::Publish(_)) = event {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }))
}

/// Seals payloads as a protected device: AES-128-GCM envelopes with growing sequence
/// numbers. They start from the clock (microseconds × 1024), so a later run against the
/// same broker (which remembers each device's last one) is not refused as a replay.
struct Sealer {
    key: roost_protect::DeviceKey,
    next: std::sync::atomic::AtomicU64,
}

impl Sealer {
    fn new(key: &[u8]) -> Result<Self, BenchError> {
        let key = roost_protect::DeviceKey::new(roost_protect::Algorithm::Aes128Gcm, key)
            .map_err(|e| BenchError::Client(e.to_string()))?;
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Ok(Sealer {
            key,
            next: std::sync::atomic::AtomicU64::new(micros.saturating_mul(1024)),
        })
    }

    fn seal(&self, topic: &str, plaintext: &[u8]) -> Vec<u8> {
        use roost_protect::envelope::{seal, Direction, Header};
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let header = Header::counter(1, seq, [0; 4]);
        seal(&self.key, Direction::Up, &header, topic, plaintext).unwrap_or_default()
    }
}

/// Publishes `settings.messages` messages on `bench/<n>`; returns once the broker has
/// acknowledged them all (QoS 1/2) or they have been written (QoS 0).
async fn publisher(settings: Settings, n: usize) -> Result<(), BenchError> {
    let (client, mut el) = AsyncClient::new(
        options(&settings, format!("bench-pub-{n}"), settings.port),
        1024,
    );
    let topic = format!("bench/{n}");
    let payload = vec![0x5A; settings.payload];
    let total = settings.messages;
    let level = qos(settings.qos);
    let qos0 = settings.qos == 0;
    let feeder_client = client.clone();
    let sealer = match &settings.seal {
        Some(key) => Some(Sealer::new(key)?),
        None => None,
    };
    let feeder = tokio::spawn(async move {
        for _ in 0..total {
            let body = match &sealer {
                Some(s) => s.seal(&topic, &payload),
                None => payload.clone(),
            };
            if feeder_client
                .publish(topic.as_str(), level, false, body)
                .await
                .is_err()
            {
                return;
            }
        }
        // QoS 0: the DISCONNECT queued behind the publishes marks that all were written.
        if qos0 {
            let _ = feeder_client.disconnect().await;
        }
    });
    let mut done = 0u64;
    loop {
        if !qos0 && done >= total {
            let _ = client.try_disconnect();
            break;
        }
        match el.poll().await {
            Ok(Event::Incoming(Incoming::PubAck(_) | Incoming::PubComp(_))) => done += 1,
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                if done >= total || settings.qos == 0 {
                    break;
                }
                return Err(BenchError::Client(e.to_string()));
            }
        }
    }
    let _ = feeder.await;
    Ok(())
}

/// Runs one scenario against the broker in `settings`.
pub async fn run(settings: &Settings) -> Result<Report, BenchError> {
    let count = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    let sub_target = address(settings, settings.sub_port.unwrap_or(settings.port))?;
    for n in 0..settings.subscribers() {
        subs.push(if settings.batch > 0 {
            shapes::subscriber(
                sub_target,
                format!("bench-sub-{n}"),
                settings.qos,
                Arc::clone(&count),
            )
            .await
            .map_err(|e| BenchError::Client(e.to_string()))?
        } else {
            subscriber(settings, n, Arc::clone(&count)).await?
        });
    }
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = settings.pid.map(|pid| {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            while let Ok(kib) = process_rss_kib(pid) {
                peak.fetch_max(kib, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    });
    let published = settings.messages * settings.publishers() as u64;
    let expected = published * settings.subscribers() as u64;
    let cpu_before = settings.pid.map(process_cpu).transpose()?;
    let start = Instant::now();
    let deadline = start + settings.timeout;
    let mut pubs = Vec::new();
    let pub_target = address(settings, settings.port)?;
    for n in 0..settings.publishers() {
        if settings.batch > 0 {
            let s = settings.clone();
            pubs.push(tokio::spawn(async move {
                shapes::publisher(shapes::Publisher {
                    target: pub_target,
                    id: format!("bench-pub-{n}"),
                    topic: format!("bench/{n}"),
                    qos: s.qos,
                    payload: vec![0x5A; s.payload],
                    total: s.messages,
                    batch: s.batch,
                    window: s.window,
                })
                .await
                .map_err(|e| BenchError::Client(e.to_string()))
            }));
        } else {
            pubs.push(tokio::spawn(publisher(settings.clone(), n)));
        }
    }
    for p in pubs {
        match tokio::time::timeout_at(deadline.into(), p).await {
            Ok(Ok(result)) => result?,
            Ok(Err(e)) => return Err(BenchError::Client(e.to_string())),
            Err(_) => break,
        }
    }
    let delivered_while_publishing = count.load(Ordering::Relaxed);
    let publishing = start.elapsed();
    // Wait for the rest: until all arrived, the deadline, or (QoS 0) a second of silence.
    let mut last = count.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    let mut end = Instant::now();
    loop {
        let now = count.load(Ordering::Relaxed);
        if now != last {
            last = now;
            last_change = Instant::now();
            end = last_change;
        }
        if now >= expected
            || Instant::now() >= deadline
            || last_change.elapsed() > Duration::from_secs(1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cpu_after = settings.pid.map(process_cpu).transpose()?;
    if let Some(s) = sampler {
        s.abort();
    }
    for s in subs {
        s.abort();
    }
    Ok(Report {
        settings: settings.clone(),
        published,
        expected,
        delivered: count.load(Ordering::Relaxed),
        delivered_while_publishing,
        publishing,
        elapsed: end.max(start + Duration::from_micros(1)) - start,
        broker_cpu: cpu_before.zip(cpu_after).map(|(a, b)| b.saturating_sub(a)),
        peak_rss_kib: settings.pid.map(|_| peak.load(Ordering::Relaxed)),
    })
}

/// The broker's address for `port`.
fn address(settings: &Settings, port: u16) -> Result<std::net::SocketAddr, BenchError> {
    use std::net::ToSocketAddrs;
    (settings.host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| BenchError::Client(format!("address: {e}")))?
        .next()
        .ok_or_else(|| BenchError::Client("address: none".into()))
}

/// What a fixed-rate latency run measured.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Latency percentiles in microseconds: p50, p99, p99.9, max.
    pub percentiles_us: [u64; 4],
}

impl fmt::Display for LatencyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [p50, p99, p999, max] = self.percentiles_us;
        write!(
            f,
            "scenario=Latency sent={} received={} p50={p50}us p99={p99}us p99.9={p999}us max={max}us",
            self.sent, self.received
        )
    }
}

/// One publisher sends at `settings.rate` for `settings.duration`; each payload starts with
/// the send time (microseconds since the run began), so the subscriber measures end to end.
pub async fn run_latency(settings: &Settings) -> Result<LatencyReport, BenchError> {
    use tokio::io::AsyncWriteExt;
    let client_err = |e: std::io::Error| BenchError::Client(e.to_string());
    let target: std::net::SocketAddr = format!("{}:{}", settings.host, settings.port)
        .parse()
        .map_err(|e| BenchError::Client(format!("address: {e}")))?;
    let sub_target: std::net::SocketAddr = format!(
        "{}:{}",
        settings.host,
        settings.sub_port.unwrap_or(settings.port)
    )
    .parse()
    .map_err(|e| BenchError::Client(format!("address: {e}")))?;
    let level = settings.qos;
    // Raw sockets on both ends: the time between the stamp and the socket is the broker's.
    let sub = raw::connect(sub_target, "bench-lat-sub")
        .await
        .map_err(client_err)?;
    let (sub_read, mut sub_write) = sub.into_split();
    let mut sub_packets = raw::Packets::new(sub_read);
    sub_write
        .write_all(&raw::subscribe_packet(1, "bench/latency", level))
        .await
        .map_err(client_err)?;
    loop {
        match sub_packets.next().await.map_err(client_err)? {
            Some((0x90, _)) => break,
            Some(_) => continue,
            None => return Err(BenchError::Client("closed before SUBACK".into())),
        }
    }
    let origin = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let reader = tokio::spawn(async move {
        while let Ok(Some((first, body))) = sub_packets.next().await {
            let now = origin.elapsed().as_micros() as u64;
            match raw::receive(first, &body, &mut sub_write).await {
                Ok(Some(payload)) => {
                    let mut stamp = [0u8; 8];
                    if let Some(b) = payload.get(..8) {
                        stamp.copy_from_slice(b);
                    }
                    if tx
                        .send(now.saturating_sub(u64::from_be_bytes(stamp)))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }
    });
    let publisher = raw::connect(target, "bench-lat-pub")
        .await
        .map_err(client_err)?;
    let (pub_read, pub_write) = publisher.into_split();
    let pub_write = Arc::new(tokio::sync::Mutex::new(pub_write));
    // The publisher's acknowledgements: PUBREC gets its PUBREL; PUBACK/PUBCOMP are read.
    let acks = {
        let pub_write = Arc::clone(&pub_write);
        tokio::spawn(async move {
            let mut packets = raw::Packets::new(pub_read);
            while let Ok(Some((first, body))) = packets.next().await {
                if first >> 4 == 5 && body.len() >= 2 {
                    let id = u16::from_be_bytes([body[0], body[1]]);
                    let rel = raw::ack_packet(0x62, id);
                    if pub_write.lock().await.write_all(&rel).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let total = settings.rate * settings.duration.as_secs();
    let interval = Duration::from_secs_f64(1.0 / settings.rate as f64);
    let mut sent = 0u64;
    let start = Instant::now();
    let mut payload = vec![0u8; settings.payload.max(8)];
    while sent < total {
        let due = start + interval.mul_f64(sent as f64);
        tokio::time::sleep_until(due.into()).await;
        payload[..8].copy_from_slice(&(origin.elapsed().as_micros() as u64).to_be_bytes());
        // Packet ids 1..=65535, cycling; far fewer are ever in flight at once.
        let id = (sent % 65_535) as u16 + 1;
        let packet = raw::publish_packet("bench/latency", level, id, &payload);
        pub_write
            .lock()
            .await
            .write_all(&packet)
            .await
            .map_err(client_err)?;
        sent += 1;
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(5);
    while (latencies.len() as u64) < total {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(us)) => latencies.push(us),
            _ => break,
        }
    }
    reader.abort();
    acks.abort();
    latencies.sort_unstable();
    let pick = |q: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i.min(latencies.len() - 1)]
    };
    Ok(LatencyReport {
        sent,
        received: latencies.len() as u64,
        percentiles_us: [pick(0.5), pick(0.99), pick(0.999), pick(1.0)],
    })
}

/// What an idle-connections run measured.
#[derive(Debug, Clone)]
pub struct IdleReport {
    /// Connections that got a successful CONNACK.
    pub connected: usize,
    /// Time to open them all.
    pub elapsed: Duration,
    /// Broker CPU time spent on them, when `--pid` was given.
    pub broker_cpu: Option<Duration>,
    /// Broker RSS growth in KiB, when `--pid` was given.
    pub rss_growth_kib: Option<u64>,
}

impl fmt::Display for IdleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.connected.max(1) as f64;
        write!(
            f,
            "scenario=Idle connected={} elapsed={:.3}s connects/s={:.0}",
            self.connected,
            self.elapsed.as_secs_f64(),
            n / self.elapsed.as_secs_f64().max(1e-9)
        )?;
        if let Some(cpu) = self.broker_cpu {
            write!(
                f,
                " broker_cpu_per_connect={:.1}us",
                cpu.as_secs_f64() * 1e6 / n
            )?;
        }
        if let Some(kib) = self.rss_growth_kib {
            write!(
                f,
                " broker_rss_growth={kib}KiB per_connection={:.2}KiB",
                kib as f64 / n
            )?;
        }
        Ok(())
    }
}

/// Resident set size of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn process_rss_kib(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| BenchError::Proc(format!("/proc/{pid}/status: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| BenchError::Proc("no VmRSS".into()))
}

/// Opens `settings.connections` idle connections, spread over source addresses 127.N.M.1
/// (a fresh N per run), 64 at a time; keeps them open until the figures are read.
pub async fn run_idle(settings: &Settings) -> Result<IdleReport, BenchError> {
    let target: std::net::SocketAddr = format!("{}:{}", settings.host, settings.port)
        .parse()
        .map_err(|e| BenchError::Client(format!("address: {e}")))?;
    let loopback = target.ip().is_loopback() && target.is_ipv4();
    let rss_before = settings.pid.map(process_rss_kib).transpose()?;
    let cpu_before = settings.pid.map(process_cpu).transpose()?;
    let start = Instant::now();
    let mut open = Vec::with_capacity(settings.connections);
    let mut next = 0usize;
    let run = 1 + (std::process::id() % 250) as u8;
    while next < settings.connections && start.elapsed() < settings.timeout {
        let batch: Vec<_> = (next..settings.connections.min(next + 64))
            .map(|i| {
                tokio::spawn(async move {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    if loopback {
                        // 127.N.M.1: 20,000 connections per source address, and N differs
                        // from run to run, so neither the port range nor the TIME_WAIT
                        // sockets of an earlier run get in the way, and 127.0.0.1's ports
                        // stay free for the other scenarios.
                        let src = std::net::Ipv4Addr::new(127, run, (i / 20_000) as u8, 1);
                        socket.bind((src, 0).into())?;
                    }
                    let mut stream = socket.connect(target).await?;
                    raw::handshake(&mut stream, &format!("idle-{i}")).await?;
                    Ok::<_, std::io::Error>(stream)
                })
            })
            .collect();
        next += batch.len();
        for task in batch {
            match task.await {
                Ok(Ok(stream)) => open.push(stream),
                Ok(Err(e)) => {
                    return Err(BenchError::Client(format!(
                        "connection {}: {e}",
                        open.len()
                    )))
                }
                Err(e) => return Err(BenchError::Client(e.to_string())),
            }
        }
    }
    let elapsed = start.elapsed();
    // Let the broker settle (buffers of the handshake released) before reading its figures.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_after = settings.pid.map(process_cpu).transpose()?;
    let rss_after = settings.pid.map(process_rss_kib).transpose()?;
    let report = IdleReport {
        connected: open.len(),
        elapsed,
        broker_cpu: cpu_before.zip(cpu_after).map(|(a, b)| b.saturating_sub(a)),
        rss_growth_kib: rss_before.zip(rss_after).map(|(a, b)| b.saturating_sub(a)),
    };
    drop(open);
    Ok(report)
}

/// What an in-process run measured.
#[derive(Debug, Clone)]
pub struct InProcessReport {
    /// Messages published.
    pub published: u64,
    /// Deliveries received by the in-process subscribers.
    pub delivered: u64,
    /// From the first publish to the last delivery.
    pub elapsed: Duration,
    /// CPU time of this whole process (broker and clients) over the run.
    pub cpu: Duration,
}

impl fmt::Display for InProcessReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let cpu = self.cpu.as_secs_f64();
        write!(
            f,
            "scenario=InProcess published={} delivered={} elapsed={:.3}s delivered/s={:.0} \
             process_cpu={:.3}s per_cpu_s={:.0}",
            self.published,
            self.delivered,
            secs,
            self.delivered as f64 / secs,
            cpu,
            if cpu > 0.0 {
                self.delivered as f64 / cpu
            } else {
                0.0
            },
        )
    }
}

/// Runs an embedded Roost broker with in-process clients (no sockets) on the current
/// runtime: `publishers` clients each publish `messages` messages to `bench/<n>`, and
/// `subscribers` clients subscribed to `bench/#` count them.
pub async fn run_in_process(settings: &Settings) -> Result<InProcessReport, BenchError> {
    use roost_core::{Broker, ClientOptions};
    let err = |e: roost_core::ClientError| BenchError::Client(e.to_string());
    let broker = Broker::builder()
        .sys_interval(None)
        .build()
        .start()
        .await
        .map_err(|e| BenchError::Client(e.to_string()))?;
    let level = match settings.qos {
        0 => roost_core::codec::QoS::AtMostOnce,
        1 => roost_core::codec::QoS::AtLeastOnce,
        _ => roost_core::codec::QoS::ExactlyOnce,
    };
    let count = Arc::new(AtomicU64::new(0));
    let subscribers = settings.subscribers.max(1);
    let publishers = settings.publishers.max(1);
    let mut readers = Vec::new();
    for n in 0..subscribers {
        let (client, mut deliveries) = broker
            .client(ClientOptions::new(format!("bench-sub-{n}")))
            .await
            .map_err(err)?;
        client.subscribe("bench/#", level).await.map_err(err)?;
        let count = Arc::clone(&count);
        readers.push(tokio::spawn(async move {
            let _client = client;
            while deliveries.recv().await.is_some() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let published = settings.messages * publishers as u64;
    let expected = published * subscribers as u64;
    let payload = bytes::Bytes::from(vec![0x5A; settings.payload]);
    let cpu_before = process_cpu(std::process::id())?;
    let start = Instant::now();
    let mut senders = Vec::new();
    for n in 0..publishers {
        let (client, _deliveries) = broker
            .client(ClientOptions::new(format!("bench-pub-{n}")))
            .await
            .map_err(err)?;
        let payload = payload.clone();
        let total = settings.messages;
        senders.push(tokio::spawn(async move {
            let topic = roost_core::topic::TopicName::new(format!("bench/{n}"))
                .map_err(|e| BenchError::Client(e.to_string()))?;
            for _ in 0..total {
                client
                    .publish(topic.clone(), payload.clone(), level, false)
                    .await
                    .map_err(|e| BenchError::Client(e.to_string()))?;
            }
            Ok::<_, BenchError>(())
        }));
    }
    for s in senders {
        s.await.map_err(|e| BenchError::Client(e.to_string()))??;
    }
    let deadline = start + settings.timeout;
    let mut last = (0, Instant::now());
    while count.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        let now = count.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(1) {
            break; // QoS 0: what was dropped is not coming
        }
        tokio::task::yield_now().await;
    }
    let elapsed = start.elapsed();
    let cpu = process_cpu(std::process::id())?.saturating_sub(cpu_before);
    broker.shutdown().await;
    for r in readers {
        r.abort();
    }
    Ok(InProcessReport {
        published,
        delivered: count.load(Ordering::Relaxed),
        elapsed,
        cpu,
    })
}

/// Opens `settings.connections` idle MQTT connections to an embedded Roost broker over
/// in-memory byte streams (its duplex listener: the same codec and connection code as TCP,
/// but no file descriptors, so past a process's descriptor limit), and reports this
/// process's RSS growth and CPU time per connection (the client side holds only its end of
/// each stream).
pub async fn run_idle_in_process(settings: &Settings) -> Result<IdleReport, BenchError> {
    use roost_core::{Broker, Limits};
    let limits = Limits::default().with_max_connections(settings.connections.saturating_add(1));
    let (listener, connector) = roost_core::duplex_listener(4096);
    let broker = Broker::builder()
        .limits(limits)
        .listener("duplex", listener)
        .sys_interval(None)
        .build()
        .start()
        .await
        .map_err(|e| BenchError::Client(e.to_string()))?;
    let me = std::process::id();
    let rss_before = process_rss_kib(me)?;
    let cpu_before = process_cpu(me)?;
    let start = Instant::now();
    let mut open = Vec::with_capacity(settings.connections);
    for i in 0..settings.connections {
        if start.elapsed() > settings.timeout {
            break;
        }
        let fail = |e: std::io::Error| BenchError::Client(format!("connection {i}: {e}"));
        let mut stream = connector.connect().await.map_err(fail)?;
        raw::handshake(&mut stream, &format!("idle-{i}"))
            .await
            .map_err(fail)?;
        open.push(stream);
    }
    let elapsed = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = IdleReport {
        connected: open.len(),
        elapsed,
        broker_cpu: Some(process_cpu(me)?.saturating_sub(cpu_before)),
        rss_growth_kib: Some(process_rss_kib(me)?.saturating_sub(rss_before)),
    };
    drop(open);
    broker.shutdown().await;
    Ok(report)
}
