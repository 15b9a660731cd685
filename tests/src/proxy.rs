//! A fault-injecting TCP proxy for chaos tests. It sits on 127.0.0.1 between a
//! coordinator and a participant, Postgres or Redis, and adds latency, drops
//! connections, resets them mid-response or blackholes them: set by hand, or on a
//! schedule drawn from a seed so that a failing run can be replayed. It can also
//! stall the connections open at one moment for good, while new ones pass.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// What the proxy does to the traffic passing through it right now.
///
/// Written and parsed as `none`, `latency:200ms`, `drop`, `reset:100` and `blackhole`:
///
/// ```
/// use settle_tests::proxy::Fault;
/// let fault: Fault = "reset:100".parse().unwrap();
/// assert_eq!(fault, Fault::ResetMidResponse { after_bytes: 100 });
/// assert_eq!(fault.to_string(), "reset:100");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward everything untouched.
    #[default]
    None,
    /// Hold every chunk this long before forwarding it, in both directions.
    Latency(Duration),
    /// Accept new connections and close them at once; close the existing ones.
    Drop,
    /// Forward at most `after_bytes` more bytes from upstream to the client, then
    /// reset both sides (RST, not FIN), as a peer crashing mid-response would.
    ResetMidResponse {
        /// How many upstream bytes still reach the client before the reset.
        after_bytes: usize,
    },
    /// Accept new connections and read from them, but never forward or answer;
    /// existing connections stall, neither side hearing from the other, until the
    /// fault lifts. Connections born in the blackhole are closed when it lifts,
    /// since what they sent is gone.
    Blackhole,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("none"),
            Fault::Latency(delay) => write!(f, "latency:{}ms", delay.as_millis()),
            Fault::Drop => f.write_str("drop"),
            Fault::ResetMidResponse { after_bytes } => write!(f, "reset:{after_bytes}"),
            Fault::Blackhole => f.write_str("blackhole"),
        }
    }
}

/// A fault, duration or address that could not be read from text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

impl FromStr for Fault {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Fault, ParseError> {
        let (kind, argument) = match text.split_once(':') {
            Some((kind, argument)) => (kind, Some(argument)),
            None => (text, None),
        };
        match (kind, argument) {
            ("none", None) => Ok(Fault::None),
            ("latency", Some(delay)) => Ok(Fault::Latency(parse_duration(delay)?)),
            ("drop", None) => Ok(Fault::Drop),
            ("reset", Some(bytes)) => {
                let after_bytes = bytes
                    .parse()
                    .map_err(|_| ParseError(format!("reset:{bytes}: not a byte count")))?;
                Ok(Fault::ResetMidResponse { after_bytes })
            }
            ("blackhole", None) => Ok(Fault::Blackhole),
            _ => Err(ParseError(format!(
                "unknown fault {text:?}: expected none, latency:200ms, drop, reset:100 or blackhole"
            ))),
        }
    }
}

/// Reads a duration written as a whole number and a unit: `250ms`, `2s` or `1m`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(settle_tests::proxy::parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    let invalid = || ParseError(format!("{text:?} is not a duration like 250ms, 2s or 1m"));
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number.saturating_mul(60))),
        _ => Err(invalid()),
    }
}

/// One fault of a [`Schedule`]: `fault` from `at` after the start, for `length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// When the fault starts, counted from the start of the schedule.
    pub at: Duration,
    /// The fault in force during the step.
    pub fault: Fault,
    /// How long it lasts before traffic flows untouched again.
    pub length: Duration,
}

/// Faults over time, in order and never overlapping; between steps there is no fault.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule {
    /// The steps, sorted by `at`.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// A random schedule within `duration`, the same for the same seed: gaps
    /// between faults drawn uniformly from zero to twice `mean_gap`, lengths from
    /// 1ms to `max_fault_len`, and each fault one of latency (10–300ms), drop,
    /// reset after 0–4095 bytes, or blackhole.
    ///
    /// ```
    /// use std::time::Duration;
    /// use settle_tests::proxy::Schedule;
    /// let s = |seed| Schedule::random(seed, Duration::from_secs(60), Duration::from_secs(2), Duration::from_secs(1));
    /// assert_eq!(s(7), s(7));
    /// ```
    pub fn random(
        seed: u64,
        duration: Duration,
        mean_gap: Duration,
        max_fault_len: Duration,
    ) -> Schedule {
        // Whole microseconds keep the draws integer, so a seed means the same
        // schedule on every machine.
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut steps = Vec::new();
        let mut now = Duration::ZERO;
        loop {
            let gap = rng.gen_range(0..=micros(mean_gap).saturating_mul(2));
            let at = now.saturating_add(Duration::from_micros(gap));
            if at >= duration {
                break;
            }
            let length =
                Duration::from_micros(rng.gen_range(1_000..=micros(max_fault_len).max(1_000)))
                    .min(duration - at);
            let fault = match rng.gen_range(0..4) {
                0 => Fault::Latency(Duration::from_millis(rng.gen_range(10..=300))),
                1 => Fault::Drop,
                2 => Fault::ResetMidResponse {
                    after_bytes: rng.gen_range(0..4096),
                },
                _ => Fault::Blackhole,
            };
            steps.push(Step { at, fault, length });
            now = at + length;
        }
        Schedule { steps }
    }
}

struct Shared {
    upstream: SocketAddr,
    faults: watch::Sender<Fault>,
    /// Bumped by [`Proxy::stall_open_connections`]: a connection accepted before
    /// the latest bump stalls.
    stalls: watch::Sender<u64>,
    connections: AtomicU64,
    faults_injected: AtomicU64,
}

impl Shared {
    fn set_fault(&self, fault: Fault) {
        if fault != Fault::None {
            self.faults_injected.fetch_add(1, Ordering::Relaxed);
        }
        self.faults.send_replace(fault);
    }
}

/// A running proxy: listens on [`Proxy::addr`] and forwards every connection to
/// the upstream address, through whatever [`Fault`] is set. Stops when dropped.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use settle_tests::proxy::{Fault, Proxy};
/// let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), "127.0.0.1:5432".parse().unwrap()).await?;
/// // point the coordinator at proxy.addr() instead of 127.0.0.1:5432, then:
/// proxy.set_fault(Fault::Drop);
/// # Ok(()) }
/// ```
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// Binds `listen` (port 0 picks a free port) and starts forwarding to
    /// `upstream`, with no fault. Both must be loopback addresses: this workplace
    /// allows no other targets.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Proxy> {
        ensure_loopback("listen", listen)?;
        ensure_loopback("upstream", upstream)?;
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            faults: watch::channel(Fault::None).0,
            stalls: watch::channel(0).0,
            connections: AtomicU64::new(0),
            faults_injected: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Proxy {
            addr,
            shared,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Puts `fault` in force for new and existing connections alike.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.set_fault(fault);
    }

    /// The fault in force now.
    pub fn fault(&self) -> Fault {
        *self.shared.faults.borrow()
    }

    /// Follows the fault in force, e.g. to log every change.
    pub fn watch_fault(&self) -> watch::Receiver<Fault> {
        self.shared.faults.subscribe()
    }

    /// Stalls every connection open now, for good: nothing more is forwarded in
    /// either direction and neither side is closed or reset, as when a peer hangs
    /// or the network between them drops every packet. Each side's kernel still
    /// accepts what is sent to it. Connections accepted later pass through as
    /// usual (under the fault in force). Ends with the proxy.
    pub fn stall_open_connections(&self) {
        self.shared.stalls.send_modify(|stalls| *stalls += 1);
    }

    /// How many client connections the proxy has accepted.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// How many times a fault other than [`Fault::None`] was put in force, by
    /// hand or by a schedule.
    pub fn faults_injected(&self) -> u64 {
        self.shared.faults_injected.load(Ordering::Relaxed)
    }

    /// Applies `schedule` from now on: each step's fault at its time, for its
    /// length, then [`Fault::None`]. Abort the handle to stop early; the proxy
    /// keeps whatever fault was in force then.
    pub fn run_schedule(&self, schedule: Schedule) -> JoinHandle<()> {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let start = Instant::now();
            for step in schedule.steps {
                tokio::time::sleep_until(start + step.at).await;
                shared.set_fault(step.fault);
                tokio::time::sleep_until(start + step.at + step.length).await;
                shared.set_fault(Fault::None);
            }
        })
    }

    /// Stops listening and closes every connection; returns once the port is closed.
    pub async fn stop(&self) {
        let accept = self
            .accept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(accept) = accept {
            accept.abort();
            // The task ends as cancelled; its listener and connections are gone then.
            let _ = accept.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let accept = self
            .accept
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(accept) = accept.take() {
            accept.abort();
        }
    }
}

fn ensure_loopback(what: &str, addr: SocketAddr) -> io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what} address {addr} is not a loopback address: \
                 the proxy only works on 127.0.0.0/8 and ::1"
            ),
        ))
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping the set when this task is aborted aborts every connection with it.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    let stalls = shared.stalls.subscribe();
                    connections.spawn(serve(client, shared.upstream, shared.faults.subscribe(), stalls));
                }
                Err(error) => {
                    // Out of file descriptors, say: back off rather than spin.
                    tracing::warn!(%error, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sender closed its side cleanly; the other direction may go on.
    Eof,
    /// Close both sides now.
    Close,
    /// Reset both sides now.
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to upstream.
    Up,
    /// Upstream to client.
    Down,
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut faults: watch::Receiver<Fault>,
    mut stalls: watch::Receiver<u64>,
) {
    let born = *stalls.borrow_and_update();
    let _ = client.set_nodelay(true);
    let fault = *faults.borrow_and_update();
    match fault {
        Fault::Drop => return,
        Fault::Blackhole => return swallow(client, faults).await,
        _ => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let end = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        tokio::select! {
            end = both(
                pump(Direction::Up, client_read, server_write, faults.clone()),
                pump(Direction::Down, server_read, client_write, faults),
            ) => end,
            () = stalled(&mut stalls, born) => {
                // Both sockets stay open, and nothing moves, until the proxy stops.
                return std::future::pending().await;
            }
        }
    };
    if end == End::Reset {
        // SO_LINGER 0 makes the close below send RST instead of FIN.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Runs both directions until both reached EOF or either wants the connection gone.
async fn both(
    up: impl std::future::Future<Output = End>,
    down: impl std::future::Future<Output = End>,
) -> End {
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        let end = tokio::select! {
            end = &mut up, if !up_done => { up_done = true; end }
            end = &mut down, if !down_done => { down_done = true; end }
        };
        match end {
            End::Eof if !(up_done && down_done) => continue,
            End::Eof => return End::Close,
            other => return other,
        }
    }
}

/// Resolves once a stall is called for after the connection was accepted.
async fn stalled(stalls: &mut watch::Receiver<u64>, born: u64) {
    loop {
        if *stalls.borrow_and_update() > born {
            return;
        }
        if stalls.changed().await.is_err() {
            // The proxy is gone; the connection ends with its task.
            return std::future::pending().await;
        }
    }
}

/// A connection accepted into a blackhole: read and discard until it closes or the
/// blackhole lifts.
async fn swallow(mut client: TcpStream, mut faults: watch::Receiver<Fault>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            changed = faults.changed() => {
                if changed.is_err() || *faults.borrow_and_update() != Fault::Blackhole {
                    return;
                }
            }
            read = client.read(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
}

/// Forwards one direction through the fault in force.
/// The next fault once the schedule changes; None when the proxy is gone.
async fn next_fault(faults: &mut watch::Receiver<Fault>) -> Option<Fault> {
    faults.changed().await.ok()?;
    Some(*faults.borrow_and_update())
}

async fn pump(
    direction: Direction,
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    mut faults: watch::Receiver<Fault>,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    // Bytes sent downstream since the current fault came into force, for resets.
    let mut sent = 0usize;
    let mut fault = *faults.borrow_and_update();
    loop {
        match fault {
            Fault::Drop => return End::Close,
            Fault::Blackhole => {
                // Stall without reading, so nothing is lost when the fault lifts.
                let Some(next) = next_fault(&mut faults).await else {
                    return End::Close;
                };
                fault = next;
                sent = 0;
                continue;
            }
            Fault::ResetMidResponse { after_bytes }
                if direction == Direction::Down && sent >= after_bytes =>
            {
                return End::Reset;
            }
            _ => {}
        }
        let read = tokio::select! {
            next = next_fault(&mut faults) => {
                let Some(next) = next else {
                    return End::Close;
                };
                fault = next;
                sent = 0;
                continue;
            }
            read = from.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) => {
                let _ = to.shutdown().await;
                return End::Eof;
            }
            Ok(n) => n,
            Err(_) => return End::Close,
        };
        // The fault may have changed while this chunk was on its way: the chunk
        // gets the fault in force now, like a packet on the wire would.
        if faults.has_changed().unwrap_or(false) {
            fault = *faults.borrow_and_update();
            sent = 0;
        }
        let n = loop {
            match fault {
                Fault::Drop => return End::Close,
                Fault::Blackhole => {
                    // Hold the chunk until the fault lifts, then treat it as just read.
                    let Some(next) = next_fault(&mut faults).await else {
                        return End::Close;
                    };
                    fault = next;
                    sent = 0;
                }
                Fault::Latency(delay) => {
                    tokio::time::sleep(delay).await;
                    break n;
                }
                Fault::ResetMidResponse { after_bytes } if direction == Direction::Down => {
                    break n.min(after_bytes.saturating_sub(sent));
                }
                _ => break n,
            }
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return End::Close;
        }
        sent = sent.saturating_add(n);
    }
}
