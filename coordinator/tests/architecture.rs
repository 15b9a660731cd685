//! Architecture invariants (ARCHITECTURE.md), checked against the source tree so
//! that a change that breaks one fails here rather than in review.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reading the source tree") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

fn src(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(path)
}

/// Source without `//` comments, so prose may mention what code must not use.
fn code_of(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("reading a source file")
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_machines_do_no_io_and_never_read_the_clock() {
    let forbidden = [
        "tokio",
        "tokio_postgres",
        "deadpool",
        "redis",
        "reqwest",
        "hyper",
        "crate::outbound",
        "actix",
        "std::fs",
        "std::net",
        "SystemTime::now",
        "Instant::now",
        "std::thread",
        "async fn",
        ".await",
        "crate::store",
        "crate::driver",
        "crate::http",
        "rand::",
    ];
    let files = rust_files(&src("machine"));
    assert!(files.len() >= 3, "found the machine sources");
    for file in files {
        if file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with("_tests.rs"))
        {
            continue;
        }
        let code = code_of(&file);
        for word in forbidden {
            assert!(!code.contains(word), "{} uses {word}", file.display());
        }
    }
}

#[test]
fn every_state_write_is_fenced() {
    for file in rust_files(&src("store")) {
        let code = code_of(&file);
        // Each UPDATE of transactions that writes the state or progress must match the fence.
        for statement in code.split("UPDATE transactions").skip(1) {
            let statement: String = statement.chars().take(1000).collect();
            let end = statement
                .find("RETURNING")
                .or_else(|| statement.find('"'))
                .unwrap_or(statement.len());
            let statement = &statement[..end];
            let (set, condition) = statement.split_once("WHERE").unwrap_or((statement, ""));
            if set.contains("state =") || set.contains("progress =") {
                assert!(
                    condition.contains("fence = $2") || condition.contains("t.fence = x.fence"),
                    "unfenced state write in {}: UPDATE transactions{statement}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn participant_calls_hold_no_database_connection() {
    for path in ["driver/call.rs", "outbound.rs"] {
        let code = code_of(&src(path));
        for word in [
            "store",
            "deadpool",
            "tokio_postgres",
            "Pool",
            "transaction()",
        ] {
            assert!(
                !code.contains(word),
                "{path} must not touch the database ({word})"
            );
        }
    }
    // The store never calls out over HTTP.
    for file in rust_files(&src("store")) {
        let code = code_of(&file);
        for word in ["outbound", "hyper", "reqwest"] {
            assert!(!code.contains(word), "{} calls HTTP", file.display());
        }
    }
}

#[test]
fn only_the_http_views_turn_machine_state_into_wire_resources() {
    for file in rust_files(&src("http")) {
        let code = code_of(&file);
        if file.ends_with("views.rs") {
            continue;
        }
        assert!(
            !code.contains("machine::saga"),
            "{} reaches into machine state; go through http/views.rs",
            file.display()
        );
    }
}
