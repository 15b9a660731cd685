//! actix-web helpers for participant endpoints: the [`ParticipantCall`] (saga) and
//! [`BranchRequest`] (2PC / TCC) extractors that read, verify and parse a coordinator
//! call, and the [`Reply`] a handler answers with, mapped to the status codes of the
//! participant contract (DESIGN.md §3, §4).

use std::future::Future;
use std::pin::Pin;

use actix_web::body::BoxBody;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{dev, web, FromRequest, HttpRequest, HttpResponse, Responder, ResponseError};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::api::Problem;
use crate::protocol::{
    BranchCall, CallRequest, IDEMPOTENCY_KEY_HEADER, SIGNATURE_HEADER, TRACEPARENT_HEADER,
};
use crate::signature::{self, Verifier};

/// The largest call body [`ParticipantCall`] reads: 1 MiB.
pub const MAX_CALL_BODY: usize = 1024 * 1024;

/// The media type of error bodies (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why a request is not a valid coordinator call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is larger than [`MAX_CALL_BODY`].
    #[error("the call body is larger than {MAX_CALL_BODY} bytes")]
    BodyTooLarge,
    /// The body could not be read from the connection.
    #[error("reading the call body failed: {0}")]
    Read(String),
    /// A [`Verifier`] is registered and the signature does not check out.
    #[error("bad signature: {0}")]
    Signature(#[from] signature::Error),
    /// The body is not a [`CallRequest`].
    #[error("the body is not a participant call: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The `Idempotency-Key` header names another call than the body.
    #[error("the Idempotency-Key header {header:?} does not match the call ({expected:?})")]
    KeyMismatch { header: String, expected: String },
}

/// Shorthand for results of reading a call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Signature(_) => StatusCode::UNAUTHORIZED,
            Error::Read(_) | Error::Malformed(_) | Error::KeyMismatch { .. } => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            Error::BodyTooLarge => "body_too_large",
            Error::Signature(_) => "bad_signature",
            Error::Read(_) | Error::Malformed(_) | Error::KeyMismatch { .. } => "malformed_call",
        };
        tracing::warn!(error = %self, code, "rejected a participant call");
        problem_response(self.status_code(), code, self.to_string())
    }
}

/// Builds an `application/problem+json` response shaped like [`Problem`].
///
/// ```
/// use actix_web::http::StatusCode;
/// use settle_participant::participant::problem_response;
/// let response = problem_response(StatusCode::CONFLICT, "refused", "out of stock");
/// assert_eq!(response.status(), StatusCode::CONFLICT);
/// ```
pub fn problem_response(status: StatusCode, code: &str, detail: impl Into<String>) -> HttpResponse {
    let problem = Problem {
        type_: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        code: code.to_owned(),
        detail: detail.into(),
        field: None,
    };
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)))
        .json(problem)
}

/// A coordinator call to a participant endpoint, read and checked.
///
/// As an actix-web extractor it reads the body (at most [`MAX_CALL_BODY`]), verifies
/// `Settle-Signature` when a `web::Data<Verifier>` is registered, parses the
/// [`CallRequest`] and checks that an `Idempotency-Key` header, when present, names
/// this call. Rejections are problem+json: 400 `malformed_call`, 401 `bad_signature`,
/// 413 `body_too_large`.
///
/// ```
/// use actix_web::{web, App, HttpServer};
/// use settle_participant::participant::{ParticipantCall, Reply};
/// use settle_participant::signature::Verifier;
///
/// async fn charge(call: ParticipantCall) -> Reply {
///     Reply::Done(serde_json::json!({ "charge_id": call.call.transaction_id }))
/// }
///
/// let verifier = web::Data::new(Verifier::new(vec![b"secret".to_vec()]));
/// let app = App::new().app_data(verifier).route("/charges", web::post().to(charge));
/// ```
#[derive(Debug, Clone)]
pub struct ParticipantCall {
    /// The parsed call body.
    pub call: CallRequest,
    /// The `Idempotency-Key` header, when the caller sent one; it equals
    /// `call.idempotency_key()`.
    pub idempotency_key: Option<String>,
    /// The W3C `traceparent` header, when the caller sent one.
    pub traceparent: Option<String>,
}

impl ParticipantCall {
    /// Checks and parses a call from its headers and raw body.
    ///
    /// ```
    /// use actix_web::test::TestRequest;
    /// use settle_participant::participant::ParticipantCall;
    /// use settle_participant::signature::{now_unix, sign, Verifier};
    ///
    /// let body = br#"{"transaction_id":"0190b6c2-5a1e-7000-8000-000000000001","saga":"order-checkout",
    ///   "step":"charge-payment","phase":"action","attempt":1,"input":{"amount":10},"results":{}}"#;
    /// let request = TestRequest::post()
    ///     .insert_header(("Settle-Signature", sign(b"secret", now_unix(), body)))
    ///     .to_http_request();
    /// let verifier = Verifier::new(vec![b"secret".to_vec()]);
    /// let call = ParticipantCall::from_parts(&request, body, Some(&verifier)).unwrap();
    /// assert_eq!(call.call.step, "charge-payment");
    /// ```
    pub fn from_parts(
        request: &HttpRequest,
        body: &[u8],
        verifier: Option<&Verifier>,
    ) -> Result<Self> {
        check(request, body, verifier).map(Self::checked)
    }
}

impl ParticipantCall {
    fn checked(checked: Checked<CallRequest>) -> Self {
        ParticipantCall {
            call: checked.call,
            idempotency_key: checked.idempotency_key,
            traceparent: checked.traceparent,
        }
    }
}

impl FromRequest for ParticipantCall {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self>>>>;

    fn from_request(request: &HttpRequest, payload: &mut dev::Payload) -> Self::Future {
        let read = extract::<CallRequest>(request.clone(), payload.take());
        Box::pin(async move { read.await.map(Self::checked) })
    }
}

/// A coordinator's 2PC / TCC call to a branch endpoint (`prepare_url`, `commit_url`
/// or `abort_url`), read and checked exactly like a [`ParticipantCall`]: body limit,
/// `Settle-Signature` when a `web::Data<Verifier>` is registered, an `Idempotency-Key`
/// that must name this call, and the same problem+json rejections.
///
/// ```
/// use actix_web::{web, App};
/// use settle_participant::participant::{BranchRequest, Reply};
///
/// async fn commit(request: BranchRequest) -> Reply {
///     Reply::Done(serde_json::json!({ "committed": request.call.branch }))
/// }
///
/// let app = App::new().route("/commit", web::post().to(commit));
/// ```
#[derive(Debug, Clone)]
pub struct BranchRequest {
    /// The parsed call body.
    pub call: BranchCall,
    /// The `Idempotency-Key` header, when the caller sent one; it equals
    /// `call.idempotency_key()`.
    pub idempotency_key: Option<String>,
    /// The W3C `traceparent` header, when the caller sent one.
    pub traceparent: Option<String>,
}

impl BranchRequest {
    /// Checks and parses a branch call from its headers and raw body.
    ///
    /// ```
    /// use actix_web::test::TestRequest;
    /// use settle_participant::participant::BranchRequest;
    /// use settle_participant::protocol::BranchPhase;
    ///
    /// let body = br#"{"transaction_id":"0190b6c2-5a1e-7000-8000-000000000001","branch":"debit",
    ///   "phase":"commit","attempt":1,"payload":{"account":"alice","delta":-10}}"#;
    /// let request = TestRequest::post()
    ///     .insert_header(("Idempotency-Key", "0190b6c2-5a1e-7000-8000-000000000001:debit:commit"))
    ///     .to_http_request();
    /// let call = BranchRequest::from_parts(&request, body, None).unwrap();
    /// assert_eq!(call.call.phase, BranchPhase::Commit);
    /// ```
    pub fn from_parts(
        request: &HttpRequest,
        body: &[u8],
        verifier: Option<&Verifier>,
    ) -> Result<Self> {
        check(request, body, verifier).map(Self::checked)
    }
}

impl BranchRequest {
    fn checked(checked: Checked<BranchCall>) -> Self {
        BranchRequest {
            call: checked.call,
            idempotency_key: checked.idempotency_key,
            traceparent: checked.traceparent,
        }
    }
}

impl FromRequest for BranchRequest {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self>>>>;

    fn from_request(request: &HttpRequest, payload: &mut dev::Payload) -> Self::Future {
        let read = extract::<BranchCall>(request.clone(), payload.take());
        Box::pin(async move { read.await.map(Self::checked) })
    }
}

/// A call body the coordinator sends: it names itself in `Idempotency-Key`.
trait CallBody: DeserializeOwned {
    fn idempotency_key(&self) -> String;
}

impl CallBody for CallRequest {
    fn idempotency_key(&self) -> String {
        CallRequest::idempotency_key(self)
    }
}

impl CallBody for BranchCall {
    fn idempotency_key(&self) -> String {
        BranchCall::idempotency_key(self)
    }
}

/// A call body with the headers that came with it, signature and key checked.
struct Checked<T> {
    call: T,
    idempotency_key: Option<String>,
    traceparent: Option<String>,
}

/// Verifies the signature (when there is a verifier), parses the body and checks that
/// an `Idempotency-Key` header, when present, names this call.
fn check<T: CallBody>(
    request: &HttpRequest,
    body: &[u8],
    verifier: Option<&Verifier>,
) -> Result<Checked<T>> {
    if let Some(verifier) = verifier {
        let header = header_str(request, SIGNATURE_HEADER);
        verifier.verify(header.as_deref(), body, signature::now_unix())?;
    }
    let call: T = serde_json::from_slice(body)?;
    let idempotency_key = header_str(request, IDEMPOTENCY_KEY_HEADER);
    if let Some(key) = &idempotency_key {
        let expected = call.idempotency_key();
        if *key != expected {
            return Err(Error::KeyMismatch {
                header: key.clone(),
                expected,
            });
        }
    }
    Ok(Checked {
        call,
        idempotency_key,
        traceparent: header_str(request, TRACEPARENT_HEADER),
    })
}

/// A header's value as text; a value that is not visible ASCII counts as given but
/// empty, so a garbled signature is reported as malformed rather than missing.
fn header_str(request: &HttpRequest, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap_or_default().to_owned())
}

/// Reads the body (at most [`MAX_CALL_BODY`]) and checks it with the `Verifier` the
/// app registered, if any.
async fn extract<T: CallBody>(
    request: HttpRequest,
    mut payload: dev::Payload,
) -> Result<Checked<T>> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_CALL_BODY) {
        return Err(Error::BodyTooLarge);
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(4096));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::Read(e.to_string()))?;
        if body.len() + chunk.len() > MAX_CALL_BODY {
            return Err(Error::BodyTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let verifier = request.app_data::<web::Data<Verifier>>();
    check(&request, &body, verifier.map(|v| v.get_ref()))
}

/// What a participant endpoint answers, in the terms of the participant contract.
///
/// ```
/// use actix_web::{http::StatusCode, test::TestRequest, Responder};
/// use settle_participant::participant::Reply;
/// let request = TestRequest::default().to_http_request();
/// assert_eq!(Reply::Refuse("out of stock".into()).respond_to(&request).status(), StatusCode::CONFLICT);
/// assert_eq!(Reply::InProgress.respond_to(&request).status(), StatusCode::ACCEPTED);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 200: done; the JSON becomes the step's output.
    Done(Value),
    /// 409 problem+json `refused`: a business "no", never retried.
    Refuse(String),
    /// 422 problem+json `invalid_input`: the call cannot be acted on as sent (a
    /// missing input field, say); like a refusal, never retried.
    Invalid(String),
    /// 202: still working on it; the coordinator asks again later.
    InProgress,
    /// 503 problem+json `retry_later`: a transient failure; the coordinator retries.
    Retry(String),
}

impl Reply {
    /// `Done` with any serializable output.
    ///
    /// ```
    /// use settle_participant::participant::Reply;
    /// #[derive(serde::Serialize)]
    /// struct Charged { charge_id: String }
    /// let reply = Reply::done(Charged { charge_id: "c-1".into() }).unwrap();
    /// assert_eq!(reply, Reply::Done(serde_json::json!({ "charge_id": "c-1" })));
    /// ```
    pub fn done(output: impl Serialize) -> std::result::Result<Reply, serde_json::Error> {
        Ok(Reply::Done(serde_json::to_value(output)?))
    }

    /// The HTTP status this reply is sent with.
    ///
    /// ```
    /// use settle_participant::participant::Reply;
    /// assert_eq!(Reply::Retry("db failover".into()).status().as_u16(), 503);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Reply::Done(_) => StatusCode::OK,
            Reply::Refuse(_) => StatusCode::CONFLICT,
            Reply::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Reply::InProgress => StatusCode::ACCEPTED,
            Reply::Retry(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The response for this reply.
    pub fn into_response(self) -> HttpResponse {
        let status = self.status();
        match self {
            Reply::Done(output) => HttpResponse::build(status).json(output),
            Reply::Refuse(detail) => problem_response(status, "refused", detail),
            Reply::Invalid(detail) => problem_response(status, "invalid_input", detail),
            Reply::InProgress => HttpResponse::build(status).finish(),
            Reply::Retry(detail) => problem_response(status, "retry_later", detail),
        }
    }
}

impl Responder for Reply {
    type Body = BoxBody;

    fn respond_to(self, _request: &HttpRequest) -> HttpResponse {
        self.into_response()
    }
}

/// A barrier failure answers 500 `participant_error` (the coordinator retries) with a
/// generic detail; the cause chain goes to the log, never into the body.
impl ResponseError for crate::barrier::Error {
    fn status_code(&self) -> StatusCode {
        match self {
            crate::barrier::Error::PhaseMismatch { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            crate::barrier::Error::PhaseMismatch { .. } => wrong_phase_response(self),
            _ => participant_error_response(self),
        }
    }
}

/// An XA participant failure answers like a barrier failure: 400 `malformed_call` for
/// a call sent to the wrong endpoint, else 500 `participant_error` (the coordinator
/// retries) with a generic detail and the cause chain in the log.
impl ResponseError for crate::xa::Error {
    fn status_code(&self) -> StatusCode {
        match self {
            crate::xa::Error::PhaseMismatch { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            crate::xa::Error::PhaseMismatch { .. } => wrong_phase_response(self),
            _ => participant_error_response(self),
        }
    }
}

/// 400 `malformed_call` for a call that reached the endpoint of another phase.
fn wrong_phase_response(error: &dyn std::error::Error) -> HttpResponse {
    tracing::warn!(error = %error, "rejected a participant call");
    problem_response(StatusCode::BAD_REQUEST, "malformed_call", error.to_string())
}

/// 500 `participant_error`: the cause chain goes to the log, the body only says that
/// a retry is safe.
fn participant_error_response(error: &dyn std::error::Error) -> HttpResponse {
    tracing::error!(error = %error_chain(error), "participant call failed");
    problem_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "participant_error",
        "the participant could not process the call; it is safe to retry",
    )
}

/// An error and its sources on one line, for logs.
///
/// ```
/// let err = std::io::Error::other("disk full");
/// assert_eq!(settle_participant::participant::error_chain(&err), "disk full");
/// ```
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;
    use actix_web::test::TestRequest;

    use super::*;
    use crate::signature::sign;

    const BODY: &[u8] = br#"{"transaction_id":"0190b6c2-5a1e-7000-8000-000000000001","saga":"order-checkout","step":"charge-payment","phase":"action","attempt":2,"input":{"amount":10},"results":{}}"#;
    const KEY: &str = "0190b6c2-5a1e-7000-8000-000000000001:charge-payment:action";

    async fn problem_of(response: HttpResponse) -> (u16, Option<String>, Problem) {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = to_bytes(response.into_body()).await.unwrap();
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    async fn extract(request: TestRequest) -> Result<ParticipantCall> {
        let (request, mut payload) = request.to_http_parts();
        ParticipantCall::from_request(&request, &mut payload).await
    }

    #[actix_web::test]
    async fn extracts_a_signed_call_with_its_idempotency_key() {
        let verifier = web::Data::new(Verifier::new(vec![b"secret".to_vec()]));
        let request = TestRequest::post()
            .app_data(verifier)
            .insert_header((
                SIGNATURE_HEADER,
                sign(b"secret", signature::now_unix(), BODY),
            ))
            .insert_header((IDEMPOTENCY_KEY_HEADER, KEY))
            .set_payload(BODY);
        let call = extract(request).await.unwrap();
        assert_eq!(call.call.attempt, 2);
        assert_eq!(call.idempotency_key.as_deref(), Some(KEY));
    }

    #[actix_web::test]
    async fn accepts_unsigned_calls_when_no_verifier_is_registered() {
        let call = extract(TestRequest::post().set_payload(BODY))
            .await
            .unwrap();
        assert_eq!(call.call.step, "charge-payment");
        assert_eq!(call.idempotency_key, None);
    }

    #[actix_web::test]
    async fn rejects_a_bad_signature_with_401_bad_signature() {
        let verifier = web::Data::new(Verifier::new(vec![b"secret".to_vec()]));
        let request = TestRequest::post()
            .app_data(verifier)
            .insert_header((
                SIGNATURE_HEADER,
                sign(b"wrong", signature::now_unix(), BODY),
            ))
            .set_payload(BODY);
        let error = extract(request).await.unwrap_err();
        let (status, content_type, problem) = problem_of(error.error_response()).await;
        assert_eq!(status, 401);
        assert_eq!(content_type.as_deref(), Some(PROBLEM_JSON));
        assert_eq!(problem.code, "bad_signature");
        assert_eq!(problem.status, 401);
    }

    #[actix_web::test]
    async fn rejects_an_unsigned_call_when_a_verifier_is_registered() {
        let verifier = web::Data::new(Verifier::new(vec![b"secret".to_vec()]));
        let request = TestRequest::post().app_data(verifier).set_payload(BODY);
        let error = extract(request).await.unwrap_err();
        assert!(matches!(error, Error::Signature(signature::Error::Missing)));
    }

    #[actix_web::test]
    async fn rejects_a_body_that_is_not_a_call_with_400_malformed_call() {
        let error = extract(TestRequest::post().set_payload(r#"{"step":1}"#))
            .await
            .unwrap_err();
        let (status, _, problem) = problem_of(error.error_response()).await;
        assert_eq!(status, 400);
        assert_eq!(problem.code, "malformed_call");
    }

    #[actix_web::test]
    async fn rejects_an_idempotency_key_naming_another_call() {
        let request = TestRequest::post()
            .insert_header((IDEMPOTENCY_KEY_HEADER, "other:charge-payment:action"))
            .set_payload(BODY);
        let error = extract(request).await.unwrap_err();
        assert!(matches!(error, Error::KeyMismatch { .. }), "{error}");
    }

    #[actix_web::test]
    async fn rejects_a_body_over_one_mebibyte_with_413() {
        let big = vec![b' '; MAX_CALL_BODY + 1];
        let error = extract(TestRequest::post().set_payload(big))
            .await
            .unwrap_err();
        assert_eq!(error.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[actix_web::test]
    async fn replies_map_to_the_participant_contract() {
        let request = TestRequest::default().to_http_request();
        let done = Reply::Done(serde_json::json!({"charge_id": "c-1"})).respond_to(&request);
        assert_eq!(done.status(), StatusCode::OK);
        let bytes = to_bytes(done.into_body()).await.unwrap();
        assert_eq!(&bytes[..], br#"{"charge_id":"c-1"}"#);

        let (status, content_type, problem) =
            problem_of(Reply::Refuse("card declined".into()).respond_to(&request)).await;
        assert_eq!((status, problem.code.as_str()), (409, "refused"));
        assert_eq!(problem.detail, "card declined");
        assert_eq!(content_type.as_deref(), Some(PROBLEM_JSON));

        let (status, _, problem) =
            problem_of(Reply::Invalid("no sku".into()).respond_to(&request)).await;
        assert_eq!((status, problem.code.as_str()), (422, "invalid_input"));

        let (status, _, problem) =
            problem_of(Reply::Retry("db busy".into()).respond_to(&request)).await;
        assert_eq!((status, problem.code.as_str()), (503, "retry_later"));

        assert_eq!(
            Reply::InProgress.respond_to(&request).status(),
            StatusCode::ACCEPTED
        );
        for reply in [
            Reply::Done(Value::Null),
            Reply::Refuse(String::new()),
            Reply::Invalid(String::new()),
            Reply::InProgress,
            Reply::Retry(String::new()),
        ] {
            let expected = match &reply {
                Reply::Done(_) => crate::protocol::StatusMeaning::Done,
                Reply::Refuse(_) | Reply::Invalid(_) => crate::protocol::StatusMeaning::Refused,
                Reply::InProgress => crate::protocol::StatusMeaning::InProgress,
                Reply::Retry(_) => crate::protocol::StatusMeaning::Transient,
            };
            assert_eq!(
                crate::protocol::classify_status(reply.status().as_u16()),
                expected
            );
        }
    }

    const BRANCH_BODY: &[u8] = br#"{"transaction_id":"0190b6c2-5a1e-7000-8000-000000000001","branch":"debit","phase":"prepare","attempt":1,"payload":{"account":"alice","delta":-10}}"#;
    const BRANCH_KEY: &str = "0190b6c2-5a1e-7000-8000-000000000001:debit:prepare";

    async fn extract_branch(request: TestRequest) -> Result<BranchRequest> {
        let (request, mut payload) = request.to_http_parts();
        BranchRequest::from_request(&request, &mut payload).await
    }

    #[actix_web::test]
    async fn extracts_a_signed_branch_call_with_its_headers() {
        let verifier = web::Data::new(Verifier::new(vec![b"secret".to_vec()]));
        let request = TestRequest::post()
            .app_data(verifier)
            .insert_header((
                SIGNATURE_HEADER,
                sign(b"secret", signature::now_unix(), BRANCH_BODY),
            ))
            .insert_header((IDEMPOTENCY_KEY_HEADER, BRANCH_KEY))
            .insert_header((
                TRACEPARENT_HEADER,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ))
            .set_payload(BRANCH_BODY);
        let call = extract_branch(request).await.unwrap();
        assert_eq!(call.call.phase, crate::protocol::BranchPhase::Prepare);
        assert_eq!(call.call.payload["account"], "alice");
        assert_eq!(call.idempotency_key.as_deref(), Some(BRANCH_KEY));
        assert!(call.traceparent.is_some());
    }

    #[actix_web::test]
    async fn rejects_a_badly_signed_branch_call_with_401_bad_signature() {
        let verifier = web::Data::new(Verifier::new(vec![b"secret".to_vec()]));
        let request = TestRequest::post()
            .app_data(verifier)
            .insert_header((
                SIGNATURE_HEADER,
                sign(b"wrong", signature::now_unix(), BRANCH_BODY),
            ))
            .set_payload(BRANCH_BODY);
        let error = extract_branch(request).await.unwrap_err();
        let (status, content_type, problem) = problem_of(error.error_response()).await;
        assert_eq!(status, 401);
        assert_eq!(content_type.as_deref(), Some(PROBLEM_JSON));
        assert_eq!(problem.code, "bad_signature");
    }

    #[actix_web::test]
    async fn rejects_a_branch_call_whose_key_names_another_phase() {
        let request = TestRequest::post()
            .insert_header((
                IDEMPOTENCY_KEY_HEADER,
                "0190b6c2-5a1e-7000-8000-000000000001:debit:commit",
            ))
            .set_payload(BRANCH_BODY);
        let error = extract_branch(request).await.unwrap_err();
        assert!(matches!(error, Error::KeyMismatch { .. }), "{error}");
        assert_eq!(error.status_code(), StatusCode::BAD_REQUEST);
    }

    #[actix_web::test]
    async fn a_saga_call_is_not_a_branch_call_and_the_other_way_round() {
        let error = extract_branch(TestRequest::post().set_payload(BODY))
            .await
            .unwrap_err();
        let (status, _, problem) = problem_of(error.error_response()).await;
        assert_eq!((status, problem.code.as_str()), (400, "malformed_call"));
        let error = extract(TestRequest::post().set_payload(BRANCH_BODY))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Malformed(_)), "{error}");
    }

    #[actix_web::test]
    async fn rejects_a_branch_body_over_one_mebibyte_with_413() {
        let big = vec![b' '; MAX_CALL_BODY + 1];
        let error = extract_branch(TestRequest::post().set_payload(big))
            .await
            .unwrap_err();
        assert_eq!(error.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[actix_web::test]
    async fn xa_failures_answer_500_without_internal_text_and_wrong_phases_400() {
        let error = crate::xa::Error::Effect("relation \"secret_table\" does not exist".into());
        let (status, _, problem) = problem_of(error.error_response()).await;
        assert_eq!((status, problem.code.as_str()), (500, "participant_error"));
        assert!(
            !problem.detail.contains("secret_table"),
            "{}",
            problem.detail
        );

        let error = crate::xa::Error::PhaseMismatch {
            endpoint: crate::protocol::BranchPhase::Commit,
            got: crate::protocol::BranchPhase::Abort,
        };
        let (status, _, problem) = problem_of(error.error_response()).await;
        assert_eq!((status, problem.code.as_str()), (400, "malformed_call"));
    }

    #[actix_web::test]
    async fn barrier_failures_answer_500_without_internal_text() {
        let error =
            crate::barrier::Error::Effect("relation \"secret_table\" does not exist".into());
        let (status, _, problem) = problem_of(error.error_response()).await;
        assert_eq!(status, 500);
        assert_eq!(problem.code, "participant_error");
        assert!(
            !problem.detail.contains("secret_table"),
            "{}",
            problem.detail
        );
    }
}
