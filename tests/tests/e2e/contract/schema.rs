//! A small validator for the JSON Schema subset openapi/coordinator.yaml uses, and
//! the lookup from a real response (method, path, status, content type) to the
//! schema the document promises for it. Small on purpose: a keyword it does not
//! know fails the test instead of passing unchecked.

use serde_json::Value;

/// Keywords that only describe, or that this validator deliberately leaves to
/// schemathesis (`pattern`, `format` other than uuid and date-time).
const ANNOTATIONS: &[&str] = &[
    "description",
    "examples",
    "example",
    "default",
    "title",
    "pattern",
    "deprecated",
];

pub struct Spec<'a> {
    pub root: &'a Value,
}

impl Spec<'_> {
    /// The schema for a response, or why there is none: an undocumented status or
    /// content type is a contract violation too.
    pub fn response_schema(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: &str,
    ) -> Result<Option<&Value>, String> {
        let (template, item) = self.root["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .filter(|(template, _)| matches_template(template, path))
            // `/x/{id}` and a literal `/x/bulk` both match `/x/bulk`: the literal wins.
            .max_by_key(|(template, _)| template.split('/').filter(|s| !s.starts_with('{')).count())
            .ok_or_else(|| format!("no path in the spec matches {path}"))?;
        let operation = &item[method.to_lowercase()];
        if !operation.is_object() {
            return Err(format!("{method} {template} is not in the spec"));
        }
        let responses = &operation["responses"];
        let response = [
            status.to_string(),
            format!("{}XX", status / 100),
            "default".into(),
        ]
        .iter()
        .map(|k| &responses[k.as_str()])
        .find(|r| !r.is_null())
        .ok_or_else(|| format!("{method} {template} does not document status {status}"))?;
        let response = self.resolve(response);
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return Ok(None);
        };
        let media = content_type.split(';').next().unwrap_or("").trim();
        let entry = content.get(media).ok_or_else(|| {
            format!(
                "{method} {template} {status} documents {:?}, not {media}",
                content.keys().collect::<Vec<_>>()
            )
        })?;
        Ok(entry.get("schema"))
    }

    fn resolve<'v>(&'v self, value: &'v Value) -> &'v Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("only local $ref: {reference}"));
                let target = self
                    .root
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}"));
                self.resolve(target)
            }
            None => value,
        }
    }

    /// Every way `value` breaks `schema`, each with its JSON pointer.
    pub fn validate(&self, value: &Value, schema: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(value, schema, "", &mut errors);
        errors
    }

    fn check(&self, value: &Value, schema: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                errors.push(format!("{at}: no value is allowed here"));
                return;
            }
            Value::Object(map) => map,
            other => panic!("not a schema at {at}: {other}"),
        };
        for (keyword, rule) in schema {
            match keyword.as_str() {
                "$ref" => self.check(
                    value,
                    self.resolve(&Value::Object(schema.clone())),
                    at,
                    errors,
                ),
                "type" => {
                    let allowed: Vec<&str> = match rule {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                        other => panic!("type {other} at {at}"),
                    };
                    if !allowed.iter().any(|t| has_type(value, t)) {
                        errors.push(format!("{at}: {value} is not of type {allowed:?}"));
                    }
                }
                "enum" => {
                    let options = rule.as_array().expect("enum is an array");
                    if !options.contains(value) {
                        errors.push(format!("{at}: {value} is not one of {rule}"));
                    }
                }
                "const" => {
                    if value != rule {
                        errors.push(format!("{at}: {value} is not {rule}"));
                    }
                }
                "allOf" => {
                    for part in rule.as_array().expect("allOf is an array") {
                        self.check(value, part, at, errors);
                    }
                }
                "anyOf" | "oneOf" => {
                    let passing = rule
                        .as_array()
                        .expect("anyOf/oneOf is an array")
                        .iter()
                        .filter(|part| self.validate(value, part).is_empty())
                        .count();
                    if passing == 0 || (keyword == "oneOf" && passing > 1) {
                        errors.push(format!("{at}: {passing} of the {keyword} schemas match"));
                    }
                }
                "properties" => {
                    if let Value::Object(object) = value {
                        for (name, sub) in rule.as_object().expect("properties") {
                            if let Some(v) = object.get(name) {
                                self.check(v, sub, &format!("{at}/{name}"), errors);
                            }
                        }
                    }
                }
                "required" => {
                    if let Value::Object(object) = value {
                        for name in rule
                            .as_array()
                            .expect("required")
                            .iter()
                            .filter_map(Value::as_str)
                        {
                            if !object.contains_key(name) {
                                errors.push(format!("{at}: required property {name} is missing"));
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Value::Object(object) = value {
                        let declared = schema.get("properties").and_then(Value::as_object);
                        for (name, v) in object {
                            if !declared.is_some_and(|d| d.contains_key(name)) {
                                self.check(v, rule, &format!("{at}/{name}"), errors);
                            }
                        }
                    }
                }
                "items" => {
                    if let Value::Array(items) = value {
                        for (i, item) in items.iter().enumerate() {
                            self.check(item, rule, &format!("{at}/{i}"), errors);
                        }
                    }
                }
                "minItems" | "maxItems" => {
                    if let Value::Array(items) = value {
                        let bound = rule.as_u64().expect("a count") as usize;
                        if (keyword == "minItems" && items.len() < bound)
                            || (keyword == "maxItems" && items.len() > bound)
                        {
                            errors.push(format!(
                                "{at}: {} items breaks {keyword} {bound}",
                                items.len()
                            ));
                        }
                    }
                }
                "uniqueItems" => {
                    if let (Value::Array(items), Value::Bool(true)) = (value, rule) {
                        for (i, item) in items.iter().enumerate() {
                            if items[..i].contains(item) {
                                errors.push(format!("{at}/{i}: a repeated item"));
                            }
                        }
                    }
                }
                "minLength" | "maxLength" => {
                    if let Value::String(s) = value {
                        let bound = rule.as_u64().expect("a length") as usize;
                        let len = s.chars().count();
                        if (keyword == "minLength" && len < bound)
                            || (keyword == "maxLength" && len > bound)
                        {
                            errors.push(format!("{at}: length {len} breaks {keyword} {bound}"));
                        }
                    }
                }
                "minimum" | "maximum" => {
                    if let Some(n) = value.as_f64() {
                        let bound = rule.as_f64().expect("a number");
                        if (keyword == "minimum" && n < bound)
                            || (keyword == "maximum" && n > bound)
                        {
                            errors.push(format!("{at}: {n} breaks {keyword} {bound}"));
                        }
                    }
                }
                "format" => {
                    if let Value::String(s) = value {
                        let ok = match rule.as_str() {
                            Some("uuid") => uuid::Uuid::parse_str(s).is_ok(),
                            Some("date-time") => is_date_time(s),
                            _ => true,
                        };
                        if !ok {
                            errors.push(format!("{at}: {s:?} is not a {rule}"));
                        }
                    }
                }
                other if ANNOTATIONS.contains(&other) => {}
                other => panic!(
                    "the contract validator does not know the keyword {other} (at {at}); teach it"
                ),
            }
        }
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unknown type {other}"),
    }
}

/// RFC 3339: `2026-01-02T03:04:05[.fff](Z|±hh:mm)`.
fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let head = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let zone = s.ends_with('Z') || s.ends_with('z') || {
        let tail = &b[b.len().saturating_sub(6)..];
        tail.len() == 6 && matches!(tail[0], b'+' | b'-') && tail[3] == b':'
    };
    head && zone
}

/// `/v1/sagas/{id}` matches `/v1/sagas/0192…`; segments must line up one to one.
pub fn matches_template(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}
