//! Validation of a definition document and its compilation into a [`SagaSpec`]:
//! every rejection names the field, so a 422 tells the author what to fix.

use std::collections::HashMap;
use std::time::Duration;

use super::{Document, EndpointDoc, Invalid, RetryDoc, MAX_STEPS};
use crate::allow::AllowList;
use crate::machine::retry::RetryPolicy;
use crate::machine::spec::{Endpoint, SagaSpec, StepSpec};

const DEFAULT_SAGA_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_SAGA_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
const MAX_ATTEMPTS: i64 = 1000;
const MAX_NAME_LEN: usize = 100;
const MAX_DESCRIPTION_LEN: usize = 2000;
const MAX_URL_LEN: usize = 2048;

/// Checks a document and compiles it as version `version`.
pub fn compile(doc: &Document, version: i32) -> Result<SagaSpec, Invalid> {
    check_name("name", &doc.name)?;
    if let Some(d) = &doc.description {
        if d.len() > MAX_DESCRIPTION_LEN {
            return Err(Invalid::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
            ));
        }
    }
    let timeout = match &doc.timeout {
        Some(t) => check_duration("timeout", t, Duration::from_millis(100), MAX_SAGA_TIMEOUT)?,
        None => DEFAULT_SAGA_TIMEOUT,
    };
    let saga_retry = merge_retry("retry", RetryPolicy::default(), doc.retry.as_ref())?;

    if doc.steps.is_empty() {
        return Err(Invalid::new("steps", "a saga needs at least one step"));
    }
    if doc.steps.len() > MAX_STEPS {
        return Err(Invalid::new(
            "steps",
            format!(
                "at most {MAX_STEPS} steps are allowed, got {}",
                doc.steps.len()
            ),
        ));
    }

    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in doc.steps.iter().enumerate() {
        let field = format!("steps[{i}].name");
        check_name(&field, &step.name)?;
        if index.insert(step.name.as_str(), i).is_some() {
            return Err(Invalid::new(
                field,
                format!("duplicate step name '{}'", step.name),
            ));
        }
    }

    let mut steps = Vec::with_capacity(doc.steps.len());
    for (i, step) in doc.steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        let step_retry = merge_retry(&format!("{at}.retry"), saga_retry, step.retry.as_ref())?;
        let action = endpoint(&format!("{at}.action"), &step.action, step_retry)?;
        let compensation = step
            .compensation
            .as_ref()
            .map(|c| endpoint(&format!("{at}.compensation"), c, step_retry))
            .transpose()?;
        let depends_on = match &step.depends_on {
            None if i == 0 => vec![],
            None => vec![i - 1],
            Some(names) => {
                let mut deps = Vec::with_capacity(names.len());
                for (j, name) in names.iter().enumerate() {
                    let field = format!("{at}.depends_on[{j}]");
                    let Some(&d) = index.get(name.as_str()) else {
                        return Err(Invalid::new(field, format!("unknown step '{name}'")));
                    };
                    if d == i {
                        return Err(Invalid::new(field, "a step cannot depend on itself"));
                    }
                    if deps.contains(&d) {
                        return Err(Invalid::new(field, format!("'{name}' is listed twice")));
                    }
                    deps.push(d);
                }
                deps
            }
        };
        steps.push(StepSpec {
            name: step.name.clone(),
            action,
            compensation,
            depends_on,
        });
    }
    check_acyclic(&steps)?;

    Ok(SagaSpec {
        name: doc.name.clone(),
        version,
        timeout_ms: timeout.as_millis() as i64,
        steps,
    })
}

/// Kahn's algorithm; a step left over sits on a cycle.
fn check_acyclic(steps: &[StepSpec]) -> Result<(), Invalid> {
    let mut remaining: Vec<usize> = steps.iter().map(|s| s.depends_on.len()).collect();
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| remaining[i] == 0).collect();
    let mut seen = 0;
    while let Some(done) = ready.pop() {
        seen += 1;
        for (i, step) in steps.iter().enumerate() {
            if step.depends_on.contains(&done) {
                remaining[i] -= 1;
                if remaining[i] == 0 {
                    ready.push(i);
                }
            }
        }
    }
    if seen == steps.len() {
        return Ok(());
    }
    let on_cycle: Vec<&str> = (0..steps.len())
        .filter(|&i| remaining[i] > 0)
        .map(|i| steps[i].name.as_str())
        .collect();
    let first = (0..steps.len()).find(|&i| remaining[i] > 0).unwrap_or(0);
    Err(Invalid::new(
        format!("steps[{first}].depends_on"),
        format!("dependency cycle among steps {}", on_cycle.join(", ")),
    ))
}

pub fn check_name(field: &str, name: &str) -> Result<(), Invalid> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars {
        return Err(Invalid::new(
            field,
            format!(
                "must be 1 to {MAX_NAME_LEN} characters of letters, digits, '-', '_' or '.', got '{}'",
                truncate(name, 120)
            ),
        ));
    }
    Ok(())
}

fn endpoint(at: &str, doc: &EndpointDoc, inherited: RetryPolicy) -> Result<Endpoint, Invalid> {
    check_url(&format!("{at}.url"), &doc.url)?;
    let timeout = match &doc.timeout {
        Some(t) => check_duration(
            &format!("{at}.timeout"),
            t,
            Duration::from_millis(1),
            MAX_CALL_TIMEOUT,
        )?,
        None => DEFAULT_CALL_TIMEOUT,
    };
    let retry = merge_retry(&format!("{at}.retry"), inherited, doc.retry.as_ref())?;
    Ok(Endpoint {
        url: doc.url.clone(),
        timeout_ms: timeout.as_millis() as u64,
        retry,
    })
}

/// Every participant URL of a definition is on the allow-list; the error names the field and the URL.
pub fn check_participants(doc: &Document, allow: &AllowList) -> Result<(), Invalid> {
    for (i, step) in doc.steps.iter().enumerate() {
        check_allowed(&format!("steps[{i}].action.url"), &step.action.url, allow)?;
        if let Some(compensation) = &step.compensation {
            check_allowed(
                &format!("steps[{i}].compensation.url"),
                &compensation.url,
                allow,
            )?;
        }
    }
    Ok(())
}

/// One URL: its form ([`check_url`]), then the allow-list.
pub fn check_allowed(field: &str, url: &str, allow: &AllowList) -> Result<(), Invalid> {
    let parsed = participant_url(field, url)?;
    allow.check(&parsed).map_err(|why| {
        Invalid::new(
            field,
            format!(
                "'{}' is not an allowed participant: {why}",
                truncate(url, 200)
            ),
        )
    })
}

/// A participant URL: http(s), with a host, without credentials, not absurdly long.
pub fn check_url(field: &str, url: &str) -> Result<(), Invalid> {
    participant_url(field, url).map(drop)
}

/// [`check_url`], handing back the URL parsed (once: a 2PC start checks six).
fn participant_url(field: &str, url: &str) -> Result<url::Url, Invalid> {
    if url.len() > MAX_URL_LEN {
        return Err(Invalid::new(
            field,
            format!("must be at most {MAX_URL_LEN} characters"),
        ));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| Invalid::new(field, format!("'{}' is not a URL: {e}", truncate(url, 200))))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Invalid::new(
            field,
            format!(
                "'{}' must use http or https, not {}",
                truncate(url, 200),
                parsed.scheme()
            ),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Invalid::new(field, "the URL has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Invalid::new(
            field,
            "credentials in participant URLs are not allowed",
        ));
    }
    Ok(parsed)
}

fn merge_retry(
    at: &str,
    base: RetryPolicy,
    doc: Option<&RetryDoc>,
) -> Result<RetryPolicy, Invalid> {
    let Some(doc) = doc else {
        return Ok(base);
    };
    let mut policy = base;
    if let Some(n) = doc.max_attempts {
        if !(1..=MAX_ATTEMPTS).contains(&n) {
            return Err(Invalid::new(
                format!("{at}.max_attempts"),
                format!("must be between 1 and {MAX_ATTEMPTS}, got {n}"),
            ));
        }
        policy.max_attempts = n as u32;
    }
    if let Some(t) = &doc.initial_backoff {
        let d = check_duration(
            &format!("{at}.initial_backoff"),
            t,
            Duration::from_millis(1),
            MAX_BACKOFF,
        )?;
        policy.initial_backoff_ms = d.as_millis() as u64;
    }
    if let Some(t) = &doc.max_backoff {
        let d = check_duration(
            &format!("{at}.max_backoff"),
            t,
            Duration::from_millis(1),
            MAX_BACKOFF,
        )?;
        policy.max_backoff_ms = d.as_millis() as u64;
    }
    if let Some(m) = doc.multiplier {
        if !m.is_finite() || !(1.0..=10.0).contains(&m) {
            return Err(Invalid::new(
                format!("{at}.multiplier"),
                format!("must be between 1.0 and 10.0, got {m}"),
            ));
        }
        policy.multiplier = m;
    }
    if policy.max_backoff_ms < policy.initial_backoff_ms {
        return Err(Invalid::new(
            format!("{at}.max_backoff"),
            format!(
                "must not be shorter than initial_backoff ({}ms < {}ms)",
                policy.max_backoff_ms, policy.initial_backoff_ms
            ),
        ));
    }
    Ok(policy)
}

/// A duration such as `500ms` or `2s`, between `min` and `max`.
pub fn check_duration(
    field: &str,
    text: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, Invalid> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        Invalid::new(
            field,
            format!(
                "'{}' is not a duration like 500ms, 2s or 5m: {e}",
                truncate(text, 60)
            ),
        )
    })?;
    if d < min || d > max {
        return Err(Invalid::new(
            field,
            format!(
                "must be between {} and {}, got {}",
                humantime::format_duration(min),
                humantime::format_duration(max),
                truncate(text, 60)
            ),
        ));
    }
    Ok(d)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{parse, Format};

    const GOOD: &str = r#"
name: order-checkout
timeout: 60s
retry: { max_attempts: 5, initial_backoff: 200ms, max_backoff: 10s, multiplier: 2.0 }
steps:
  - name: reserve
    action: { url: "http://127.0.0.1:7101/reservations", timeout: 2s }
    compensation: { url: "http://127.0.0.1:7101/reservations/release" }
  - name: charge
    action: { url: "http://127.0.0.1:7102/charges" }
    compensation: { url: "http://127.0.0.1:7102/refunds", retry: { max_attempts: 9 } }
    retry: { max_attempts: 3 }
  - name: notify
    depends_on: [charge]
    action: { url: "http://127.0.0.1:7103/emails" }
"#;

    fn check(yaml: &str) -> Result<SagaSpec, Invalid> {
        compile(&parse(yaml.as_bytes(), Format::Yaml)?, 1)
    }

    #[test]
    fn a_good_definition_compiles_with_inherited_policies() {
        let spec = check(GOOD).unwrap();
        assert_eq!(spec.timeout_ms, 60_000);
        assert_eq!(spec.steps[0].action.timeout_ms, 2_000);
        assert_eq!(spec.steps[1].action.retry.max_attempts, 3);
        assert_eq!(
            spec.steps[1]
                .compensation
                .as_ref()
                .unwrap()
                .retry
                .max_attempts,
            9
        );
        assert_eq!(spec.steps[0].action.retry.initial_backoff_ms, 200);
        assert_eq!(spec.steps[1].depends_on, vec![0]);
        assert_eq!(spec.steps[2].depends_on, vec![1]);
        assert!(spec.steps[2].compensation.is_none());
    }

    #[test]
    fn rejections_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("unknown top-level key", "name: x\nsteps: []\nbogus: 1\n", "bogus"),
            (
                "unknown step key",
                "name: x\nsteps:\n  - name: a\n    action: { url: 'http://h/a' }\n    colour: red\n",
                "steps[0].colour",
            ),
            (
                "duplicate step names",
                "name: x\nsteps:\n  - { name: a, action: { url: 'http://h/a' } }\n  - { name: a, action: { url: 'http://h/b' } }\n",
                "steps[1].name",
            ),
            (
                "dependency cycle",
                "name: x\nsteps:\n  - { name: a, depends_on: [b], action: { url: 'http://h/a' } }\n  - { name: b, depends_on: [a], action: { url: 'http://h/b' } }\n",
                "steps[0].depends_on",
            ),
            (
                "unknown dependency",
                "name: x\nsteps:\n  - { name: a, depends_on: [zzz], action: { url: 'http://h/a' } }\n",
                "steps[0].depends_on[0]",
            ),
            (
                "self dependency",
                "name: x\nsteps:\n  - { name: a, depends_on: [a], action: { url: 'http://h/a' } }\n",
                "steps[0].depends_on[0]",
            ),
            (
                "non-http URL",
                "name: x\nsteps:\n  - { name: a, action: { url: 'ftp://h/a' } }\n",
                "steps[0].action.url",
            ),
            (
                "not a URL",
                "name: x\nsteps:\n  - { name: a, action: { url: 'reservations' } }\n",
                "steps[0].action.url",
            ),
            (
                "zero timeout",
                "name: x\nsteps:\n  - { name: a, action: { url: 'http://h/a', timeout: 0s } }\n",
                "steps[0].action.timeout",
            ),
            (
                "absurd saga timeout",
                "name: x\ntimeout: 400d\nsteps:\n  - { name: a, action: { url: 'http://h/a' } }\n",
                "timeout",
            ),
            (
                "negative attempts",
                "name: x\nsteps:\n  - { name: a, retry: { max_attempts: -1 }, action: { url: 'http://h/a' } }\n",
                "steps[0].retry.max_attempts",
            ),
            (
                "absurd multiplier",
                "name: x\nretry: { multiplier: 1000 }\nsteps:\n  - { name: a, action: { url: 'http://h/a' } }\n",
                "retry.multiplier",
            ),
            (
                "backoff cap below the start",
                "name: x\nretry: { initial_backoff: 5s, max_backoff: 1s }\nsteps:\n  - { name: a, action: { url: 'http://h/a' } }\n",
                "retry.max_backoff",
            ),
            (
                "not a duration",
                "name: x\ntimeout: soon\nsteps:\n  - { name: a, action: { url: 'http://h/a' } }\n",
                "timeout",
            ),
            ("no steps", "name: x\nsteps: []\n", "steps"),
            (
                "bad name",
                "name: 'has spaces'\nsteps:\n  - { name: a, action: { url: 'http://h/a' } }\n",
                "name",
            ),
            ("missing steps", "name: x\n", ""),
        ];
        for (what, yaml, field) in cases {
            let err = check(yaml).expect_err(what);
            assert_eq!(&err.field, field, "{what}: {err}");
            assert!(!err.message.is_empty(), "{what}");
        }
    }

    #[test]
    fn json_and_yaml_give_the_same_digest() {
        let doc = parse(GOOD.as_bytes(), Format::Yaml).unwrap();
        let json = serde_json::to_vec(&doc).unwrap();
        let again = parse(&json, Format::Json).unwrap();
        assert_eq!(super::super::digest(&doc), super::super::digest(&again));
    }

    #[test]
    fn too_many_steps_are_refused() {
        let mut yaml = String::from("name: big\nsteps:\n");
        for i in 0..=MAX_STEPS {
            yaml.push_str(&format!(
                "  - {{ name: s{i}, action: {{ url: 'http://h/{i}' }} }}\n"
            ));
        }
        assert_eq!(check(&yaml).unwrap_err().field, "steps");
    }
}
