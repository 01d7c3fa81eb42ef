//! The book's table of status transitions (docs/src/architecture/status-transitions.md,
//! "Where a status changes") against the
//! code: every function it names exists and is called by production code (not only by
//! tests), and every repository function whose SQL writes a job's, a request's or an
//! operation's status is in the table.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The functions the table names, as `module path` (under `shared/src`) and name:
/// `db::jobs::succeed` → (`db/jobs.rs`, `succeed`).
fn table() -> Vec<(String, String)> {
    let page = read(&workspace().join("docs/src/architecture/status-transitions.md"));
    let rows = page
        .lines()
        .skip_while(|l| !l.starts_with("| function |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    rows.map(|row| {
        let cell = row.split('|').nth(1).expect("a first cell").trim();
        let path = cell.trim_matches('`');
        let (module, name) = path.rsplit_once("::").expect("module::function");
        let file = match module {
            "jobs" => "jobs/enqueue.rs".to_owned(),
            other => format!("{}.rs", other.replace("::", "/")),
        };
        (file, name.to_owned())
    })
    .collect()
}

/// Every `.rs` file under `dir`, skipping test directories and files.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "tests") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("tests.rs"))
        {
            out.push(path);
        }
    }
}

/// Production code: each file of the crates' `src`, without its `#[cfg(test)]` part.
fn production() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for krate in ["api/src", "worker/src", "shared/src"] {
        sources(&workspace().join(krate), &mut files);
    }
    files
        .into_iter()
        .map(|path| {
            let text = read(&path);
            let code = match text.find("#[cfg(test)]\nmod ") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            (path, code)
        })
        .collect()
}

#[test]
fn every_function_in_the_table_exists_and_production_calls_it() {
    let rows = table();
    assert!(rows.len() >= 15, "the table has only {} rows", rows.len());
    let code = production();
    for (file, name) in rows {
        let path = workspace().join("shared/src").join(&file);
        let source = read(&path);
        assert!(
            source.contains(&format!("pub async fn {name}(")),
            "the book's table names {file}::{name}, which does not exist"
        );
        let called = code.iter().any(|(_, text)| {
            text.match_indices(&format!("{name}(")).any(|(at, _)| {
                let before = &text[..at];
                !before.ends_with("fn ") && !before.ends_with('_') && {
                    let prev = before.chars().last().unwrap_or(' ');
                    !prev.is_alphanumeric()
                }
            })
        });
        assert!(called, "nothing in production calls {file}::{name}");
    }
}

/// Whether a function's SQL creates a row with a status or assigns one: an `INSERT`
/// into a table with a status, or an `UPDATE … SET` whose assignments (up to its
/// `FROM`, `WHERE` or `RETURNING`) name `status`, `state` or `discarded_at`. The
/// shared `requeue_picked!` statement counts as its callers'.
fn writes_a_status(body: &str) -> bool {
    if body.contains("requeue_picked!")
        || [
            "INSERT INTO jobs",
            "INSERT INTO requests",
            "INSERT INTO admin_operations",
        ]
        .iter()
        .any(|insert| body.contains(insert))
    {
        return true;
    }
    body.split("UPDATE ").skip(1).any(|update| {
        let Some(set) = update.split_once(" SET ").map(|(_, rest)| rest) else {
            return false;
        };
        let end = ["FROM ", "WHERE ", "RETURNING "]
            .iter()
            .filter_map(|word| set.find(word))
            .min()
            .unwrap_or(set.len());
        let assignments = &set[..end];
        ["status =", "state =", "discarded_at ="]
            .iter()
            .any(|column| {
                assignments.starts_with(column) || assignments.contains(&format!(" {column}"))
            })
    })
}

#[test]
fn every_repository_function_that_writes_a_status_is_in_the_table() {
    let named: BTreeSet<(String, String)> = table().into_iter().collect();
    let mut writers = BTreeSet::new();
    for file in ["db/jobs.rs", "db/requests.rs", "db/operations.rs"] {
        let source = read(&workspace().join("shared/src").join(file));
        let source = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        for body in source.split("pub async fn ").skip(1) {
            let name = body.split('(').next().unwrap_or_default().to_owned();
            let body = &body[..body.find("\n}\n").unwrap_or(body.len())];
            if writes_a_status(body) {
                writers.insert((file.to_owned(), name));
            }
        }
    }
    assert!(writers.len() >= 10, "found only {writers:?}");
    let missing: Vec<_> = writers.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "these write a status but are not in the book's table: {missing:?}"
    );
}
