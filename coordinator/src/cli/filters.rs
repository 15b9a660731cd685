//! The list filters shared by `settle tx list` and `settle tx bulk`, spelled as
//! the admin API's query parameters so the two cannot drift.

use clap::Args;

#[derive(Debug, Default, Args)]
pub struct Filters {
    /// A state, e.g. stuck (the to-do list), running, resolved.
    #[arg(long)]
    pub state: Option<String>,
    /// saga or twopc.
    #[arg(long)]
    pub kind: Option<String>,
    /// A saga definition's name.
    #[arg(long)]
    pub definition: Option<String>,
    /// A definition version (with --definition).
    #[arg(long)]
    pub version: Option<u32>,
    /// Created longer ago than this, e.g. 5m.
    #[arg(long)]
    pub older_than: Option<String>,
    /// Not finished, and created longer ago than this, e.g. 10m.
    #[arg(long)]
    pub in_flight_longer_than: Option<String>,
    /// RFC 3339 times, e.g. 2026-01-31T12:00:00Z.
    #[arg(long)]
    pub created_after: Option<String>,
    #[arg(long)]
    pub created_before: Option<String>,
    #[arg(long)]
    pub updated_after: Option<String>,
    #[arg(long)]
    pub updated_before: Option<String>,
    /// A participant URL, its origin or a path prefix, e.g. http://payments:8080.
    #[arg(long)]
    pub participant: Option<String>,
    /// A step (saga) or branch (2PC) name.
    #[arg(long)]
    pub step: Option<String>,
    /// The start of a transaction id (hex, dashes allowed).
    #[arg(long)]
    pub id_prefix: Option<String>,
}

impl Filters {
    /// The filters that are set, as query parameters.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let version = self.version.map(|v| v.to_string());
        [
            ("state", &self.state),
            ("kind", &self.kind),
            ("definition", &self.definition),
            ("version", &version),
            ("older_than", &self.older_than),
            ("in_flight_longer_than", &self.in_flight_longer_than),
            ("created_after", &self.created_after),
            ("created_before", &self.created_before),
            ("updated_after", &self.updated_after),
            ("updated_before", &self.updated_before),
            ("participant", &self.participant),
            ("step", &self.step),
            ("id_prefix", &self.id_prefix),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.clone().map(|v| (key, v)))
        .collect()
    }
}
