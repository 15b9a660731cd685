//! Saga definitions as users write them (YAML or JSON), their validation with
//! errors that name the offending field, and their compilation into the
//! machine's [`SagaSpec`].

mod document;
mod validate;

pub use document::{Document, EndpointDoc, RetryDoc, StepDoc};
pub use validate::{
    check_allowed, check_duration, check_name, check_participants, check_url, compile,
};

use sha2::{Digest, Sha256};

/// The largest number of steps a definition may have.
pub const MAX_STEPS: usize = 100;

/// A definition that cannot be accepted, and where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// Path of the offending field, e.g. `steps[1].action.url` (empty for the whole document).
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// How a definition body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// From a Content-Type; YAML (a superset of JSON) when absent or unknown.
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        match content_type.map(|c| c.split(';').next().unwrap_or("").trim()) {
            Some("application/json") => Format::Json,
            _ => Format::Yaml,
        }
    }

    /// From a file name in the `sagas/` directory.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// Parses a definition document, naming the field of the first problem.
pub fn parse(body: &[u8], format: Format) -> Result<Document, Invalid> {
    match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_slice(body);
            serde_path_to_error::deserialize(&mut de).map_err(located)
        }
        Format::Yaml => {
            let de = serde_norway::Deserializer::from_slice(body);
            serde_path_to_error::deserialize(de).map_err(located)
        }
    }
}

fn located<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> Invalid {
    let path = e.path().to_string();
    if path.contains('?') {
        // A syntax error: no field to blame, so keep the line and column.
        return Invalid::new("", format!("not valid YAML/JSON: {}", e.into_inner()));
    }
    let field = if path == "." { String::new() } else { path };
    Invalid::new(field, clean_serde_message(&e.into_inner().to_string()))
}

/// Drops serde's trailing " at line L column C" so the message reads as a sentence;
/// the field path already says where.
fn clean_serde_message(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Hex SHA-256 of the normalized document: equal content, equal digest.
pub fn digest(doc: &Document) -> String {
    let canonical = serde_json::to_vec(doc).unwrap_or_default();
    hex::encode(Sha256::digest(canonical))
}
