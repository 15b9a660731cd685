//! Settle's own statements as a pgbench script: the creation batch and three
//! state-write batches of one, with their events, as the coordinator sends them for
//! a 3-step saga at 1 client, their text taken from the code. Run against a
//! database with Settle's schema, pgbench then measures what Postgres alone spends
//! on a saga, next to the naive four commits of `bench/saga_writes.sql`
//! (`scripts/bench.sh`, docs/PERFORMANCE.md).

use settle_coordinator::store::batch::WRITE_BATCH;
use settle_coordinator::store::create::CREATE_BATCH;

/// The saga's id, from pgbench's random `:n`.
const ID: &str = "lpad(to_hex(:n::bigint), 32, '0')";
/// Far enough ahead that no timer is ever due.
const LATER_MS: &str = "4102444800000";
const INPUT: &str = r#"{"sku": "widget", "quantity": 1, "amount": 10, "customer": "bench"}"#;
/// The saga's three steps, in order.
const STEPS: [&str; 3] = ["a", "b", "c"];

/// The definition the script's sagas name: insert it (version 1) before running.
pub const DEFINITION: &str = "bench";

/// The script. pgbench reads `:name` as a variable even inside quotes, so the
/// JSON here has a space after each colon, and the webhook's time format is
/// spelled `HH24":"MI":"SS` (the same output as `HH24:MI:SS`).
pub fn settle_statements() -> String {
    let mut script = String::from("\\set n random(1, 9000000000000000)\n");
    let creation = format!(
        "jsonb_build_array(jsonb_build_object('id', {ID}, 'kind', 'saga', 'definition', '{DEFINITION}', \
         'version', 1, 'state', 'running', 'input', '{INPUT}'::jsonb, 'progress', '{}'::jsonb, \
         'request_digest', 'bench', 'deadline_ms', {LATER_MS}, 'next_ms', {LATER_MS}, 'lease_ms', 15000, \
         'actor', 'bench'))",
        progress(0)
    );
    script.push_str(
        CREATE_BATCH
            .trim()
            .replace("$1::jsonb", &creation)
            .replace("$2", "'bench'")
            .as_str(),
    );
    script.push_str("\n\\gset\n");
    for (done, step) in STEPS.iter().enumerate() {
        let last = done + 1 == STEPS.len();
        let next_event = match STEPS.get(done + 1) {
            Some(next) => event("step_started", next),
            None => event("completed", ""),
        };
        let write = format!(
            "jsonb_build_array(jsonb_build_object('id', {ID}, 'fence', :fence::bigint, \
             'write_id', gen_random_uuid(), 'state', '{}', 'progress', '{}'::jsonb, \
             'next_ms', {LATER_MS}, 'due_now', true, 'lease_ms', 15000, 'finished', {last}, \
             'notify', false, 'events', jsonb_build_array({}, {next_event})))",
            if last { "completed" } else { "running" },
            progress(done + 1),
            event("step_succeeded", step)
        );
        script.push_str(
            WRITE_BATCH
                .trim()
                .replace("$1::jsonb", &write)
                .replace("$2::uuid[]", &format!("ARRAY[{ID}::uuid]"))
                .replace("HH24:MI:SS", "HH24\":\"MI\":\"SS")
                .as_str(),
        );
        script.push_str(";\n");
    }
    script
}

/// A saga's progress with `done` of its three steps succeeded and the next under way.
fn progress(done: usize) -> String {
    let steps: Vec<String> = STEPS
        .iter()
        .enumerate()
        .map(|(i, name)| match i.cmp(&done) {
            std::cmp::Ordering::Less => format!(
                r#"{{"name": "{name}", "status": "succeeded", "attempts": 1, "output": {{}}}}"#
            ),
            std::cmp::Ordering::Equal => {
                format!(
                    r#"{{"name": "{name}", "status": "running", "attempts": 1, "in_flight": true}}"#
                )
            }
            std::cmp::Ordering::Greater => format!(r#"{{"name": "{name}", "status": "pending"}}"#),
        })
        .collect();
    format!(
        r#"{{"status": "running", "deadline": {LATER_MS}, "steps": [{}], "seq": {}}}"#,
        steps.join(", "),
        done + 1
    )
}

fn event(kind: &str, step: &str) -> String {
    format!(
        "jsonb_build_object('kind', '{kind}', 'step', '{step}', \
         'phase', 'action', 'attempt', 1, 'status_code', 200, 'duration_ms', 0, 'actor', 'coordinator')"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names pgbench would take for variables: `:` then a letter or `_`,
    /// except in a `::` cast.
    fn variables(script: &str) -> Vec<String> {
        let bytes = script.as_bytes();
        let mut found = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b':' {
                if bytes.get(i + 1) == Some(&b':') {
                    i += 2;
                    continue;
                }
                let name: String = script[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                    found.push(name);
                }
            }
            i += 1;
        }
        found.sort();
        found.dedup();
        found
    }

    #[test]
    fn the_script_sends_the_coordinators_statements_with_only_its_own_variables() {
        let script = settle_statements();
        assert_eq!(variables(&script), ["fence", "n"]);
        assert_eq!(script.matches("INSERT INTO transactions").count(), 1);
        assert_eq!(script.matches("UPDATE transactions t").count(), 3);
        assert_eq!(script.matches("\\gset").count(), 1);
        assert!(!script.contains('$'), "a parameter left unreplaced");
        for progress in (0..4).map(progress) {
            serde_json::from_str::<serde_json::Value>(&progress).unwrap();
        }
    }
}
