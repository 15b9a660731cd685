//! A typed client for the coordinator's REST API (DESIGN.md §6): registering saga
//! definitions and starting, reading, waiting for and cancelling sagas. The DTOs are
//! the ones in [`crate::api`], so client and coordinator cannot drift apart.

// `Error::Api` carries the coordinator's `Problem` by value so callers can match on
// it directly; errors are the rare path next to an HTTP round trip, so the larger
// `Result` costs nothing that matters.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::api::{Problem, Saga, SagaDefinition, SagaDefinitionSummary, StartSaga};
use crate::protocol::IDEMPOTENCY_KEY_HEADER;

/// How a coordinator call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The coordinator answered with an `application/problem+json` error.
    #[error("the coordinator answered {status}: {} ({})", problem.detail, problem.code)]
    Api { status: u16, problem: Problem },
    /// The request did not get an answer (connection refused, timeout, ...).
    #[error("calling the coordinator failed")]
    Http(#[from] reqwest::Error),
    /// The answer was not what the API promises.
    #[error("cannot read the coordinator's {status} answer: {message}")]
    Decode { status: u16, message: String },
    /// The base URL or a path segment does not make a URL.
    #[error("invalid coordinator URL {0:?}")]
    InvalidUrl(String),
    /// The bearer token cannot be sent as a header.
    #[error("the bearer token contains characters not allowed in a header")]
    InvalidToken,
}

impl Error {
    /// The problem's stable `code`, when the coordinator sent one.
    ///
    /// ```
    /// use settle_participant::{api::Problem, client::Error};
    /// let problem = Problem { type_: "about:blank".into(), title: "Not Found".into(), status: 404,
    ///     code: "saga_not_found".into(), detail: "no such saga".into(), field: None };
    /// assert_eq!(Error::Api { status: 404, problem }.code(), Some("saga_not_found"));
    /// ```
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { problem, .. } => Some(&problem.code),
            _ => None,
        }
    }
}

/// Shorthand for client results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Extra time the HTTP request gets beyond a server-side `?wait=`.
const WAIT_SLACK: Duration = Duration::from_secs(30);

/// A client for one coordinator (or a load balancer in front of several).
///
/// ```no_run
/// # async fn run() -> Result<(), settle_participant::client::Error> {
/// use std::time::Duration;
/// use settle_participant::client::CoordinatorClient;
///
/// let coordinator = CoordinatorClient::new("http://127.0.0.1:7000")?.with_token("s3cret")?;
/// let saga = coordinator
///     .start_saga(
///         "order-checkout",
///         serde_json::json!({ "sku": "widget", "quantity": 1, "amount": 25.0 }),
///         Some("order-1234"),
///         Some(Duration::from_secs(5)),
///     )
///     .await?;
/// println!("{} is {}", saga.id, saga.state);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: Url,
    token: Option<HeaderValue>,
}

impl CoordinatorClient {
    /// A client for the coordinator at `base_url` (e.g. `http://127.0.0.1:7000`).
    ///
    /// ```
    /// use settle_participant::client::CoordinatorClient;
    /// assert!(CoordinatorClient::new("http://127.0.0.1:7000").is_ok());
    /// assert!(CoordinatorClient::new("not a url").is_err());
    /// ```
    pub fn new(base_url: impl AsRef<str>) -> Result<Self> {
        let base_url = base_url.as_ref();
        let base = Url::parse(base_url).map_err(|_| Error::InvalidUrl(base_url.to_owned()))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(Error::InvalidUrl(base_url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(WAIT_SLACK)
            .build()?;
        Ok(CoordinatorClient {
            http,
            base,
            token: None,
        })
    }

    /// The same client, sending `Authorization: Bearer {token}` on every request.
    ///
    /// ```
    /// use settle_participant::client::CoordinatorClient;
    /// let client = CoordinatorClient::new("http://127.0.0.1:7000").unwrap().with_token("abc").unwrap();
    /// assert!(CoordinatorClient::new("http://127.0.0.1:7000").unwrap().with_token("a\nb").is_err());
    /// # drop(client);
    /// ```
    pub fn with_token(mut self, token: impl AsRef<str>) -> Result<Self> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.as_ref()))
            .map_err(|_| Error::InvalidToken)?;
        value.set_sensitive(true);
        self.token = Some(value);
        Ok(self)
    }

    /// Registers a definition document (`content_type` is `application/yaml` or
    /// `application/json`) under `name`. Returns the stored version and whether it is
    /// new (201) rather than identical to the latest one (200).
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient) -> Result<(), settle_participant::client::Error> {
    /// let json = r#"{"name":"demo","steps":[{"name":"a","action":{"url":"http://127.0.0.1:7101/a"}}]}"#;
    /// let (definition, created) = client.register_definition("demo", json, "application/json").await?;
    /// println!("demo v{} (new: {created})", definition.version);
    /// # Ok(()) }
    /// ```
    pub async fn register_definition(
        &self,
        name: &str,
        body: &str,
        content_type: &str,
    ) -> Result<(SagaDefinition, bool)> {
        let request = self
            .request(Method::PUT, &["v1", "saga-definitions", name])?
            .header(CONTENT_TYPE, content_type)
            .body(body.to_owned());
        let (definition, status) = self.send(request).await?;
        Ok((definition, status == StatusCode::CREATED))
    }

    /// [`register_definition`](Self::register_definition) for a YAML document.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient) -> Result<(), settle_participant::client::Error> {
    /// let yaml = std::fs::read_to_string("sagas/order-checkout.yaml").expect("definition file");
    /// let (definition, _) = client.register_definition_yaml("order-checkout", &yaml).await?;
    /// # Ok(()) }
    /// ```
    pub async fn register_definition_yaml(
        &self,
        name: &str,
        yaml: &str,
    ) -> Result<(SagaDefinition, bool)> {
        self.register_definition(name, yaml, "application/yaml")
            .await
    }

    /// The latest version of a definition.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient) -> Result<(), settle_participant::client::Error> {
    /// let definition = client.get_definition("order-checkout").await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_definition(&self, name: &str) -> Result<SagaDefinition> {
        let request = self.request(Method::GET, &["v1", "saga-definitions", name])?;
        Ok(self.send(request).await?.0)
    }

    /// Every registered definition, with its latest version.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient) -> Result<(), settle_participant::client::Error> {
    /// for summary in client.list_definitions().await? {
    ///     println!("{} v{}", summary.name, summary.latest_version);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_definitions(&self) -> Result<Vec<SagaDefinitionSummary>> {
        let request = self.request(Method::GET, &["v1", "saga-definitions"])?;
        Ok(self.send(request).await?.0)
    }

    /// Starts a saga of the latest version of `definition`. With an idempotency key,
    /// starting again with the same key and input returns the existing saga. With
    /// `wait`, the coordinator answers once the saga is terminal or the wait is over.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient) -> Result<(), settle_participant::client::Error> {
    /// let saga = client
    ///     .start_saga("order-checkout", serde_json::json!({ "amount": 10 }), Some("order-1"), None)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_saga(
        &self,
        definition: &str,
        input: Value,
        idempotency_key: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Saga> {
        Ok(self
            .start_saga_created(definition, input, idempotency_key, wait)
            .await?
            .0)
    }

    /// [`start_saga`](Self::start_saga), also telling whether the saga is new (201)
    /// rather than an existing one for the same idempotency key (200).
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient) -> Result<(), settle_participant::client::Error> {
    /// let input = serde_json::json!({ "amount": 10 });
    /// let (_, first) = client.start_saga_created("order-checkout", input.clone(), Some("k"), None).await?;
    /// let (_, again) = client.start_saga_created("order-checkout", input, Some("k"), None).await?;
    /// assert!(first && !again);
    /// # Ok(()) }
    /// ```
    pub async fn start_saga_created(
        &self,
        definition: &str,
        input: Value,
        idempotency_key: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<(Saga, bool)> {
        let mut request = self.request(Method::POST, &["v1", "sagas"])?;
        if let Some(wait) = wait {
            request = with_wait(request, wait);
        }
        if let Some(key) = idempotency_key {
            request = request.header(IDEMPOTENCY_KEY_HEADER, key);
        }
        let body = StartSaga {
            definition: definition.to_owned(),
            input,
        };
        let (saga, status) = self.send(request.json(&body)).await?;
        Ok((saga, status == StatusCode::CREATED))
    }

    /// A saga's current state.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// let saga = client.get_saga(id).await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_saga(&self, id: Uuid) -> Result<Saga> {
        let request = self.request(Method::GET, &["v1", "sagas", &id.to_string()])?;
        Ok(self.send(request).await?.0)
    }

    /// A saga's state once it is terminal, or when `wait` is over, whichever is first.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// let saga = client.wait_saga(id, std::time::Duration::from_secs(10)).await?;
    /// if !saga.is_terminal() { println!("still {}", saga.state); }
    /// # Ok(()) }
    /// ```
    pub async fn wait_saga(&self, id: Uuid, wait: Duration) -> Result<Saga> {
        let request = self.request(Method::GET, &["v1", "sagas", &id.to_string()])?;
        Ok(self.send(with_wait(request, wait)).await?.0)
    }

    /// Asks the coordinator to cancel a running saga by compensating it (202).
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// let saga = client.cancel_saga(id).await?;
    /// assert!(saga.cancel_requested);
    /// # Ok(()) }
    /// ```
    pub async fn cancel_saga(&self, id: Uuid) -> Result<Saga> {
        let request = self.request(Method::POST, &["v1", "sagas", &id.to_string(), "cancel"])?;
        Ok(self.send(request).await?.0)
    }

    /// A request to `base/segments...`, each segment percent-encoded.
    fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::InvalidUrl(self.base.to_string()))?
            .pop_if_empty()
            .extend(segments);
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, token.clone());
            request = request.headers(headers);
        }
        Ok(request)
    }

    /// Sends a request and decodes a 2xx JSON answer, or the problem of any other.
    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<(T, StatusCode)> {
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            let bytes = response.bytes().await?;
            let value = serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
                status: status.as_u16(),
                message: e.to_string(),
            })?;
            Ok((value, status))
        } else {
            Err(problem(response).await)
        }
    }
}

/// Adds `?wait={ms}ms` and lets the HTTP request outlive the server-side wait.
fn with_wait(request: RequestBuilder, wait: Duration) -> RequestBuilder {
    request
        .query(&[("wait", format!("{}ms", wait.as_millis()))])
        .timeout(wait + WAIT_SLACK)
}

/// Turns a non-2xx answer into [`Error::Api`] when it carries a problem, else
/// [`Error::Decode`] with the start of the body.
async fn problem(response: Response) -> Error {
    let status = response.status().as_u16();
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(error) => return Error::Http(error),
    };
    match serde_json::from_slice::<Problem>(&bytes) {
        Ok(problem) => Error::Api { status, problem },
        Err(_) => {
            let text = String::from_utf8_lossy(&bytes);
            let snippet: String = text.chars().take(200).collect();
            Error::Decode {
                status,
                message: format!("not a problem+json body: {snippet:?}"),
            }
        }
    }
}
