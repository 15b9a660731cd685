//! The coordinator's outgoing HTTP, participant calls and webhook deliveries alike:
//! POSTs through hyper's pooled HTTP/1.1 client, used directly (it is what a
//! general-purpose client wraps; the wrapping cost a sixth of the coordinator's
//! instructions per saga). Connections are kept alive per host; HTTPS goes
//! through rustls with the roots of `tls::participant_client_config`; host names
//! never resolve to link-local or metadata addresses (DNS rebinding); no redirect
//! is followed and no proxy variable is honoured: every call goes straight to the
//! address its URL names, as the allow-list judged it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::allow::never_allowed;

const AGENT: &str = concat!("settle/", env!("CARGO_PKG_VERSION"));

/// How long an idle kept-alive connection stays in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;

/// The client every outgoing POST goes through; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Outbound {
    client: Client<Connector, Full<Bytes>>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a POST brought no whole answer, in words an operator can act on (the
/// timeline records them) and without internal detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("timed out")]
    TimedOut,
    #[error("connection failed")]
    ConnectFailed,
    #[error("response body broken off")]
    BodyBrokenOff,
    #[error("status {status}: response body exceeds {limit} bytes")]
    BodyTooLarge { status: u16, limit: usize },
    /// The request could not be sent as given (a URL or header value HTTP cannot
    /// carry), or the connection broke before an answer began.
    #[error("request failed")]
    Failed,
}

impl Outbound {
    /// A client trusting the system's roots and `ca_file`'s certificates for
    /// HTTPS, keeping at most `idle_per_host` idle connections per host.
    pub fn new(ca_file: Option<&Path>, idle_per_host: usize) -> anyhow::Result<Outbound> {
        let tls = crate::tls::participant_client_config(ca_file)?;
        let mut http = HttpConnector::new_with_resolver(GuardedResolver);
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(idle_per_host)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Outbound { client })
    }

    /// POSTs `body` as JSON to `url` with `headers` (names as the protocol spells
    /// them), and reads the whole answer, all within `timeout`. A body longer than
    /// `max_response_bytes` is not read further.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<Answer, Failure> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(target(url)?)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, AGENT);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).map_err(|_| Failure::Failed)?;
        tokio::time::timeout(timeout, self.exchange(request, max_response_bytes))
            .await
            .unwrap_or(Err(Failure::TimedOut))
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        max_response_bytes: usize,
    ) -> Result<Answer, Failure> {
        let response = self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                Failure::ConnectFailed
            } else {
                Failure::Failed
            }
        })?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Failure::BodyBrokenOff)?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > max_response_bytes {
                    return Err(Failure::BodyTooLarge {
                        status,
                        limit: max_response_bytes,
                    });
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(Answer {
            status,
            body: bytes,
        })
    }
}

/// `url` as a request target. Participant URLs were checked as URLs when their
/// definition was registered; what http's stricter parser refuses (a host in
/// Unicode, a space in the path, a fragment) goes out in the URL's ASCII form.
fn target(url: &str) -> Result<Uri, Failure> {
    match Uri::try_from(url) {
        Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => Ok(uri),
        _ => {
            let mut parsed = url::Url::parse(url).map_err(|_| Failure::Failed)?;
            parsed.set_fragment(None);
            Uri::try_from(parsed.as_str()).map_err(|_| Failure::Failed)
        }
    }
}

/// The system resolver, minus the addresses the coordinator never calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

type Resolving =
    Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str();
            let callable: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
                .await?
                .filter(|a| never_allowed(a.ip()).is_none())
                .collect();
            if callable.is_empty() {
                return Err(std::io::Error::other(format!(
                    "{host} resolves only to link-local or metadata addresses, which are never called"
                )));
            }
            Ok(callable.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tower_service::Service;

    use super::*;

    /// A real HTTP/1.1 server on loopback that answers each request by its path
    /// with canned bytes, and hands every request it read to the test.
    async fn canned_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (seen, requests) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !String::from_utf8_lossy(&request).contains("\r\n\r\n{}") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let request = String::from_utf8_lossy(&request).into_owned();
                    let path = request.split(' ').nth(1).unwrap_or("").to_string();
                    let _ = seen.send(request);
                    let answer: &[u8] = match path.as_str() {
                        "/ok" => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 11\r\n\r\n{\"done\":1}\n",
                        "/big" => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 64\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123",
                        "/broken" => b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 100\r\n\r\nabc",
                        _ => {
                            // "/slow": never answers.
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                    };
                    let _ = socket.write_all(answer).await;
                    // "/broken" ends here, 97 bytes short; the others are whole.
                });
            }
        });
        (base, requests)
    }

    #[tokio::test]
    async fn a_post_carries_its_headers_and_each_failure_has_its_words() {
        let (base, mut requests) = canned_server().await;
        let out = Outbound::new(None, 4).unwrap();
        let post = |path: &str, max: usize, timeout_ms: u64| {
            let out = out.clone();
            let url = format!("{base}{path}");
            async move {
                out.post(
                    &url,
                    &[("Idempotency-Key", "t:a:action")],
                    Bytes::from_static(b"{}"),
                    Duration::from_millis(timeout_ms),
                    max,
                )
                .await
            }
        };

        let answer = post("/ok", 1024, 5_000).await.unwrap();
        assert_eq!(
            (answer.status, &answer.body[..]),
            (200, &b"{\"done\":1}\n"[..])
        );
        let request = requests.recv().await.unwrap().to_ascii_lowercase();
        for line in [
            "post /ok http/1.1",
            "idempotency-key: t:a:action",
            "content-type: application/json",
            "content-length: 2",
            "user-agent: settle/",
        ] {
            assert!(request.contains(line), "{line} missing from {request}");
        }

        assert_eq!(
            post("/big", 10, 5_000).await.unwrap_err(),
            Failure::BodyTooLarge {
                status: 200,
                limit: 10
            }
        );
        assert_eq!(
            post("/broken", 1024, 5_000).await.unwrap_err(),
            Failure::BodyBrokenOff
        );
        assert_eq!(
            post("/slow", 1024, 200).await.unwrap_err(),
            Failure::TimedOut
        );
        assert_eq!(Failure::TimedOut.to_string(), "timed out");

        // A port nothing listens on.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        let refused = out
            .post(&url, &[], Bytes::new(), Duration::from_secs(5), 1024)
            .await
            .unwrap_err();
        assert_eq!(refused, Failure::ConnectFailed);
        assert_eq!(refused.to_string(), "connection failed");
    }

    #[tokio::test]
    async fn names_never_resolve_to_metadata_addresses() {
        let mut resolver = GuardedResolver;
        let local: Vec<SocketAddr> = resolver
            .call(Name::from_str("localhost").unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!local.is_empty() && local.iter().all(|a| a.ip().is_loopback()));
        // getaddrinfo answers a numeric name with itself: the filter is what refuses it.
        let error = resolver
            .call(Name::from_str("169.254.169.254").unwrap())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("never called"), "{error}");
    }

    #[test]
    fn targets_are_taken_as_given_or_in_their_ascii_form() {
        assert_eq!(
            target("http://127.0.0.1:8080/a?b=1").unwrap(),
            "http://127.0.0.1:8080/a?b=1"
        );
        assert_eq!(
            target("http://bücher.example/a b#top").unwrap(),
            "http://xn--bcher-kva.example/a%20b"
        );
        assert_eq!(target("not a url"), Err(Failure::Failed));
    }
}
