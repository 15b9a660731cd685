//! The operator commands of `settle` (`tx …`, `def …`): thin clients of the REST
//! API through the SDK, printing tables for people and JSON with `--json`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;
use settle_participant::api::BulkAction;
use settle_participant::client::CoordinatorClient;
use uuid::Uuid;

use super::filters::Filters;

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
        #[command(flatten)]
        filters: Filters,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue where a previous page ended (its `next` cursor).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One transaction with its timeline.
    Show { id: Uuid },
    /// Retry now: a stuck saga compensates again with a fresh budget; a step or
    /// phase-two call waiting on its backoff is called at once.
    Retry(Acting),
    /// Stop retries and driving until `resume`.
    Pause(Acting),
    /// Drive a paused transaction again.
    Resume(Acting),
    /// Roll back: a running saga compensates, an undecided 2PC transaction aborts.
    Compensate(Acting),
    /// Mark a saga step done with an output, after fixing its participant by hand.
    Skip {
        id: Uuid,
        #[arg(long)]
        step: String,
        /// The step's output as JSON (default null).
        #[arg(long)]
        output: Option<String>,
        /// Why, for the timeline.
        #[arg(long)]
        note: Option<String>,
    },
    /// Close a stuck transaction for good.
    Resolve(Acting),
    /// Apply retry, pause, resume, compensate or resolve to every match of the filters.
    Bulk {
        action: String,
        #[command(flatten)]
        filters: Filters,
        /// Only count the matches.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        note: Option<String>,
    },
}

/// One transaction and the operator's note.
#[derive(Debug, Args)]
pub struct Acting {
    pub id: Uuid,
    /// Why, for the timeline.
    #[arg(long)]
    pub note: Option<String>,
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
            filters,
            limit,
            cursor,
        } => {
            let mut owned = filters.query();
            owned.push(("limit", limit.to_string()));
            if let Some(c) = cursor {
                owned.push(("cursor", c));
            }
            let query: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = client.admin_list(&query).await?;
            print(target.json, &page, |page| {
                let mut out = format!(
                    "{:<36}  {:<5}  {:<19}  {:<20}  {:<24}  REASON\n",
                    "ID", "KIND", "STATE", "DEFINITION", "UPDATED"
                );
                for t in &page.items {
                    let state = if t.paused {
                        format!("{} (paused)", t.state)
                    } else {
                        t.state.clone()
                    };
                    out.push_str(&format!(
                        "{:<36}  {:<5}  {:<19}  {:<20}  {:<24}  {}\n",
                        t.id,
                        t.kind,
                        state,
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
                if let Some(next) = &page.next_cursor {
                    out.push_str(&format!("more: --cursor {next}\n"));
                }
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
        Tx::Retry(a) => act(&client, target, a, "retry").await,
        Tx::Pause(a) => act(&client, target, a, "pause").await,
        Tx::Resume(a) => act(&client, target, a, "resume").await,
        Tx::Compensate(a) => act(&client, target, a, "compensate").await,
        Tx::Resolve(a) => act(&client, target, a, "resolve").await,
        Tx::Skip {
            id,
            step,
            output,
            note,
        } => {
            let output: serde_json::Value = match output {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("--output is not JSON: {e}"))?,
                None => serde_json::Value::Null,
            };
            let body = serde_json::json!({ "step": step, "output": output, "note": note });
            let accepted = client.admin_action(id, "skip", &body).await?;
            print(target.json, &accepted, |a| {
                format!("{}: skip {step} applied, now {}\n", a.id, a.state)
            })
        }
        Tx::Bulk {
            action,
            filters,
            dry_run,
            note,
        } => {
            let owned = filters.query();
            let query: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let result = client
                .admin_bulk(&action, &query, &BulkAction { dry_run, note })
                .await?;
            print(target.json, &result, |r| {
                if r.dry_run {
                    format!(
                        "{}: {} would be considered (dry run)\n",
                        r.action, r.matched
                    )
                } else {
                    format!(
                        "{}: matched {}, applied {}, skipped {}\n",
                        r.action, r.matched, r.applied, r.skipped
                    )
                }
            })
        }
    }
}

async fn act(
    client: &CoordinatorClient,
    target: &Target,
    acting: Acting,
    action: &str,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "note": acting.note });
    let accepted = client.admin_action(acting.id, action, &body).await?;
    print(target.json, &accepted, |a| {
        format!("{}: {action} applied, now {}\n", a.id, a.state)
    })
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
