//! The chaos suite: the real `api` and `worker` binaries on loopback, under mixed load,
//! through one fault per scenario; every accepted request is reconciled afterwards.
//!
//!   chaos [--full] [--only NAME,NAME…]
//!
//! `--full` runs each scenario at full length (minutes; `scripts/chaos`); without it,
//! the bounded form (seconds each; `scripts/test`). Prints a table per scenario and a
//! summary; exits 1 when any scenario lost an accepted request or broke another
//! promise. Needs `DATABASE_URL` (a server it may create databases on), and
//! `redis-server`, `clamd` and Python's aiosmtpd installed (`scripts/services`).

mod load;
mod reconcile;
mod scenarios;
mod stack;
mod wait;

use std::fmt::Write as _;
use std::process::ExitCode;

use scenarios::{ALL, Report, Scale};

fn usage() -> ExitCode {
    eprintln!(
        "usage: chaos [--full] [--only NAME,NAME…]\nscenarios: {}",
        ALL.join(", ")
    );
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut scale = Scale::Bounded;
    let mut only: Vec<String> = ALL.iter().map(|s| (*s).to_owned()).collect();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--full" => scale = Scale::Full,
            "--bounded" => scale = Scale::Bounded,
            "--only" => match args.next() {
                Some(list) => only = list.split(',').map(str::to_owned).collect(),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    if let Some(unknown) = only.iter().find(|n| !ALL.contains(&n.as_str())) {
        eprintln!("no scenario {unknown}");
        return usage();
    }
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for name in &only {
        // A task of its own: a panic fails this scenario, not the suite (its processes
        // are killed as their handles drop).
        let run = tokio::spawn(scenarios::run(name.clone(), scale)).await;
        match run.map_err(|panic| anyhow::anyhow!("it panicked: {panic}")) {
            Ok(Ok(report)) => {
                println!("{}", table(&report));
                reports.push(report);
            }
            Ok(Err(err)) | Err(err) => {
                println!("\n### {name}: could not run: {err:#}\n");
                errors.push(name.clone());
            }
        }
    }
    println!("{}", summary(&reports));
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name)
        .chain(errors.iter().map(String::as_str))
        .collect();
    if failed.is_empty() {
        println!(
            "chaos ({}): every scenario passed, 0 lost",
            if scale == Scale::Full {
                "full"
            } else {
                "bounded"
            }
        );
        ExitCode::SUCCESS
    } else {
        println!("chaos: FAILED: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

fn counts(map: &std::collections::BTreeMap<String, impl std::fmt::Display>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(report: &Report) -> String {
    let r = &report.reconciliation;
    let mut out = String::new();
    let _ = writeln!(out, "\n### {} — {}\n", report.name, report.fault);
    let _ = writeln!(out, "| | |\n|---|---|");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(out, "| {k} | {v} |");
    };
    row("sent", r.sent.to_string());
    row("accepted (2xx)", r.accepted.to_string());
    row("refused, by answer", counts(&r.refused));
    row("final states of the accepted", counts(&r.states));
    row("**lost**", r.lost.len().to_string());
    row(
        "duplicated messages (with a new Message-ID)",
        format!("{} ({})", r.duplicated, r.duplicated_new_id),
    );
    row(
        "sent without a 2xx to the client",
        r.unacknowledged_sent.to_string(),
    );
    row("dead jobs", counts(&r.dead));
    row("stuck (queued/running/retrying)", counts(&r.stuck));
    for (what, value) in &report.figures {
        row(what, value.clone());
    }
    row(
        "peak RSS api / worker",
        format!(
            "{:.0} / {:.0} MiB",
            report.peak_rss_api_mib, report.peak_rss_worker_mib
        ),
    );
    row("took", format!("{:.0} s", report.took.as_secs_f64()));
    let problems: Vec<&String> = r
        .lost
        .iter()
        .chain(&r.wrong)
        .chain(&report.failures)
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(out, "\nproblems:");
        for problem in problems.iter().take(20) {
            let _ = writeln!(out, "- {problem}");
        }
        if problems.len() > 20 {
            let _ = writeln!(out, "- … and {} more", problems.len() - 20);
        }
    }
    out
}

fn summary(reports: &[Report]) -> String {
    let mut out = String::from(
        "\n### summary\n\n| scenario | sent | accepted | refused | lost | duplicated | all final after the fault | peak RSS api/worker | result |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for report in reports {
        let r = &report.reconciliation;
        let recovered = report
            .figures
            .iter()
            .find(|(k, _)| k.starts_with("every accepted request final"))
            .and_then(|(_, v)| v.split(" after").next().map(str::to_owned))
            .unwrap_or_else(|| {
                r.drained_in
                    .map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
            });
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.0}/{:.0} MiB | {} |",
            report.name,
            r.sent,
            r.accepted,
            r.sent - r.accepted,
            r.lost.len(),
            r.duplicated,
            recovered,
            report.peak_rss_api_mib,
            report.peak_rss_worker_mib,
            if report.passed() { "passed" } else { "FAILED" }
        );
    }
    out
}
