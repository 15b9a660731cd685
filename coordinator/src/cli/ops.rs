//! The operator commands of `settle` (`tx …`, `def …`): thin clients of the REST
//! API through the SDK, printing tables for people and JSON with `--json`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;
use settle_participant::client::CoordinatorClient;
use uuid::Uuid;

/// Where the coordinator is, for the operator commands.
#[derive(Debug, Args)]
pub struct Target {
    /// The coordinator's base URL.
    #[arg(
        long,
        env = "SETTLE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Bearer token (a reader token reads, an operator token acts).
    #[arg(long, env = "SETTLE_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

impl Target {
    /// The API client these options describe.
    fn client(&self) -> anyhow::Result<CoordinatorClient> {
        let client = CoordinatorClient::new(&self.url)?;
        Ok(match &self.token {
            Some(token) => client.with_token(token)?,
            None => client,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Tx {
    /// List transactions, newest first (`--state stuck` is the to-do list).
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        definition: Option<String>,
        /// Created longer ago than this, e.g. 5m.
        #[arg(long)]
        older_than: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One transaction with its timeline.
    Show { id: Uuid },
    /// Send a stuck saga back to compensation with a fresh retry budget.
    Retry {
        id: Uuid,
        /// Why, for the timeline.
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Def {
    /// The latest version of every saga definition.
    List,
    /// The latest version of one definition.
    Show { name: String },
    /// Register a definition from a YAML or JSON file (its `name` inside names it).
    Register { file: PathBuf },
}

fn print<T: Serialize>(
    json: bool,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", table(value));
    }
    Ok(())
}

pub async fn tx(target: &Target, command: Tx) -> anyhow::Result<()> {
    let client = target.client()?;
    match command {
        Tx::List {
            state,
            kind,
            definition,
            older_than,
            limit,
        } => {
            let limit = limit.to_string();
            let mut query: Vec<(&str, &str)> = vec![("limit", &limit)];
            for (key, value) in [
                ("state", &state),
                ("kind", &kind),
                ("definition", &definition),
                ("older_than", &older_than),
            ] {
                if let Some(v) = value {
                    query.push((key, v));
                }
            }
            let page = client.admin_list(&query).await?;
            print(target.json, &page, |page| {
                let mut out = format!(
                    "{:<36}  {:<5}  {:<12}  {:<20}  {:<24}  REASON\n",
                    "ID", "KIND", "STATE", "DEFINITION", "UPDATED"
                );
                for t in &page.items {
                    out.push_str(&format!(
                        "{:<36}  {:<5}  {:<12}  {:<20}  {:<24}  {}\n",
                        t.id,
                        t.kind,
                        t.state,
                        t.definition.as_deref().unwrap_or("-"),
                        t.updated_at,
                        t.reason.as_deref().unwrap_or("")
                    ));
                }
                let counts: Vec<String> = page
                    .counts
                    .iter()
                    .map(|(s, n)| format!("{s}={n}"))
                    .collect();
                out.push_str(&format!("counts: {}\n", counts.join(" ")));
                out
            })
        }
        Tx::Show { id } => {
            let detail = client.admin_transaction(id).await?;
            print(target.json, &detail, |d| {
                let s = &d.summary;
                let mut out = format!(
                    "{} {} {}{}\n",
                    s.id,
                    s.kind,
                    s.state,
                    s.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
                if let Some(saga) = &d.saga {
                    for step in &saga.steps {
                        out.push_str(&format!(
                            "  step {:<24} {:<12} attempts={} compensations={}{}\n",
                            step.name,
                            step.state,
                            step.attempts,
                            step.compensation_attempts,
                            step.last_error
                                .as_deref()
                                .map(|e| format!(" last error: {e}"))
                                .unwrap_or_default()
                        ));
                    }
                }
                if let Some(tx) = &d.transaction {
                    for b in &tx.branches {
                        out.push_str(&format!("  branch {:<22} {:<12}\n", b.name, b.state));
                    }
                }
                out.push_str("timeline:\n");
                for e in &d.events {
                    out.push_str(&format!(
                        "  {} {:<16} {} {} {} {} {}\n",
                        e.at,
                        e.kind,
                        e.step.as_deref().unwrap_or(""),
                        e.phase.as_deref().unwrap_or(""),
                        e.status_code.map(|c| c.to_string()).unwrap_or_default(),
                        e.error.as_deref().unwrap_or(""),
                        e.actor
                    ));
                }
                out
            })
        }
        Tx::Retry { id, note } => {
            let accepted = client.admin_retry(id, note.as_deref()).await?;
            print(target.json, &accepted, |a| {
                format!("{} is {} again\n", a.id, a.state)
            })
        }
    }
}

pub async fn def(target: &Target, command: Def) -> anyhow::Result<()> {
    let client = target.client()?;
    match command {
        Def::List => {
            let all = client.list_definitions().await?;
            print(target.json, &all, |all| {
                let mut out = format!(
                    "{:<32}  {:>7}  {:>5}  DESCRIPTION\n",
                    "NAME", "VERSION", "STEPS"
                );
                for d in all {
                    out.push_str(&format!(
                        "{:<32}  {:>7}  {:>5}  {}\n",
                        d.name,
                        d.latest_version,
                        d.steps,
                        d.description.as_deref().unwrap_or("")
                    ));
                }
                out
            })
        }
        Def::Show { name } => {
            let d = client.get_definition(&name).await?;
            print(target.json, &d, |d| {
                format!(
                    "{} v{} ({})\n{}\n",
                    d.name,
                    d.version,
                    d.digest,
                    serde_json::to_string_pretty(&d.spec).unwrap_or_default()
                )
            })
        }
        Def::Register { file } => {
            let body = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let format = crate::definition::Format::from_path(&file)
                .unwrap_or(crate::definition::Format::Yaml);
            let doc = crate::definition::parse(body.as_bytes(), format)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let content_type = match format {
                crate::definition::Format::Json => "application/json",
                crate::definition::Format::Yaml => "application/yaml",
            };
            let (d, created) = client
                .register_definition(&doc.name, &body, content_type)
                .await?;
            print(target.json, &d, |d| {
                format!(
                    "{} v{} {}\n",
                    d.name,
                    d.version,
                    if created { "registered" } else { "unchanged" }
                )
            })
        }
    }
}
