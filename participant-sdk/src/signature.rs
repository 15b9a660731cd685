//! Request signing: the `Settle-Signature` header the coordinator puts on every
//! participant call, and the verifier a participant uses to check it (HMAC-SHA256
//! over `"{t}.{body}"`, with an age limit and up to two secrets during rotation).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How a signature header fails verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request carries no `Settle-Signature` header.
    #[error("the request is not signed")]
    Missing,
    /// The header is not `t={unix seconds},v1={hex}`.
    #[error("the signature header is malformed: {0}")]
    Malformed(&'static str),
    /// The timestamp is older than the allowed age.
    #[error("the signature is {age_seconds}s old, older than the allowed {max_age_seconds}s")]
    Expired {
        age_seconds: u64,
        max_age_seconds: u64,
    },
    /// The timestamp lies further in the future than clock skew explains.
    #[error("the signature is dated {ahead_seconds}s in the future")]
    FromTheFuture { ahead_seconds: u64 },
    /// No active secret produces this signature for this body.
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Shorthand for results of signature verification.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Most `v1=` values a header may carry (two during a rotation, with room to spare).
const MAX_SIGNATURES: usize = 4;

/// The default largest age of a signature a [`Verifier`] accepts.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);

fn mac(secret: &[u8], unix_seconds: u64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Signs a request body: returns the `Settle-Signature` header value
/// `t={unix_seconds},v1={hex HMAC-SHA256(secret, "{t}.{body}")}`.
///
/// ```
/// use settle_participant::signature::sign;
/// let header = sign(b"secret", 1_700_000_000, br#"{"step":"charge-payment"}"#);
/// assert!(header.starts_with("t=1700000000,v1="));
/// assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
/// ```
pub fn sign(secret: &[u8], unix_seconds: u64, body: &[u8]) -> String {
    let digest = mac(secret, unix_seconds, body).finalize().into_bytes();
    format!("t={unix_seconds},v1={}", hex::encode(digest))
}

/// Signs with every active secret while the coordinator rotates them:
/// `t={t},v1={sig with the first},v1={sig with the second}`. A participant that
/// knows either secret accepts it, so participants can switch one at a time.
///
/// ```
/// use settle_participant::signature::{sign_with_all, Verifier};
/// let body = br#"{"step":"charge-payment"}"#;
/// let header = sign_with_all(&[b"new".as_slice(), b"old".as_slice()], 1_700_000_000, body);
/// assert_eq!(header.matches("v1=").count(), 2);
/// let only_old = Verifier::new(vec![b"old".to_vec()]);
/// assert!(only_old.verify(Some(&header), body, 1_700_000_001).is_ok());
/// let only_new = Verifier::new(vec![b"new".to_vec()]);
/// assert!(only_new.verify(Some(&header), body, 1_700_000_001).is_ok());
/// ```
pub fn sign_with_all(secrets: &[&[u8]], unix_seconds: u64, body: &[u8]) -> String {
    let mut header = format!("t={unix_seconds}");
    for secret in secrets {
        let digest = mac(secret, unix_seconds, body).finalize().into_bytes();
        header.push_str(",v1=");
        header.push_str(&hex::encode(digest));
    }
    header
}

/// The current time in unix seconds, as [`Verifier::verify`] and [`sign`] expect it.
///
/// ```
/// assert!(settle_participant::signature::now_unix() > 1_700_000_000);
/// ```
pub fn now_unix() -> u64 {
    // A clock before 1970 is a broken clock; treating it as the epoch makes every
    // signature look expired rather than panicking.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks `Settle-Signature` headers against the active secrets.
///
/// Keep two secrets while rotating: the coordinator signs with the new one as soon
/// as it is configured, and participants accept both until the old one is retired.
///
/// ```
/// use settle_participant::signature::{sign, Verifier};
/// let verifier = Verifier::new(vec![b"new".to_vec(), b"old".to_vec()]);
/// let body = br#"{"step":"charge-payment"}"#;
/// let header = sign(b"old", 1_700_000_000, body);
/// assert!(verifier.verify(Some(&header), body, 1_700_000_010).is_ok());
/// assert!(verifier.verify(Some(&header), b"{}", 1_700_000_010).is_err());
/// ```
#[derive(Clone)]
pub struct Verifier {
    /// The active secrets; a signature made with any of them is accepted.
    pub secrets: Vec<Vec<u8>>,
    /// The largest accepted age (and, as allowed clock skew, the largest accepted
    /// distance into the future) of a signature's timestamp.
    pub max_age: Duration,
}

impl std::fmt::Debug for Verifier {
    // Secrets never appear in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("max_age", &self.max_age)
            .finish()
    }
}

impl Verifier {
    /// A verifier accepting signatures by any of `secrets`, at most [`DEFAULT_MAX_AGE`] old.
    ///
    /// ```
    /// let verifier = settle_participant::signature::Verifier::new(vec![b"secret".to_vec()]);
    /// assert_eq!(verifier.max_age.as_secs(), 300);
    /// ```
    pub fn new(secrets: Vec<Vec<u8>>) -> Self {
        Verifier {
            secrets,
            max_age: DEFAULT_MAX_AGE,
        }
    }

    /// The same verifier with another age limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use settle_participant::signature::Verifier;
    /// let verifier = Verifier::new(vec![b"secret".to_vec()]).with_max_age(Duration::from_secs(30));
    /// assert_eq!(verifier.max_age, Duration::from_secs(30));
    /// ```
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Verifies a `Settle-Signature` header value for `body` at time `now_unix`.
    ///
    /// ```
    /// use settle_participant::signature::{sign, Error, Verifier};
    /// let verifier = Verifier::new(vec![b"secret".to_vec()]);
    /// let header = sign(b"secret", 1_700_000_000, b"{}");
    /// assert_eq!(verifier.verify(Some(&header), b"{}", 1_700_000_001), Ok(()));
    /// assert_eq!(verifier.verify(None, b"{}", 1_700_000_001), Err(Error::Missing));
    /// ```
    pub fn verify(&self, header: Option<&str>, body: &[u8], now_unix: u64) -> Result<()> {
        let header = header.ok_or(Error::Missing)?;
        let (timestamp, signatures) = parse_header(header)?;
        let max_age = self.max_age.as_secs();
        if timestamp < now_unix {
            let age = now_unix - timestamp;
            if age > max_age {
                return Err(Error::Expired {
                    age_seconds: age,
                    max_age_seconds: max_age,
                });
            }
        } else if timestamp - now_unix > max_age {
            return Err(Error::FromTheFuture {
                ahead_seconds: timestamp - now_unix,
            });
        }
        let accepted = self.secrets.iter().any(|secret| {
            signatures
                .iter()
                .any(|signature| mac(secret, timestamp, body).verify_slice(signature).is_ok())
        });
        if accepted {
            Ok(())
        } else {
            Err(Error::Mismatch)
        }
    }
}

/// Splits `t={t},v1={hex}[,v1={hex}]` into the timestamp and the raw signatures.
fn parse_header(header: &str) -> Result<(u64, Vec<Vec<u8>>)> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(Error::Malformed("expected key=value pairs"))?;
        match key {
            "t" => {
                let t = value
                    .parse::<u64>()
                    .map_err(|_| Error::Malformed("t is not a unix timestamp"))?;
                timestamp = Some(t);
            }
            "v1" => {
                let bytes = hex::decode(value).map_err(|_| Error::Malformed("v1 is not hex"))?;
                if signatures.len() >= MAX_SIGNATURES {
                    return Err(Error::Malformed("too many v1= signatures"));
                }
                signatures.push(bytes);
            }
            // Later schemes (v2, ...) may ride along; this verifier only knows v1.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Error::Malformed("no t= timestamp"))?;
    if signatures.is_empty() {
        return Err(Error::Malformed("no v1= signature"));
    }
    Ok((timestamp, signatures))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"transaction_id":"0190b6c2-5a1e-7000-8000-000000000001"}"#;

    fn verifier() -> Verifier {
        Verifier::new(vec![b"current-secret".to_vec()])
    }

    #[test]
    fn accepts_a_fresh_signature_over_the_same_body() {
        let header = sign(b"current-secret", NOW - 10, BODY);
        assert_eq!(verifier().verify(Some(&header), BODY, NOW), Ok(()));
    }

    #[test]
    fn signature_matches_an_independently_computed_hmac() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign(b"key", NOW, br#"{"a":1}"#),
            "t=1700000000,v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }

    #[test]
    fn rejects_a_tampered_body() {
        let header = sign(b"current-secret", NOW, BODY);
        let tampered = br#"{"transaction_id":"0190b6c2-5a1e-7000-8000-000000000002"}"#;
        assert_eq!(
            verifier().verify(Some(&header), tampered, NOW),
            Err(Error::Mismatch)
        );
    }

    #[test]
    fn rejects_a_signature_by_an_unknown_secret() {
        let header = sign(b"someone-else", NOW, BODY);
        assert_eq!(
            verifier().verify(Some(&header), BODY, NOW),
            Err(Error::Mismatch)
        );
    }

    #[test]
    fn a_rotation_header_verifies_with_either_secret_and_not_with_a_third() {
        let header = sign_with_all(&[b"new-secret".as_slice(), b"current-secret"], NOW, BODY);
        assert_eq!(verifier().verify(Some(&header), BODY, NOW), Ok(()));
        let new_only = Verifier::new(vec![b"new-secret".to_vec()]);
        assert_eq!(new_only.verify(Some(&header), BODY, NOW), Ok(()));
        let neither = Verifier::new(vec![b"third".to_vec()]);
        assert_eq!(
            neither.verify(Some(&header), BODY, NOW),
            Err(Error::Mismatch)
        );
        assert_eq!(
            verifier().verify(Some(&header), b"{}", NOW),
            Err(Error::Mismatch)
        );
        let stuffed = format!("{header},v1=00,v1=00,v1=00");
        assert_eq!(
            verifier().verify(Some(&stuffed), BODY, NOW),
            Err(Error::Malformed("too many v1= signatures"))
        );
    }

    #[test]
    fn rejects_a_signature_older_than_the_max_age() {
        let header = sign(b"current-secret", NOW - 301, BODY);
        assert_eq!(
            verifier().verify(Some(&header), BODY, NOW),
            Err(Error::Expired {
                age_seconds: 301,
                max_age_seconds: 300
            })
        );
        let at_the_limit = sign(b"current-secret", NOW - 300, BODY);
        assert_eq!(verifier().verify(Some(&at_the_limit), BODY, NOW), Ok(()));
    }

    #[test]
    fn rejects_a_signature_dated_too_far_in_the_future() {
        let header = sign(b"current-secret", NOW + 301, BODY);
        assert_eq!(
            verifier().verify(Some(&header), BODY, NOW),
            Err(Error::FromTheFuture { ahead_seconds: 301 })
        );
    }

    #[test]
    fn accepts_the_second_secret_during_rotation() {
        let rotating = Verifier::new(vec![b"new-secret".to_vec(), b"old-secret".to_vec()]);
        let by_old = sign(b"old-secret", NOW, BODY);
        let by_new = sign(b"new-secret", NOW, BODY);
        assert_eq!(rotating.verify(Some(&by_old), BODY, NOW), Ok(()));
        assert_eq!(rotating.verify(Some(&by_new), BODY, NOW), Ok(()));
        assert_eq!(
            verifier().verify(Some(&by_old), BODY, NOW),
            Err(Error::Mismatch)
        );
    }

    #[test]
    fn rejects_missing_and_malformed_headers() {
        let v = verifier();
        assert_eq!(v.verify(None, BODY, NOW), Err(Error::Missing));
        for header in [
            "",
            "garbage",
            "t=abc,v1=00",
            "t=1700000000",
            "v1=00ff",
            "t=1700000000,v1=not-hex",
        ] {
            assert!(
                matches!(v.verify(Some(header), BODY, NOW), Err(Error::Malformed(_))),
                "{header:?} should be malformed"
            );
        }
    }

    #[test]
    fn debug_output_does_not_show_secrets() {
        let printed = format!("{:?}", verifier());
        assert!(!printed.contains("current-secret"), "{printed}");
        assert!(printed.contains("1 redacted"), "{printed}");
    }
}
