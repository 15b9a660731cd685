//! Reads the coordinator's source the way a reviewer would: the routes it registers
//! (`.route("/x", web::get()…)` inside `web::scope("/v1")` or `web::resource("/y")`)
//! and the problem `code`s it passes to `ApiError`, so the drift test can hold them
//! against the OpenAPI document without a list anyone has to keep up to date.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const METHODS: &[&str] = &["get", "post", "put", "delete", "patch", "head"];

/// Every `.rs` file of the coordinator crate, comment lines dropped.
pub fn coordinator_sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../coordinator/src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    assert!(
        files.len() > 10,
        "found the coordinator sources under {root:?}"
    );
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("reading a source file");
            let code = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            (path, code)
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading the source tree") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// `(METHOD, /path/{})`: path parameters are written `{}` so names do not matter.
pub type Operation = (String, String);

pub fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '{' => {
                if depth == 0 {
                    out.push_str("{}");
                }
                depth += 1;
            }
            '}' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The routes one source file registers. Panics when a `web::get()`-style method
/// guard appears in a shape this reader does not understand, so a new way of
/// registering routes cannot slip past the drift test unseen.
pub fn routes_in(file: &Path, code: &str) -> BTreeSet<Operation> {
    // Scopes and resources: a path prefix over the extent of the call enclosing them.
    let mut prefixes: Vec<(usize, usize, String)> = Vec::new();
    for marker in ["web::scope(", "web::resource("] {
        for (at, _) in code.match_indices(marker) {
            let args = split_args(code, at + marker.len() - 1);
            let path = string_literal(args.first().map(|a| a.1).unwrap_or_default())
                .unwrap_or_else(|| panic!("{file:?}: {marker} without a literal path"));
            let end = enclosing_end(code, at)
                .unwrap_or_else(|| panic!("{file:?}: {marker} outside a call"));
            prefixes.push((at, end, path));
        }
    }
    prefixes.sort_by_key(|p| p.0);
    let prefix_at = |pos: usize| -> String {
        prefixes
            .iter()
            .filter(|(start, end, _)| *start <= pos && pos < *end)
            .map(|(_, _, p)| p.as_str())
            .collect()
    };

    let mut routes = BTreeSet::new();
    let mut understood = 0;
    for (at, _) in code.match_indices(".route(") {
        let args = split_args(code, at + ".route(".len() - 1);
        let (path, guard) = match args.as_slice() {
            [(_, first), (_, second)] => (
                string_literal(first).unwrap_or_else(|| {
                    panic!("{file:?}: .route( with a path that is not a literal: {first}")
                }),
                *second,
            ),
            [(_, only)] => (String::new(), *only),
            other => panic!("{file:?}: .route( with {} arguments", other.len()),
        };
        let method = method_of(guard).unwrap_or_else(|| {
            panic!("{file:?}: .route(\"{path}\", …) without web::get()-style method: {guard}")
        });
        routes.insert((method, normalize(&format!("{}{path}", prefix_at(at)))));
        understood += 1;
    }
    for shape in METHODS
        .iter()
        .map(|m| format!("#[{m}("))
        .chain(METHODS.iter().map(|m| format!("#[actix_web::{m}(")))
        .chain(["web::route()".to_string(), "web::method(".to_string()])
    {
        assert!(
            !code.contains(&shape),
            "{file:?}: routes registered with `{shape}`; teach tests/tests/e2e/contract/source.rs that shape"
        );
    }
    let guards: usize = METHODS
        .iter()
        .map(|m| code.matches(&format!("web::{m}()")).count())
        .sum();
    assert_eq!(
        guards, understood,
        "{file:?}: {guards} web::<method>() guards but {understood} understood .route( calls; \
         teach tests/tests/e2e/contract/source.rs the new shape"
    );
    routes
}

fn method_of(guard: &str) -> Option<String> {
    let guard = guard.trim_start();
    METHODS
        .iter()
        .find(|m| guard.starts_with(&format!("web::{m}()")))
        .map(|m| m.to_uppercase())
}

/// Every problem code passed as a literal to `ApiError::new/not_found/bad_request/
/// unprocessable/conflict`, and those passed through a `&'static str` parameter of a
/// helper (`fetch(…, "saga_not_found")`) by its callers.
pub fn problem_codes(sources: &[(PathBuf, String)]) -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    let mut forwarded: Vec<(String, usize)> = Vec::new();
    for (file, code) in sources {
        for (at, _) in code.match_indices("ApiError::") {
            let rest = &code[at + "ApiError::".len()..];
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let code_arg = match ident.as_str() {
                "new" => 1,
                "not_found" | "bad_request" | "unprocessable" | "conflict" => 0,
                _ => continue,
            };
            let open = at + "ApiError::".len() + ident.len();
            if code.as_bytes().get(open) != Some(&b'(') {
                continue;
            }
            let args = split_args(code, open);
            let Some((_, arg)) = args.get(code_arg) else {
                continue; // `ApiError::new` in a signature, not a call
            };
            match string_literal(arg) {
                Some(literal) => {
                    codes.insert(literal);
                }
                None => {
                    let name = arg.trim();
                    let (function, index) = parameter_of(code, at, name).unwrap_or_else(|| {
                        panic!("{file:?}: ApiError::{ident} with code `{name}`, neither a literal nor a parameter")
                    });
                    forwarded.push((function, index));
                }
            }
        }
    }
    for (function, index) in forwarded {
        let call = format!("{function}(");
        let mut found = 0;
        for (_, code) in sources {
            for (at, _) in code.match_indices(&call) {
                let before = &code[..at];
                if before.trim_end().ends_with("fn")
                    || before
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
                {
                    continue;
                }
                let args = split_args(code, at + call.len() - 1);
                if let Some(literal) = args.get(index).and_then(|a| string_literal(a.1)) {
                    codes.insert(literal);
                    found += 1;
                }
            }
        }
        assert!(found > 0, "no call of {function} passes a literal code");
    }
    codes
}

/// The function around `at` and the position of its parameter `name`.
fn parameter_of(code: &str, at: usize, name: &str) -> Option<(String, usize)> {
    let fn_at = code[..at].rfind("fn ")?;
    let rest = &code[fn_at + 3..];
    let function: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let open = fn_at + 3 + rest.find('(')?;
    let params = split_args(code, open);
    let index = params
        .iter()
        .position(|(_, p)| p.trim_start().starts_with(&format!("{name}:")))?;
    Some((function, index))
}

fn string_literal(arg: &str) -> Option<String> {
    let arg = arg.trim();
    let inner = arg.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('"')).then(|| inner.to_string())
}

/// The top-level arguments of the call whose `(` is at `open`: (offset, text).
fn split_args(code: &str, open: usize) -> Vec<(usize, &str)> {
    let bytes = code.as_bytes();
    assert_eq!(bytes[open], b'(');
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut start = open + 1;
    let mut i = open + 1;
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' if depth > 0 => depth -= 1,
                b')' => {
                    if !code[start..i].trim().is_empty() {
                        args.push((start, &code[start..i]));
                    }
                    return args;
                }
                b',' if depth == 0 => {
                    args.push((start, &code[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    args
}

/// Where the innermost call or block containing `at` closes.
fn enclosing_end(code: &str, at: usize) -> Option<usize> {
    let bytes = code.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    for (i, &b) in bytes.iter().enumerate().skip(at) {
        if in_string {
            if b == b'"' && bytes[i - 1] != b'\\' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    None
}
