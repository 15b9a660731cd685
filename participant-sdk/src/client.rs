//! A typed client for the coordinator's REST API (DESIGN.md §6): registering saga
//! definitions; starting, reading, waiting for and cancelling sagas; creating 2PC /
//! TCC transactions, registering branches, committing or aborting them, and asking
//! for a transaction's decision. The DTOs are the ones in [`crate::api`], so client
//! and coordinator cannot drift apart.

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

use crate::api::{
    ActionAccepted, AdminDetail, AdminPage, BulkAction, BulkResult, NewBranch, NewTransaction,
    OperatorAction, Problem, Saga, SagaDefinition, SagaDefinitionSummary, StartSaga, Transaction,
};
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

/// The problem code of `GET /v1/transactions/{id}` for a transaction the coordinator
/// has no record of; under presumed abort, that means abort.
pub const TRANSACTION_NOT_FOUND: &str = "transaction_not_found";

/// A 2PC / TCC transaction's outcome, as an in-doubt participant needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Commit,
    Abort,
}

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

    /// Creates a 2PC / TCC transaction (201). With `participants` it is a one-shot
    /// transaction that the coordinator prepares at once; without, an interactive
    /// (TCC) one in state `active` that collects branches until it is committed or
    /// aborted, or its timeout aborts it.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient) -> Result<(), settle_participant::client::Error> {
    /// use settle_participant::api::{NewBranch, NewTransaction};
    /// let leg = |name: &str, base: &str, account: &str, delta: i64| NewBranch {
    ///     name: name.into(),
    ///     prepare_url: Some(format!("{base}/prepare")),
    ///     commit_url: format!("{base}/commit"),
    ///     abort_url: format!("{base}/abort"),
    ///     payload: Some(serde_json::json!({ "account": account, "delta": delta })),
    /// };
    /// let transaction = client
    ///     .create_transaction(&NewTransaction {
    ///         participants: Some(vec![
    ///             leg("debit", "http://127.0.0.1:7201", "alice", -100),
    ///             leg("credit", "http://127.0.0.1:7202", "bob", 100),
    ///         ]),
    ///         timeout: Some("30s".into()),
    ///     })
    ///     .await?;
    /// let settled = client.wait_transaction(transaction.id, std::time::Duration::from_secs(10)).await?;
    /// println!("{}: {}", settled.id, settled.state);
    /// # Ok(()) }
    /// ```
    pub async fn create_transaction(&self, transaction: &NewTransaction) -> Result<Transaction> {
        let request = self.request(Method::POST, &["v1", "transactions"])?;
        Ok(self.send(request.json(transaction)).await?.0)
    }

    /// Registers a branch with an interactive (TCC) transaction (201). Once the
    /// transaction is no longer active this fails with code `transaction_not_active`.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// use settle_participant::api::NewBranch;
    /// let transaction = client
    ///     .register_branch(id, &NewBranch {
    ///         name: "hold-seat".into(),
    ///         prepare_url: None, // the service did its Try itself
    ///         commit_url: "http://127.0.0.1:7301/confirm".into(),
    ///         abort_url: "http://127.0.0.1:7301/cancel".into(),
    ///         payload: Some(serde_json::json!({ "seat": "12A" })),
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn register_branch(&self, id: Uuid, branch: &NewBranch) -> Result<Transaction> {
        let id = id.to_string();
        let request = self.request(Method::POST, &["v1", "transactions", &id, "branches"])?;
        Ok(self.send(request.json(branch)).await?.0)
    }

    /// Asks the coordinator to commit a transaction (202). Idempotent; a transaction
    /// that was already aborted answers code `transaction_aborted`.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// match client.commit_transaction(id).await {
    ///     Ok(transaction) => println!("{}", transaction.state),
    ///     Err(error) if error.code() == Some("transaction_aborted") => println!("too late: aborted"),
    ///     Err(error) => return Err(error),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn commit_transaction(&self, id: Uuid) -> Result<Transaction> {
        let id = id.to_string();
        let request = self.request(Method::POST, &["v1", "transactions", &id, "commit"])?;
        Ok(self.send(request).await?.0)
    }

    /// Asks the coordinator to abort a transaction (202). Idempotent; a transaction
    /// that was already committed answers code `transaction_committed`.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// let transaction = client.abort_transaction(id).await?;
    /// # Ok(()) }
    /// ```
    pub async fn abort_transaction(&self, id: Uuid) -> Result<Transaction> {
        let id = id.to_string();
        let request = self.request(Method::POST, &["v1", "transactions", &id, "abort"])?;
        Ok(self.send(request).await?.0)
    }

    /// A transaction's current state, branches and decision.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// let transaction = client.get_transaction(id).await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_transaction(&self, id: Uuid) -> Result<Transaction> {
        let request = self.request(Method::GET, &["v1", "transactions", &id.to_string()])?;
        Ok(self.send(request).await?.0)
    }

    /// A transaction's state once it is `committed`, `aborted` or `stuck`, or when
    /// `wait` is over, whichever is first.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// let transaction = client.wait_transaction(id, std::time::Duration::from_secs(10)).await?;
    /// if !transaction.is_terminal() { println!("still {}", transaction.state); }
    /// # Ok(()) }
    /// ```
    pub async fn wait_transaction(&self, id: Uuid, wait: Duration) -> Result<Transaction> {
        let request = self.request(Method::GET, &["v1", "transactions", &id.to_string()])?;
        Ok(self.send(with_wait(request, wait)).await?.0)
    }

    /// The decision of a transaction, for a participant in doubt (prepared, and not
    /// told the outcome): `Some(Commit)`, `Some(Abort)`, or `None` while the
    /// coordinator has not decided. Presumed abort: a transaction the coordinator has
    /// no record of (404 [`TRANSACTION_NOT_FOUND`]) was never committed, so it is
    /// `Some(Abort)`. Any other failure is an error, never a guess.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// use settle_participant::client::Decision;
    /// match client.decision(id).await? {
    ///     Some(Decision::Commit) => println!("commit the prepared work"),
    ///     Some(Decision::Abort) => println!("roll it back"),
    ///     None => println!("undecided: wait for the coordinator's call"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn decision(&self, id: Uuid) -> Result<Option<Decision>> {
        let transaction = match self.get_transaction(id).await {
            Ok(transaction) => transaction,
            Err(Error::Api {
                status: 404,
                problem,
            }) if problem.code == TRANSACTION_NOT_FOUND => return Ok(Some(Decision::Abort)),
            Err(error) => return Err(error),
        };
        match (transaction.decision.as_deref(), transaction.state.as_str()) {
            (Some("commit"), _) => Ok(Some(Decision::Commit)),
            (Some("abort"), _) => Ok(Some(Decision::Abort)),
            (Some(other), _) => Err(Error::Decode {
                status: 200,
                message: format!("unknown decision {other:?}"),
            }),
            // The states past the decision imply it, should the field be left out.
            (None, "committing" | "committed") => Ok(Some(Decision::Commit)),
            (None, "aborting" | "aborted") => Ok(Some(Decision::Abort)),
            (None, _) => Ok(None),
        }
    }

    /// A request to `base/segments...`, each segment percent-encoded.
    /// The operators' list (`GET /v1/admin/transactions`), filtered by query pairs such
    /// as `("state", "stuck")`, `("kind", "saga")`, `("older_than", "5m")`, `("limit", "50")`
    /// and `("cursor", page.next_cursor)`.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient) -> Result<(), settle_participant::client::Error> {
    /// let stuck = client.admin_list(&[("state", "stuck")]).await?;
    /// for t in &stuck.items { println!("{} {} {:?}", t.id, t.state, t.reason); }
    /// # Ok(()) }
    /// ```
    pub async fn admin_list(&self, query: &[(&str, &str)]) -> Result<AdminPage> {
        let request = self
            .request(Method::GET, &["v1", "admin", "transactions"])?
            .query(query);
        Ok(self.send(request).await?.0)
    }

    /// One transaction with its whole timeline (`GET /v1/admin/transactions/{id}`).
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// let detail = client.admin_transaction(id).await?;
    /// for e in &detail.events { println!("{} {} {:?}", e.at, e.kind, e.error); }
    /// # Ok(()) }
    /// ```
    pub async fn admin_transaction(&self, id: Uuid) -> Result<AdminDetail> {
        let request = self.request(
            Method::GET,
            &["v1", "admin", "transactions", &id.to_string()],
        )?;
        Ok(self.send(request).await?.0)
    }

    /// Sends a stuck saga back to compensation (`POST /v1/admin/transactions/{id}/retry`),
    /// with an optional note for the timeline.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// client.admin_retry(id, Some("refund service redeployed")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn admin_retry(&self, id: Uuid, note: Option<&str>) -> Result<ActionAccepted> {
        let body = OperatorAction {
            note: note.map(str::to_owned),
        };
        let request = self
            .request(
                Method::POST,
                &["v1", "admin", "transactions", &id.to_string(), "retry"],
            )?
            .json(&body);
        Ok(self.send(request).await?.0)
    }

    /// Any operator action on one transaction (`retry`, `pause`, `resume`,
    /// `compensate`, `skip`, `resolve`); `body` is `{"note"}` (skip: `{"step", "output", "note"}`).
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient, id: uuid::Uuid) -> Result<(), settle_participant::client::Error> {
    /// client.admin_action(id, "pause", &serde_json::json!({ "note": "payments is down" })).await?;
    /// # Ok(()) }
    /// ```
    pub async fn admin_action(
        &self,
        id: Uuid,
        action: &str,
        body: &serde_json::Value,
    ) -> Result<ActionAccepted> {
        let request = self
            .request(
                Method::POST,
                &["v1", "admin", "transactions", &id.to_string(), action],
            )?
            .json(body);
        Ok(self.send(request).await?.0)
    }

    /// An operator action on every transaction the list filters in `query` match.
    ///
    /// ```no_run
    /// # async fn run(client: settle_participant::client::CoordinatorClient) -> Result<(), settle_participant::client::Error> {
    /// let body = settle_participant::api::BulkAction { dry_run: true, note: None };
    /// let counted = client.admin_bulk("resolve", &[("state", "stuck")], &body).await?;
    /// # Ok(()) }
    /// ```
    pub async fn admin_bulk(
        &self,
        action: &str,
        query: &[(&str, &str)],
        body: &BulkAction,
    ) -> Result<BulkResult> {
        let request = self
            .request(
                Method::POST,
                &["v1", "admin", "transactions", "actions", action],
            )?
            .query(query)
            .json(body);
        Ok(self.send(request).await?.0)
    }

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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use actix_web::http::StatusCode as ActixStatus;
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    use serde_json::json;

    use super::*;
    use crate::participant::problem_response;

    /// A fake coordinator's transactions: id → (decision, state), and what it saw.
    #[derive(Default)]
    struct Fake {
        transactions: Mutex<HashMap<Uuid, (Option<String>, String)>>,
        seen: Mutex<Vec<(String, String, String, Value)>>,
    }

    fn transaction(id: Uuid, decision: Option<String>, state: &str) -> Transaction {
        Transaction {
            id,
            mode: "interactive".to_owned(),
            state: state.to_owned(),
            decision,
            reason: None,
            branches: Vec::new(),
            created_at: "2025-01-01T00:00:00Z".to_owned(),
            updated_at: "2025-01-01T00:00:00Z".to_owned(),
            deadline: None,
        }
    }

    async fn handle(fake: web::Data<Fake>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        fake.seen.lock().unwrap().push((
            request.method().to_string(),
            request.path().to_owned(),
            request.query_string().to_owned(),
            body.clone(),
        ));
        let segments: Vec<&str> = request.path().trim_matches('/').split('/').collect();
        let mut transactions = fake.transactions.lock().unwrap();
        match (request.method().as_str(), segments.as_slice()) {
            ("POST", ["v1", "transactions"]) => {
                let id = Uuid::now_v7();
                let state = if body.get("participants").is_some() {
                    "preparing"
                } else {
                    "active"
                };
                transactions.insert(id, (None, state.to_owned()));
                HttpResponse::Created().json(transaction(id, None, state))
            }
            ("POST", ["v1", "transactions", id, action]) => {
                let id: Uuid = id.parse().unwrap();
                let Some((decision, state)) = transactions.get_mut(&id) else {
                    return problem_response(
                        ActixStatus::NOT_FOUND,
                        TRANSACTION_NOT_FOUND,
                        "no such transaction",
                    );
                };
                match (*action, decision.as_deref()) {
                    ("branches", None) => {
                        HttpResponse::Created().json(transaction(id, None, state))
                    }
                    ("branches", Some(_)) => problem_response(
                        ActixStatus::CONFLICT,
                        "transaction_not_active",
                        "decided already",
                    ),
                    ("commit", Some("abort")) => problem_response(
                        ActixStatus::CONFLICT,
                        "transaction_aborted",
                        "aborted already",
                    ),
                    ("abort", Some("commit")) => problem_response(
                        ActixStatus::CONFLICT,
                        "transaction_committed",
                        "committed already",
                    ),
                    ("commit" | "abort", _) => {
                        let (verdict, next) = if *action == "commit" {
                            ("commit", "committing")
                        } else {
                            ("abort", "aborting")
                        };
                        *decision = Some(verdict.to_owned());
                        *state = next.to_owned();
                        HttpResponse::Accepted().json(transaction(id, decision.clone(), state))
                    }
                    _ => HttpResponse::NotFound().finish(),
                }
            }
            ("GET", ["v1", "transactions", id]) => {
                let id: Uuid = id.parse().unwrap();
                match transactions.get(&id) {
                    Some((decision, state)) => {
                        HttpResponse::Ok().json(transaction(id, decision.clone(), state))
                    }
                    None => problem_response(
                        ActixStatus::NOT_FOUND,
                        TRANSACTION_NOT_FOUND,
                        "no such transaction",
                    ),
                }
            }
            _ => problem_response(ActixStatus::NOT_FOUND, "route_not_found", "no such route"),
        }
    }

    /// Starts the fake on a free port; the client's base URL is `http://{addr}{base}`.
    async fn fake_coordinator(
        base: &str,
    ) -> (
        CoordinatorClient,
        web::Data<Fake>,
        actix_web::dev::ServerHandle,
    ) {
        let fake = web::Data::new(Fake::default());
        let data = fake.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        let client = CoordinatorClient::new(format!("http://{addr}{base}")).unwrap();
        (client, fake, handle)
    }

    fn set(fake: &Fake, decision: Option<&str>, state: &str) -> Uuid {
        let id = Uuid::now_v7();
        fake.transactions
            .lock()
            .unwrap()
            .insert(id, (decision.map(str::to_owned), state.to_owned()));
        id
    }

    #[tokio::test]
    async fn drives_an_interactive_transaction_through_its_endpoints() {
        let (client, fake, server) = fake_coordinator("").await;
        let created = client
            .create_transaction(&NewTransaction {
                participants: None,
                timeout: Some("5s".to_owned()),
            })
            .await
            .unwrap();
        assert_eq!(created.state, "active");
        let branch = NewBranch {
            name: "hold-seat".to_owned(),
            prepare_url: None,
            commit_url: "http://127.0.0.1:1/confirm".to_owned(),
            abort_url: "http://127.0.0.1:1/cancel".to_owned(),
            payload: Some(json!({ "seat": "12A" })),
        };
        client.register_branch(created.id, &branch).await.unwrap();
        let committing = client.commit_transaction(created.id).await.unwrap();
        assert_eq!(committing.decision.as_deref(), Some("commit"));
        let late = client
            .register_branch(created.id, &branch)
            .await
            .unwrap_err();
        assert_eq!(late.code(), Some("transaction_not_active"));
        let waited = client
            .wait_transaction(created.id, Duration::from_millis(1500))
            .await
            .unwrap();
        assert_eq!(waited.id, created.id);

        let seen = fake.seen.lock().unwrap().clone();
        let id = created.id;
        let paths: Vec<(&str, String, &str)> = seen
            .iter()
            .map(|(method, path, query, _)| (method.as_str(), path.clone(), query.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                ("POST", "/v1/transactions".to_owned(), ""),
                ("POST", format!("/v1/transactions/{id}/branches"), ""),
                ("POST", format!("/v1/transactions/{id}/commit"), ""),
                ("POST", format!("/v1/transactions/{id}/branches"), ""),
                ("GET", format!("/v1/transactions/{id}"), "wait=1500ms"),
            ]
        );
        assert_eq!(seen[0].3, json!({ "timeout": "5s" }));
        assert_eq!(
            seen[1].3,
            json!({
                "name": "hold-seat",
                "commit_url": "http://127.0.0.1:1/confirm",
                "abort_url": "http://127.0.0.1:1/cancel",
                "payload": { "seat": "12A" },
            })
        );
        server.stop(true).await;
    }

    #[tokio::test]
    async fn commit_after_abort_is_an_api_error_with_its_code() {
        let (client, fake, server) = fake_coordinator("").await;
        let id = set(&fake, None, "active");
        let aborting = client.abort_transaction(id).await.unwrap();
        assert_eq!(aborting.decision.as_deref(), Some("abort"));
        let error = client.commit_transaction(id).await.unwrap_err();
        assert!(matches!(error, Error::Api { status: 409, .. }), "{error}");
        assert_eq!(error.code(), Some("transaction_aborted"));
        server.stop(true).await;
    }

    #[tokio::test]
    async fn decision_reads_the_decision_and_presumes_abort_for_unknown_transactions() {
        let (client, fake, server) = fake_coordinator("").await;
        let cases = [
            (Some("commit"), "committing", Some(Decision::Commit)),
            (Some("commit"), "stuck", Some(Decision::Commit)),
            (Some("abort"), "aborted", Some(Decision::Abort)),
            (None, "active", None),
            (None, "preparing", None),
            (None, "committed", Some(Decision::Commit)),
            (None, "aborting", Some(Decision::Abort)),
        ];
        for (decision, state, expected) in cases {
            let id = set(&fake, decision, state);
            assert_eq!(
                client.decision(id).await.unwrap(),
                expected,
                "{decision:?} {state}"
            );
        }
        assert_eq!(
            client.decision(Uuid::now_v7()).await.unwrap(),
            Some(Decision::Abort),
            "presumed abort"
        );
        let odd = set(&fake, Some("maybe"), "committing");
        assert!(matches!(
            client.decision(odd).await,
            Err(Error::Decode { .. })
        ));
        server.stop(true).await;
    }

    #[tokio::test]
    async fn decision_does_not_presume_abort_from_a_404_that_is_not_about_the_transaction() {
        // Under this base URL no route exists: the 404 says nothing about the transaction.
        let (client, fake, server) = fake_coordinator("/not-the-coordinator").await;
        let id = set(&fake, Some("commit"), "committing");
        let error = client.decision(id).await.unwrap_err();
        assert_eq!(error.code(), Some("route_not_found"));
        server.stop(true).await;
    }
}
