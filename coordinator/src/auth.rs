//! Bearer tokens and roles, without I/O: which role each route needs, how tokens are
//! hashed for the configuration, and the constant-time check of a presented token.

use sha2::{Digest, Sha256};

/// What a token may do (DESIGN.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Definitions, and starting and driving transactions.
    Service,
    /// Admin actions, and every read.
    Operator,
    /// Reads only.
    Reader,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "service" => Some(Role::Service),
            "operator" => Some(Role::Operator),
            "reader" => Some(Role::Reader),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Service => "service",
            Role::Operator => "operator",
            Role::Reader => "reader",
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Probes, the spec and the dashboard's static files: no token needed.
    Open,
    /// Any valid token (routes that do not exist: the caller learns nothing without one).
    AnyToken,
    /// A token with one of these roles.
    Roles(&'static [Role]),
}

const READ_ANYTHING: &[Role] = &[Role::Reader, Role::Operator, Role::Service];
const ADMIN_READ: &[Role] = &[Role::Reader, Role::Operator];
const ADMIN_WRITE: &[Role] = &[Role::Operator];
const SERVICE_WRITE: &[Role] = &[Role::Service];

/// The access rule of `method path`.
pub fn access(method: &str, path: &str) -> Access {
    let read = matches!(method, "GET" | "HEAD");
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if matches!(path, "/healthz" | "/readyz" | "/openapi.json") || under("/ui") {
        Access::Open
    } else if path == "/metrics" {
        Access::Roles(ADMIN_READ)
    } else if under("/v1/admin") {
        Access::Roles(if read { ADMIN_READ } else { ADMIN_WRITE })
    } else if under("/v1/saga-definitions") || under("/v1/sagas") || under("/v1/transactions") {
        Access::Roles(if read { READ_ANYTHING } else { SERVICE_WRITE })
    } else {
        Access::AnyToken
    }
}

/// A configured token: its name (the actor in timelines), role and SHA-256 digest.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    pub digest: [u8; 32],
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The configuration form of a token's hash: `sha256:` and 64 hex digits.
pub fn hash_token(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// Reads `sha256:<64 hex>` back into a digest.
pub fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex_digits = text.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_digits).ok()?;
    bytes.try_into().ok()
}

/// A fresh random token (256 bits from the OS) in the form `settle_<64 hex>`.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("settle_{}", hex::encode(bytes))
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        difference |= x ^ y;
    }
    std::hint::black_box(difference) == 0
}

/// The entry a presented token belongs to. Every entry is compared, matched or not,
/// so the time taken says nothing about which one (if any) matched.
pub fn find<'a>(entries: &'a [TokenEntry], presented: &str) -> Option<&'a TokenEntry> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for entry in entries {
        if constant_time_eq(&entry.digest, &digest) && found.is_none() {
            found = Some(entry);
        }
    }
    found
}

/// Why a request is refused, before any handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// A token that matches no configured entry, or a header that is not a bearer token.
    InvalidToken,
    /// A valid token whose role may not call this route.
    WrongRole { name: String, role: Role },
}

/// Checks a request's `Authorization` header against the rule of its route.
/// `Ok(None)` lets an open route through without a caller; `Ok(Some(entry))` names the caller.
pub fn authorize<'a>(
    entries: &'a [TokenEntry],
    rule: Access,
    authorization: Option<&str>,
) -> Result<Option<&'a TokenEntry>, Refusal> {
    if rule == Access::Open {
        return Ok(None);
    }
    let header = authorization.ok_or(Refusal::MissingToken)?;
    let (scheme, token) = header.split_once(' ').ok_or(Refusal::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Refusal::InvalidToken);
    }
    let entry = find(entries, token.trim()).ok_or(Refusal::InvalidToken)?;
    match rule {
        Access::Roles(roles) if !roles.contains(&entry.role) => Err(Refusal::WrongRole {
            name: entry.name.clone(),
            role: entry.role,
        }),
        _ => Ok(Some(entry)),
    }
}

/// The roles that may call a route, for error messages.
pub fn describe(rule: Access) -> String {
    match rule {
        Access::Open => "no token".into(),
        Access::AnyToken => "any valid token".into(),
        Access::Roles(roles) => roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, role: Role, token: &str) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            role,
            digest: parse_hash(&hash_token(token)).unwrap(),
        }
    }

    #[test]
    fn every_route_group_has_its_roles() {
        use Role::*;
        let cases: &[(&str, &str, Access)] = &[
            ("GET", "/healthz", Access::Open),
            ("GET", "/readyz", Access::Open),
            ("GET", "/openapi.json", Access::Open),
            ("GET", "/ui/", Access::Open),
            ("GET", "/ui", Access::Open),
            ("GET", "/ui/assets/app.js", Access::Open),
            ("GET", "/uix", Access::AnyToken),
            ("GET", "/metrics", Access::Roles(&[Reader, Operator])),
            (
                "GET",
                "/v1/admin/transactions",
                Access::Roles(&[Reader, Operator]),
            ),
            (
                "POST",
                "/v1/admin/transactions/x/retry",
                Access::Roles(&[Operator]),
            ),
            (
                "PUT",
                "/v1/saga-definitions/order",
                Access::Roles(&[Service]),
            ),
            (
                "GET",
                "/v1/saga-definitions",
                Access::Roles(&[Reader, Operator, Service]),
            ),
            ("POST", "/v1/sagas", Access::Roles(&[Service])),
            (
                "GET",
                "/v1/sagas/x",
                Access::Roles(&[Reader, Operator, Service]),
            ),
            ("POST", "/v1/sagas/x/cancel", Access::Roles(&[Service])),
            ("POST", "/v1/transactions", Access::Roles(&[Service])),
            (
                "POST",
                "/v1/transactions/x/branches",
                Access::Roles(&[Service]),
            ),
            (
                "GET",
                "/v1/transactions/x",
                Access::Roles(&[Reader, Operator, Service]),
            ),
            ("GET", "/v1/sagasx", Access::AnyToken),
            ("DELETE", "/nowhere", Access::AnyToken),
        ];
        for (method, path, expected) in cases {
            assert_eq!(access(method, path), *expected, "{method} {path}");
        }
    }

    #[test]
    fn hashes_round_trip_and_reject_other_forms() {
        let hash = hash_token("s3cret");
        assert!(hash.starts_with("sha256:") && hash.len() == 7 + 64);
        assert!(parse_hash(&hash).is_some());
        for bad in [
            "s3cret",
            "sha256:",
            "sha256:zz",
            "md5:00",
            &hash[..hash.len() - 2],
        ] {
            assert_eq!(parse_hash(bad), None, "{bad}");
        }
    }

    #[test]
    fn new_tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), "settle_".len() + 64);
    }

    #[test]
    fn authorization_outcomes() {
        let entries = [
            entry("orders", Role::Service, "svc-token"),
            entry("alice", Role::Operator, "op-token"),
            entry("dash", Role::Reader, "read-token"),
        ];
        let admin_write = access("POST", "/v1/admin/transactions/x/retry");
        let admin_read = access("GET", "/v1/admin/transactions");
        let start = access("POST", "/v1/sagas");
        let name = |r: Result<Option<&TokenEntry>, Refusal>| r.map(|e| e.map(|e| e.name.clone()));

        assert_eq!(
            name(authorize(&entries, admin_write, Some("Bearer op-token"))),
            Ok(Some("alice".into()))
        );
        assert_eq!(
            name(authorize(&entries, admin_read, Some("bearer read-token"))),
            Ok(Some("dash".into()))
        );
        assert_eq!(
            name(authorize(&entries, start, Some("Bearer svc-token"))),
            Ok(Some("orders".into()))
        );
        assert_eq!(
            authorize(&entries, admin_write, Some("Bearer read-token")),
            Err(Refusal::WrongRole {
                name: "dash".into(),
                role: Role::Reader
            })
        );
        assert_eq!(
            authorize(&entries, start, Some("Bearer op-token")),
            Err(Refusal::WrongRole {
                name: "alice".into(),
                role: Role::Operator
            })
        );
        assert_eq!(authorize(&entries, start, None), Err(Refusal::MissingToken));
        for bad in [
            "Bearer nope",
            "Basic b3A6dG9rZW4=",
            "Bearer ",
            "op-token",
            "Bearer op-token2",
        ] {
            assert_eq!(
                authorize(&entries, start, Some(bad)),
                Err(Refusal::InvalidToken),
                "{bad}"
            );
        }
        assert_eq!(
            authorize(&entries, access("GET", "/healthz"), None),
            Ok(None)
        );
    }
}
