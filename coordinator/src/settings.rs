//! Configuration: defaults, then an optional `settle.toml`, then `SETTLE__SECTION__KEY`
//! environment variables, validated once into values the rest of the code can trust.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A secret that cannot be printed by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub coordinator: CoordinatorSettings,
    pub participants: ParticipantSettings,
    pub log: LogSettings,
    pub twopc: TwoPcSettings,
    pub retention: RetentionSettings,
    pub testing: TestingSettings,
    pub webhook: WebhookSettings,
    pub auth: AuthSettings,
    pub limits: LimitsSettings,
}

/// Where and how operators hear that a transaction became stuck (`[webhook]`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Where notifications are POSTed; none: no notifications are queued.
    pub url: Option<String>,
    /// Signs notifications like participant calls; falls back to `participants.signing_secret`.
    pub secret: Option<Secret>,
    /// Per-delivery timeout.
    pub timeout: Duration,
    /// The longest pause between retries of one notification.
    pub max_backoff: Duration,
    /// How often the outbox is checked for due notifications.
    pub poll_interval: Duration,
}

/// Bounds on what a request may carry, beyond `server.max_body_bytes`.
#[derive(Debug, Clone)]
pub struct LimitsSettings {
    /// Request line plus headers, in bytes (431 above).
    pub max_header_bytes: usize,
    /// A saga definition document (413 above).
    pub max_definition_bytes: usize,
    /// A saga's input or a branch payload, as JSON (413 above).
    pub max_input_bytes: usize,
    /// Nesting of arrays and objects in any JSON the API accepts (400 above).
    pub max_json_depth: usize,
}

/// Who may call the API. No tokens means an open API, allowed on loopback only.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub tokens: Vec<crate::auth::TokenEntry>,
}

impl AuthSettings {
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}

/// How long finished transactions are kept.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Finished transactions older than this are purged (with their events).
    pub finished_after: Duration,
    /// Most transactions deleted per statement.
    pub batch: i64,
    /// Pause between purge rounds.
    pub interval: Duration,
}

/// Defaults of 2PC / TCC transactions.
#[derive(Debug, Clone)]
pub struct TwoPcSettings {
    /// Timeout of a transaction that does not give one.
    pub default_timeout: Duration,
    /// Per-call timeout of prepare, commit and abort calls.
    pub call_timeout: Duration,
    /// Retries of prepares, and of phase two before the transaction is flagged stuck.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    /// Also the pace of phase-two retries once stuck.
    pub max_backoff: Duration,
}

/// Fault-injection points for the crash tests; never set in production.
#[derive(Debug, Clone, Default)]
pub struct TestingSettings {
    /// `commit-decided`: stop dead right after a durable 2PC commit decision.
    pub pause_at: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain and private key (both or neither).
    pub tls: Option<TlsFiles>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long a SIGTERM waits for in-flight work before giving it back.
    pub shutdown_timeout: Duration,
    /// Longest `?wait=` a client may ask for.
    pub max_wait: Duration,
}

/// Paths of the listener's certificate chain and private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    /// How long a statement of the group-commit writer, or of a background loop,
    /// may go unanswered before its connection is given up as dead (a peer that
    /// hangs, or a network that drops packets without a reset). Also Postgres's
    /// own `statement_timeout` on every session but the migrations', so a
    /// request whose statement waits on a lock held elsewhere answers 503.
    pub statement_timeout: Duration,
    pub create_if_missing: bool,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Prefix of every key this coordinator writes, so deployments can share a Redis.
    pub key_prefix: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// Names this process in `transactions.owner` and the logs.
    pub instance_id: String,
    /// How long an owner's claim on a transaction lasts without renewal.
    pub lease: Duration,
    /// Most transactions claimed by one recovery query.
    pub claim_batch: i64,
    /// Pause between recovery scans.
    pub recovery_interval: Duration,
    /// Most creations, or state writes, carried by one statement and commit (group
    /// commit); 1 turns batching off.
    pub write_batch_max: usize,
    /// Batched statements sent at once on each of the writer's two connections
    /// (one for creations, one for state writes): Postgres runs them one after the
    /// other, the next one already waiting when the previous one commits. Two on a
    /// 2-core machine (docs/PERFORMANCE.md).
    pub write_concurrency: usize,
    /// Saga definitions loaded at start-up (`*.yaml`, `*.yml`, `*.json`); none when unset.
    pub sagas_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ParticipantSettings {
    /// Signs every participant call (`Settle-Signature`) when set.
    pub signing_secret: Option<Secret>,
    /// During a rotation, the secret being retired: calls carry a second `v1=`
    /// made with it, so participants can switch to the new secret one at a time.
    pub previous_signing_secret: Option<Secret>,
    /// Largest participant response body read (a step's output).
    pub max_response_bytes: usize,
    /// Participant calls under way at once, across all transactions; more wait
    /// their turn. Bounds sockets and memory when many transactions are in flight.
    pub max_concurrent_calls: usize,
    /// Idle keep-alive connections kept per participant host.
    pub pool_idle_per_host: usize,
    /// PEM certificates trusted for HTTPS participants besides the system's
    /// roots: a private CA, or a participant's own self-signed certificate.
    pub ca_file: Option<PathBuf>,
    /// Which participant URLs definitions and branches may name.
    pub allow: crate::allow::AllowList,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub json: bool,
    /// A `tracing_subscriber::EnvFilter` directive such as `info` or `settle_coordinator=debug`.
    pub level: String,
}

/// The raw shape read from the layers; every key is named so errors can name it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Raw {
    server: RawServer,
    database: RawDatabase,
    redis: RawRedis,
    coordinator: RawCoordinator,
    participants: RawParticipants,
    log: RawLog,
    twopc: RawTwoPc,
    retention: RawRetention,
    testing: RawTesting,
    webhook: RawWebhook,
    auth: RawAuth,
    limits: RawLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWebhook {
    url: String,
    secret: String,
    timeout: String,
    max_backoff: String,
    poll_interval: String,
}

impl Default for RawWebhook {
    fn default() -> Self {
        RawWebhook {
            url: String::new(),
            secret: String::new(),
            timeout: "5s".into(),
            max_backoff: "5m".into(),
            poll_interval: "1s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_header_bytes: usize,
    max_definition_bytes: usize,
    max_input_bytes: usize,
    max_json_depth: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_header_bytes: 16 * 1024,
            max_definition_bytes: 64 * 1024,
            max_input_bytes: 64 * 1024,
            max_json_depth: 32,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    tokens: RawTokens,
}

/// Tokens as a TOML array of tables, or (handy in an environment variable) one
/// string of `name:role:sha256:<hex>` entries separated by commas.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawTokens {
    Text(String),
    List(Vec<RawToken>),
}

impl Default for RawTokens {
    fn default() -> Self {
        RawTokens::Text(String::new())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    role: String,
    hash: String,
}

impl RawTokens {
    fn validate(self) -> Result<Vec<crate::auth::TokenEntry>, Error> {
        let raw: Vec<RawToken> = match self {
            RawTokens::List(list) => list,
            RawTokens::Text(text) => StringList::Text(text)
                .items()
                .iter()
                .enumerate()
                .map(|(i, entry)| {
                    let mut parts = entry.splitn(3, ':');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(name), Some(role), Some(hash)) => Ok(RawToken {
                            name: name.into(),
                            role: role.into(),
                            hash: hash.into(),
                        }),
                        _ => Err(Error(format!(
                            "auth.tokens[{i}]: expected name:role:sha256:<hex>"
                        ))),
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        let mut entries: Vec<crate::auth::TokenEntry> = Vec::with_capacity(raw.len());
        for (i, token) in raw.into_iter().enumerate() {
            let name = token.name.trim().to_string();
            if name.is_empty() || name.len() > 100 {
                return Err(Error(format!(
                    "auth.tokens[{i}].name: must be 1 to 100 characters"
                )));
            }
            if entries.iter().any(|e| e.name == name) {
                return Err(Error(format!(
                    "auth.tokens[{i}].name: '{name}' is configured twice"
                )));
            }
            let role = crate::auth::Role::parse(token.role.trim()).ok_or_else(|| {
                Error(format!(
                    "auth.tokens[{i}].role: '{}' is not service, operator or reader",
                    token.role
                ))
            })?;
            let digest = crate::auth::parse_hash(token.hash.trim()).ok_or_else(|| {
                Error(format!(
                    "auth.tokens[{i}].hash: expected sha256:<64 hex digits>, as `settle token hash` prints it"
                ))
            })?;
            entries.push(crate::auth::TokenEntry { name, role, digest });
        }
        Ok(entries)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetention {
    finished_after: String,
    batch: i64,
    interval: String,
}

impl Default for RawRetention {
    fn default() -> Self {
        RawRetention {
            finished_after: "30days".into(),
            batch: 1000,
            interval: "1m".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTwoPc {
    default_timeout: String,
    call_timeout: String,
    max_attempts: u32,
    initial_backoff: String,
    max_backoff: String,
}

impl Default for RawTwoPc {
    fn default() -> Self {
        RawTwoPc {
            default_timeout: "30s".into(),
            call_timeout: "10s".into(),
            max_attempts: 10,
            initial_backoff: "100ms".into(),
            max_backoff: "10s".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTesting {
    pause_at: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    tls_cert: String,
    tls_key: String,
    max_body_bytes: usize,
    shutdown_timeout: String,
    max_wait: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    url: String,
    pool_size: usize,
    connect_timeout: String,
    statement_timeout: String,
    create_if_missing: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRedis {
    url: String,
    key_prefix: String,
    timeout: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCoordinator {
    instance_id: String,
    lease: String,
    claim_batch: i64,
    recovery_interval: String,
    sagas_dir: String,
    write_batch_max: usize,
    write_concurrency: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawParticipants {
    signing_secret: String,
    previous_signing_secret: String,
    max_response_bytes: usize,
    max_concurrent_calls: usize,
    pool_idle_per_host: usize,
    ca_file: String,
    allow: StringList,
    allowed_schemes: StringList,
}

/// A list written as a TOML array or (handy in an environment variable) one
/// comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringList {
    Text(String),
    List(Vec<String>),
}

impl StringList {
    fn of(items: &[&str]) -> StringList {
        StringList::List(items.iter().map(|s| s.to_string()).collect())
    }

    fn items(self) -> Vec<String> {
        match self {
            StringList::List(list) => list,
            StringList::Text(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    json: bool,
    level: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            max_body_bytes: 256 * 1024,
            shutdown_timeout: "30s".into(),
            max_wait: "60s".into(),
        }
    }
}

impl Default for RawDatabase {
    fn default() -> Self {
        RawDatabase {
            url: "postgres://postgres@127.0.0.1:5432/settle".into(),
            pool_size: 16,
            connect_timeout: "5s".into(),
            statement_timeout: "10s".into(),
            create_if_missing: true,
        }
    }
}

impl Default for RawRedis {
    fn default() -> Self {
        RawRedis {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "settle".into(),
            timeout: "500ms".into(),
        }
    }
}

impl Default for RawCoordinator {
    fn default() -> Self {
        RawCoordinator {
            instance_id: String::new(),
            lease: "15s".into(),
            claim_batch: 100,
            recovery_interval: "1s".into(),
            sagas_dir: "sagas".into(),
            write_batch_max: 256,
            write_concurrency: 2,
        }
    }
}

impl Default for RawParticipants {
    fn default() -> Self {
        RawParticipants {
            signing_secret: String::new(),
            previous_signing_secret: String::new(),
            max_response_bytes: 1024 * 1024,
            max_concurrent_calls: 512,
            pool_idle_per_host: 64,
            ca_file: String::new(),
            allow: StringList::of(&["127.0.0.0/8", "::1/128", "localhost"]),
            allowed_schemes: StringList::of(&["http", "https"]),
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            json: false,
            level: "info".into(),
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct Error(String);

impl Settings {
    /// Loads defaults, then `file` when it exists, then `SETTLE__*` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, Error> {
        let mut builder = config::Config::builder();
        let path = file.unwrap_or(Path::new("settle.toml"));
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(file.is_some()),
        );
        builder = builder.add_source(
            config::Environment::with_prefix("SETTLE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let raw: Raw = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| Error(e.to_string()))?;
        raw.validate()
    }

    /// The defaults alone, as a fresh machine gets them.
    pub fn defaults() -> Settings {
        Raw::default()
            .validate()
            .unwrap_or_else(|e| unreachable!("the defaults are valid: {e}"))
    }
}

impl Raw {
    fn validate(self) -> Result<Settings, Error> {
        let listen: SocketAddr = self.server.listen.parse().map_err(|_| {
            Error(format!(
                "server.listen: '{}' is not an address like 127.0.0.1:8080",
                self.server.listen
            ))
        })?;
        positive("server.max_body_bytes", self.server.max_body_bytes)?;
        let tls = match (self.server.tls_cert.trim(), self.server.tls_key.trim()) {
            ("", "") => None,
            ("", _) => {
                return Err(Error(
                    "server.tls_cert: needed next to server.tls_key".into(),
                ))
            }
            (_, "") => {
                return Err(Error(
                    "server.tls_key: needed next to server.tls_cert".into(),
                ))
            }
            (cert, key) => Some(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            }),
        };
        positive("database.pool_size", self.database.pool_size)?;
        positive(
            "participants.max_concurrent_calls",
            self.participants.max_concurrent_calls,
        )?;
        positive(
            "coordinator.write_batch_max",
            self.coordinator.write_batch_max,
        )?;
        positive(
            "coordinator.write_concurrency",
            self.coordinator.write_concurrency,
        )?;
        positive(
            "participants.max_response_bytes",
            self.participants.max_response_bytes,
        )?;
        if self.database.url.trim().is_empty() {
            return Err(Error("database.url: must not be empty".into()));
        }
        if !self.redis.url.starts_with("redis://") && !self.redis.url.starts_with("rediss://") {
            return Err(Error(format!(
                "redis.url: '{}' must start with redis:// or rediss://",
                self.redis.url
            )));
        }
        if !(1..=10_000).contains(&self.coordinator.claim_batch) {
            return Err(Error(format!(
                "coordinator.claim_batch: must be between 1 and 10000, got {}",
                self.coordinator.claim_batch
            )));
        }
        let lease = duration("coordinator.lease", &self.coordinator.lease)?;
        if lease < Duration::from_millis(500) {
            return Err(Error("coordinator.lease: must be at least 500ms".into()));
        }
        let instance_id = if self.coordinator.instance_id.trim().is_empty() {
            format!(
                "settle-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            )
        } else {
            self.coordinator.instance_id
        };
        let webhook_url = self.webhook.url.trim().to_string();
        let http_url = webhook_url.starts_with("http://") || webhook_url.starts_with("https://");
        if !webhook_url.is_empty() && !http_url {
            return Err(Error(format!(
                "webhook.url: '{webhook_url}' must start with http:// or https://"
            )));
        }
        // Falls back to the participant signing secret, so receivers verify both alike.
        let webhook_secret = match self.webhook.secret.as_str() {
            "" => (!self.participants.signing_secret.is_empty())
                .then(|| Secret::new(self.participants.signing_secret.clone())),
            secret => Some(Secret::new(secret)),
        };
        if self.participants.signing_secret.is_empty()
            && !self.participants.previous_signing_secret.is_empty()
        {
            return Err(Error(
                "participants.previous_signing_secret: set only during a rotation, next to participants.signing_secret".into(),
            ));
        }
        positive(
            "limits.max_definition_bytes",
            self.limits.max_definition_bytes,
        )?;
        positive("limits.max_input_bytes", self.limits.max_input_bytes)?;
        // actix-web refuses more than 32 KiB of headers by itself, without a problem body.
        if !(1024..=32 * 1024).contains(&self.limits.max_header_bytes) {
            return Err(Error(format!(
                "limits.max_header_bytes: must be between 1024 and 32768, got {}",
                self.limits.max_header_bytes
            )));
        }
        // serde_json stops at 128 levels whatever is configured.
        if !(2..=100).contains(&self.limits.max_json_depth) {
            return Err(Error(format!(
                "limits.max_json_depth: must be between 2 and 100, got {}",
                self.limits.max_json_depth
            )));
        }
        let tokens = self.auth.tokens.validate()?;
        let allow = crate::allow::AllowList::parse(
            &self.participants.allow.items(),
            &self.participants.allowed_schemes.items(),
        )
        .map_err(|e| Error(format!("participants.{e}")))?;
        if tokens.is_empty() && !listen.ip().is_loopback() {
            return Err(Error(format!(
                "server.listen: refusing to serve an open API on {listen}, which is not a loopback address; \
                 configure auth.tokens (`settle token new NAME ROLE` makes one) or listen on 127.0.0.1"
            )));
        }
        let level = self.log.level;
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(Error(format!("log.level: '{level}' is not a valid filter")));
        }
        Ok(Settings {
            server: ServerSettings {
                listen,
                tls,
                max_body_bytes: self.server.max_body_bytes,
                shutdown_timeout: duration(
                    "server.shutdown_timeout",
                    &self.server.shutdown_timeout,
                )?,
                max_wait: duration("server.max_wait", &self.server.max_wait)?,
            },
            database: DatabaseSettings {
                url: self.database.url,
                pool_size: self.database.pool_size,
                connect_timeout: duration(
                    "database.connect_timeout",
                    &self.database.connect_timeout,
                )?,
                statement_timeout: duration(
                    "database.statement_timeout",
                    &self.database.statement_timeout,
                )?,
                create_if_missing: self.database.create_if_missing,
            },
            redis: RedisSettings {
                url: self.redis.url,
                key_prefix: self.redis.key_prefix,
                timeout: duration("redis.timeout", &self.redis.timeout)?,
            },
            coordinator: CoordinatorSettings {
                instance_id,
                lease,
                claim_batch: self.coordinator.claim_batch,
                recovery_interval: duration(
                    "coordinator.recovery_interval",
                    &self.coordinator.recovery_interval,
                )?,
                write_batch_max: self.coordinator.write_batch_max,
                write_concurrency: self.coordinator.write_concurrency,
                sagas_dir: (!self.coordinator.sagas_dir.is_empty())
                    .then(|| PathBuf::from(self.coordinator.sagas_dir)),
            },
            participants: ParticipantSettings {
                signing_secret: (!self.participants.signing_secret.is_empty())
                    .then(|| Secret::new(self.participants.signing_secret)),
                previous_signing_secret: (!self.participants.previous_signing_secret.is_empty())
                    .then(|| Secret::new(self.participants.previous_signing_secret)),
                max_response_bytes: self.participants.max_response_bytes,
                max_concurrent_calls: self.participants.max_concurrent_calls,
                pool_idle_per_host: self.participants.pool_idle_per_host,
                ca_file: (!self.participants.ca_file.trim().is_empty())
                    .then(|| PathBuf::from(self.participants.ca_file.trim())),
                allow,
            },
            log: LogSettings {
                json: self.log.json,
                level,
            },
            twopc: TwoPcSettings {
                default_timeout: duration("twopc.default_timeout", &self.twopc.default_timeout)?,
                call_timeout: duration("twopc.call_timeout", &self.twopc.call_timeout)?,
                max_attempts: match self.twopc.max_attempts {
                    0 => return Err(Error("twopc.max_attempts: must be at least 1".into())),
                    n => n,
                },
                initial_backoff: duration("twopc.initial_backoff", &self.twopc.initial_backoff)?,
                max_backoff: duration("twopc.max_backoff", &self.twopc.max_backoff)?,
            },
            retention: RetentionSettings {
                finished_after: duration("retention.finished_after", &self.retention.finished_after)?,
                batch: match self.retention.batch {
                    n @ 1..=100_000 => n,
                    n => {
                        return Err(Error(format!(
                            "retention.batch: must be between 1 and 100000, got {n}"
                        )))
                    }
                },
                interval: duration("retention.interval", &self.retention.interval)?,
            },
            webhook: WebhookSettings {
                url: (!webhook_url.is_empty()).then_some(webhook_url),
                secret: webhook_secret,
                timeout: duration("webhook.timeout", &self.webhook.timeout)?,
                max_backoff: duration("webhook.max_backoff", &self.webhook.max_backoff)?,
                poll_interval: duration("webhook.poll_interval", &self.webhook.poll_interval)?,
            },
            auth: AuthSettings { tokens },
            limits: LimitsSettings {
                max_header_bytes: self.limits.max_header_bytes,
                max_definition_bytes: self.limits.max_definition_bytes,
                max_input_bytes: self.limits.max_input_bytes,
                max_json_depth: self.limits.max_json_depth,
            },
            testing: TestingSettings {
                pause_at: match self.testing.pause_at.as_str() {
                    "" => None,
                    "commit-decided" => Some("commit-decided".into()),
                    other => {
                        return Err(Error(format!(
                            "testing.pause_at: '{other}' is not a fault-injection point (commit-decided)"
                        )))
                    }
                },
            },
        })
    }
}

fn positive(key: &str, value: usize) -> Result<(), Error> {
    if value == 0 {
        return Err(Error(format!("{key}: must be greater than zero")));
    }
    Ok(())
}

fn duration(key: &str, text: &str) -> Result<Duration, Error> {
    let d = humantime::parse_duration(text.trim()).map_err(|_| {
        Error(format!(
            "{key}: '{text}' is not a duration like 500ms, 15s or 2m"
        ))
    })?;
    if d.is_zero() {
        return Err(Error(format!("{key}: must be longer than zero")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(text: &str) -> Result<Settings, Error> {
        let dir = std::env::temp_dir().join(format!("settle-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("settle.toml");
        std::fs::write(&path, text).unwrap();
        let result = Settings::load(Some(&path));
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn defaults_work_on_a_fresh_machine() {
        let s = Settings::defaults();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.coordinator.lease, Duration::from_secs(15));
        assert!(s.database.url.ends_with("/settle"));
    }

    #[test]
    fn a_file_overrides_defaults() {
        let s = load_toml("[coordinator]\nlease = \"3s\"\nclaim_batch = 7\n").unwrap();
        assert_eq!(s.coordinator.lease, Duration::from_secs(3));
        assert_eq!(s.coordinator.claim_batch, 7);
        assert_eq!(s.database.statement_timeout, Duration::from_secs(10));
        let s = load_toml("[database]\nstatement_timeout = \"2500ms\"\n").unwrap();
        assert_eq!(s.database.statement_timeout, Duration::from_millis(2500));
        assert_eq!(s.participants.ca_file, None);
        let s = load_toml("[participants]\nca_file = \"/etc/settle/ca.pem\"\n").unwrap();
        assert_eq!(
            s.participants.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/settle/ca.pem"))
        );
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            ("[coordinator]\nlease = \"banana\"\n", "coordinator.lease"),
            ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
            (
                "[coordinator]\nclaim_batch = 0\n",
                "coordinator.claim_batch",
            ),
            ("[database]\npool_size = \"many\"\n", "pool_size"),
            (
                "[database]\nstatement_timeout = \"0s\"\n",
                "database.statement_timeout",
            ),
            ("[server]\nlistne = \"x\"\n", "listne"),
            ("[redis]\nurl = \"http://x\"\n", "redis.url"),
            ("[webhook]\nurl = \"ftp://x\"\n", "webhook.url"),
            ("[webhook]\nmax_backoff = \"soon\"\n", "webhook.max_backoff"),
            (
                "[server]\nlisten = \"0.0.0.0:8080\"\n",
                "not a loopback address",
            ),
            (
                "[auth]\ntokens = \"a:admin:sha256:00\"\n",
                "auth.tokens[0].role",
            ),
            (
                "[auth]\ntokens = \"a:reader:plain\"\n",
                "auth.tokens[0].hash",
            ),
            ("[auth]\ntokens = \"just-a-token\"\n", "auth.tokens[0]"),
            (
                "[participants]\nallow = [\"10.0.0.0/40\"]\n",
                "participants.allow",
            ),
            (
                "[participants]\nallowed_schemes = \"gopher\"\n",
                "participants.allowed_schemes",
            ),
        ];
        for (toml, key) in cases {
            let err = load_toml(toml).expect_err(toml).to_string();
            assert!(err.contains(key), "{toml:?} gave {err}");
        }
    }

    #[test]
    fn tokens_load_from_tables_or_one_string_and_open_other_addresses() {
        let ops = crate::auth::hash_token("op-token");
        let svc = crate::auth::hash_token("svc-token");
        let s = load_toml(&format!(
            "[server]\nlisten = \"0.0.0.0:8080\"\n[[auth.tokens]]\nname = \"alice\"\nrole = \"operator\"\nhash = \"{ops}\"\n\
             [[auth.tokens]]\nname = \"orders\"\nrole = \"service\"\nhash = \"{svc}\"\n"
        ))
        .unwrap();
        assert_eq!(s.server.listen.to_string(), "0.0.0.0:8080");
        let names: Vec<_> = s.auth.tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["alice", "orders"]);
        assert_eq!(
            crate::auth::find(&s.auth.tokens, "svc-token").map(|t| t.role),
            Some(crate::auth::Role::Service)
        );

        let s = load_toml(&format!(
            "[auth]\ntokens = \"alice:operator:{ops}, orders:service:{svc}\"\n"
        ))
        .unwrap();
        assert_eq!(s.auth.tokens.len(), 2);
        assert!(format!("{:?}", s.auth).contains("alice"));
        assert!(!format!("{:?}", s.auth).contains(&ops[7..]));

        let twice = load_toml(&format!(
            "[auth]\ntokens = \"alice:operator:{ops},alice:reader:{svc}\"\n"
        ));
        assert!(twice.unwrap_err().to_string().contains("configured twice"));
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }

    #[test]
    fn the_webhook_signs_with_the_participant_secret_unless_given_its_own() {
        let s = load_toml(
            "[participants]\nsigning_secret = \"p\"\n[webhook]\nurl = \"http://127.0.0.1:9/hook\"\n",
        )
        .unwrap();
        assert_eq!(s.webhook.url.as_deref(), Some("http://127.0.0.1:9/hook"));
        assert_eq!(s.webhook.secret, Some(Secret::new("p")));
        let s = load_toml("[participants]\nsigning_secret = \"p\"\n[webhook]\nsecret = \"w\"\n")
            .unwrap();
        assert_eq!(s.webhook.secret, Some(Secret::new("w")));
        assert_eq!(s.webhook.url, None, "no url: no notifications");
    }
}
