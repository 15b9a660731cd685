//! Tests of the fault-injecting proxy over real sockets on 127.0.0.1: each fault
//! does what it says to a small upstream started here and to the machine's
//! PostgreSQL, and schedules follow their seed.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use settle_tests::eventually;
use settle_tests::proxy::{parse_duration, Fault, Proxy, Schedule, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

/// An upstream that sends back whatever it reads.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// An upstream that answers any request with `size` bytes counting 0, 1, 2, … and keeps the connection open.
async fn big_response_server(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                if matches!(stream.read(&mut request).await, Ok(n) if n > 0) {
                    let body: Vec<u8> = (0..size).map(|i| i as u8).collect();
                    let _ = stream.write_all(&body).await;
                    let _ = stream.read(&mut request).await;
                }
            });
        }
    });
    addr
}

async fn proxy_to(upstream: SocketAddr) -> Proxy {
    Proxy::start("127.0.0.1:0".parse().unwrap(), upstream)
        .await
        .unwrap()
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    let mut answer = vec![0u8; message.len()];
    timeout(DEADLINE, stream.read_exact(&mut answer))
        .await
        .expect("echo within the deadline")
        .expect("reading the echo");
    answer
}

/// Reads until the stream ends, returning what arrived and how it ended.
async fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("the stream ends within the deadline")
        {
            Ok(0) => return (received, Ok(())),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(error) => return (received, Err(error)),
        }
    }
}

#[tokio::test]
async fn forwards_both_ways_untouched_without_a_fault() {
    let proxy = proxy_to(echo_server().await).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut client, b"hello").await, b"hello");
    assert_eq!(round_trip(&mut client, b"again").await, b"again");
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.faults_injected(), 0);
}

#[tokio::test]
async fn latency_delays_a_round_trip_by_at_least_the_delay_each_way() {
    let proxy = proxy_to(echo_server().await).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let delay = Duration::from_millis(150);
    proxy.set_fault(Fault::Latency(delay));
    let started = Instant::now();
    assert_eq!(round_trip(&mut client, b"slow").await, b"slow");
    assert!(
        started.elapsed() >= 2 * delay,
        "round trip took {:?}",
        started.elapsed()
    );
    assert_eq!(proxy.faults_injected(), 1);
}

#[tokio::test]
async fn drop_closes_new_connections_at_once() {
    let proxy = proxy_to(echo_server().await).await;
    proxy.set_fault(Fault::Drop);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let (received, _) = read_to_end(&mut client).await;
    assert!(received.is_empty());
}

#[tokio::test]
async fn drop_closes_existing_connections_and_lifting_it_lets_new_ones_through() {
    let proxy = proxy_to(echo_server().await).await;
    let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut before, b"hello").await, b"hello");
    proxy.set_fault(Fault::Drop);
    let (received, _) = read_to_end(&mut before).await;
    assert!(received.is_empty());

    proxy.set_fault(Fault::None);
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut after, b"back").await, b"back");
}

#[tokio::test]
async fn reset_mid_response_forwards_n_bytes_then_resets_the_connection() {
    let proxy = proxy_to(big_response_server(64 * 1024).await).await;
    proxy.set_fault(Fault::ResetMidResponse { after_bytes: 100 });
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"GET /").await.unwrap();
    let (received, end) = read_to_end(&mut client).await;
    let expected: Vec<u8> = (0..100).map(|i| i as u8).collect();
    assert_eq!(received, expected, "exactly the first 100 bytes arrive");
    let error = end.expect_err("the connection ends in a reset, not a clean EOF");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn reset_counts_bytes_from_when_the_fault_is_set_on_an_open_connection() {
    let proxy = proxy_to(echo_server().await).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut client, b"0123456789").await, b"0123456789");
    proxy.set_fault(Fault::ResetMidResponse { after_bytes: 4 });
    client.write_all(b"abcdefgh").await.unwrap();
    let (received, end) = read_to_end(&mut client).await;
    assert_eq!(received, b"abcd");
    assert_eq!(
        end.expect_err("reset").kind(),
        std::io::ErrorKind::ConnectionReset
    );
}

#[tokio::test]
async fn blackhole_accepts_but_never_answers_new_connections() {
    let proxy = proxy_to(echo_server().await).await;
    proxy.set_fault(Fault::Blackhole);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"anyone there?").await.unwrap();
    let mut buf = [0u8; 16];
    let read = timeout(Duration::from_millis(300), client.read(&mut buf)).await;
    assert!(read.is_err(), "the read timed out, got {read:?}");

    // What was sent into the blackhole is gone, so the connection is closed when it lifts.
    proxy.set_fault(Fault::None);
    let (received, _) = read_to_end(&mut client).await;
    assert!(received.is_empty());
}

#[tokio::test]
async fn blackhole_stalls_existing_connections_until_it_lifts() {
    let proxy = proxy_to(echo_server().await).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut client, b"hello").await, b"hello");
    proxy.set_fault(Fault::Blackhole);
    client.write_all(b"stuck").await.unwrap();
    let mut answer = [0u8; 5];
    let read = timeout(Duration::from_millis(300), client.read_exact(&mut answer)).await;
    assert!(read.is_err(), "the read timed out, got {read:?}");

    proxy.set_fault(Fault::None);
    timeout(DEADLINE, client.read_exact(&mut answer))
        .await
        .expect("the stalled bytes arrive once the blackhole lifts")
        .unwrap();
    assert_eq!(&answer, b"stuck");
}

#[tokio::test]
async fn a_stall_holds_the_open_connections_for_good_and_lets_new_ones_through() {
    let proxy = proxy_to(echo_server().await).await;
    let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut old, b"hello").await, b"hello");
    proxy.stall_open_connections();
    old.write_all(b"stuck").await.unwrap();

    let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut new, b"fresh").await, b"fresh");
    // No fault to lift: the stalled connection neither answers nor closes.
    proxy.set_fault(Fault::None);
    let mut answer = [0u8; 5];
    let read = timeout(Duration::from_millis(500), old.read(&mut answer)).await;
    assert!(read.is_err(), "the read timed out, got {read:?}");
    assert_eq!(round_trip(&mut new, b"again").await, b"again");

    proxy.stop().await;
    let (received, _) = read_to_end(&mut old).await;
    assert!(
        received.is_empty(),
        "nothing stalled arrives, even at the end"
    );
}

#[tokio::test]
async fn stop_closes_the_port_and_every_connection() {
    let proxy = proxy_to(echo_server().await).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut client, b"hello").await, b"hello");
    proxy.stop().await;
    let (received, _) = read_to_end(&mut client).await;
    assert!(received.is_empty());
    assert!(TcpStream::connect(proxy.addr()).await.is_err());
}

#[tokio::test]
async fn refuses_addresses_off_loopback() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // TEST-NET-1: refused before any socket is opened.
    let elsewhere: SocketAddr = "192.0.2.1:5432".parse().unwrap();
    let error = Proxy::start(loopback, elsewhere)
        .await
        .err()
        .expect("a non-loopback upstream is refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(Proxy::start("0.0.0.0:0".parse().unwrap(), loopback)
        .await
        .is_err());
}

async fn select_one(client: &tokio_postgres::Client) -> Result<i32, tokio_postgres::Error> {
    Ok(client.query_one("SELECT 1", &[]).await?.get(0))
}

#[tokio::test]
async fn postgres_through_the_proxy_fails_while_dropped_and_works_again_after() {
    let proxy = proxy_to("127.0.0.1:5432".parse().unwrap()).await;
    let connect = || async {
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/postgres?connect_timeout=5",
            proxy.addr().port()
        );
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>(client)
    };
    let client = connect()
        .await
        .expect("PostgreSQL must be running on 127.0.0.1:5432");
    assert_eq!(select_one(&client).await.unwrap(), 1);

    proxy.set_fault(Fault::Drop);
    assert!(
        select_one(&client).await.is_err(),
        "the open connection is cut"
    );
    assert!(connect().await.is_err(), "new connections are refused");

    proxy.set_fault(Fault::None);
    let client = connect().await.expect("connecting once the fault lifts");
    assert_eq!(select_one(&client).await.unwrap(), 1);
}

#[test]
fn the_same_seed_gives_the_same_schedule_and_different_seeds_differ() {
    let schedule = |seed| {
        Schedule::random(
            seed,
            Duration::from_secs(60),
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
    };
    assert_eq!(schedule(42), schedule(42));
    assert_ne!(schedule(42), schedule(43));
    assert!(!schedule(42).steps.is_empty());
}

#[test]
fn a_random_schedule_stays_in_order_within_its_duration_and_uses_every_fault() {
    let duration = Duration::from_secs(60);
    let max_fault = Duration::from_secs(1);
    let schedule = Schedule::random(7, duration, Duration::from_millis(200), max_fault);
    let mut end = Duration::ZERO;
    for step in &schedule.steps {
        assert!(step.at >= end, "{step:?} overlaps the step before");
        assert!(step.length > Duration::ZERO && step.length <= max_fault);
        assert_ne!(step.fault, Fault::None);
        end = step.at + step.length;
    }
    assert!(end <= duration);
    let has = |kind: fn(&Fault) -> bool| schedule.steps.iter().any(|s| kind(&s.fault));
    assert!(has(|f| matches!(f, Fault::Latency(_))));
    assert!(has(|f| matches!(f, Fault::Drop)));
    assert!(has(|f| matches!(f, Fault::ResetMidResponse { .. })));
    assert!(has(|f| matches!(f, Fault::Blackhole)));
}

#[tokio::test]
async fn run_schedule_applies_each_fault_for_its_length_then_lifts_it() {
    let proxy = proxy_to(echo_server().await).await;
    let schedule = Schedule {
        steps: vec![
            Step {
                at: Duration::ZERO,
                fault: Fault::Drop,
                length: Duration::from_millis(300),
            },
            Step {
                at: Duration::from_millis(600),
                fault: Fault::Latency(Duration::from_millis(10)),
                length: Duration::from_millis(300),
            },
        ],
    };
    let mut changes = proxy.watch_fault();
    let run = proxy.run_schedule(schedule);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        timeout(DEADLINE, changes.changed())
            .await
            .expect("the schedule moves on within the deadline")
            .unwrap();
        seen.push(*changes.borrow_and_update());
    }
    assert_eq!(
        seen,
        [
            Fault::Drop,
            Fault::None,
            Fault::Latency(Duration::from_millis(10)),
            Fault::None
        ]
    );
    timeout(DEADLINE, run).await.unwrap().unwrap();
    assert_eq!(proxy.faults_injected(), 2);
    assert_eq!(proxy.fault(), Fault::None);
}

#[test]
fn faults_and_durations_read_as_they_print() {
    for text in ["none", "latency:200ms", "drop", "reset:100", "blackhole"] {
        let fault: Fault = text.parse().unwrap();
        assert_eq!(fault.to_string(), text);
    }
    assert!("latency".parse::<Fault>().is_err());
    assert!("reset:lots".parse::<Fault>().is_err());
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
    assert!(parse_duration("2").is_err());
    assert!(parse_duration("fast").is_err());
}

#[tokio::test]
async fn the_program_runs_a_fixed_fault_and_prints_a_summary() {
    let upstream = echo_server().await;
    let listen = settle_tests::free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_settle-proxy"))
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--upstream", &upstream.to_string()])
        .args(["--fault", "latency:20ms", "--for", "3s"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let mut client = eventually("the proxy listening", DEADLINE, || async {
        TcpStream::connect(addr).await.ok()
    })
    .await;
    assert_eq!(round_trip(&mut client, b"hello").await, b"hello");
    drop(client);

    let mut stdout = child.stdout.take().unwrap();
    let mut output = String::new();
    timeout(DEADLINE, stdout.read_to_string(&mut output))
        .await
        .expect("the program exits after --for")
        .unwrap();
    assert!(child.wait().await.unwrap().success());
    assert!(output.contains("fault=latency:20ms"), "{output}");
    let summary = output.lines().last().unwrap_or_default();
    assert_eq!(summary, "proxy seed=- connections=1 faults=1", "{output}");
}

#[tokio::test]
async fn the_program_refuses_a_target_off_loopback() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_settle-proxy"))
        .args(["--listen", "127.0.0.1:0", "--upstream", "192.0.2.1:5432"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}
