//! The scanner against a real clamd loaded with the workspace's `rules/`: signatures
//! and structural rules reach one report, and an engine that is down or frozen is an
//! error — never a clean verdict.

use std::io::{Cursor, Write};
use std::time::{Duration, Instant};

use harness::clamd::ClamdServer;
use worker::scanner::{Clamd, Limits, Report, ScanError, Scanner};
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

const MIB: usize = 1024 * 1024;

/// The EICAR test file, assembled at run time so this source is not one itself.
fn eicar() -> Vec<u8> {
    [
        r"X5O!P%@AP[4\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
    ]
    .concat()
    .into_bytes()
}

fn scanner(clamd: &ClamdServer, timeout: Duration) -> Scanner {
    Scanner::new(Clamd::new(&clamd.address(), timeout), Limits::default())
}

async fn scan(scanner: &Scanner, bytes: &[u8], file_type: &str) -> Report {
    scanner
        .scan(bytes, file_type)
        .await
        .expect("the engine answers")
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content) in entries {
        writer
            .start_file(*name, SimpleFileOptions::default())
            .expect("entry");
        writer.write_all(content).expect("write");
    }
    writer.finish().expect("finish").into_inner()
}

/// Text that compresses and matches nothing, `len` bytes long.
fn prose(len: usize) -> Vec<u8> {
    b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\n"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// Bytes that do not compress (xorshift), `len` long.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test]
async fn eicar_is_infected_with_the_eicar_rule() {
    let clamd = ClamdServer::spawn().await;
    let report = scan(&scanner(&clamd, Duration::from_secs(10)), &eicar(), "text").await;
    assert!(!report.is_clean());
    assert_eq!(report.rules, ["Conveyor.Test.EICAR"]);
    assert_eq!(report.bytes, 68);
}

#[tokio::test]
async fn benign_text_is_clean() {
    let clamd = ClamdServer::spawn().await;
    let report = scan(
        &scanner(&clamd, Duration::from_secs(10)),
        b"name,email\nAda,ada@example.org\n",
        "csv",
    )
    .await;
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test]
async fn eicar_inside_an_archive_is_found_by_clamd() {
    let clamd = ClamdServer::spawn().await;
    let archive = zip_of(&[("docs/readme.txt", b"hello"), ("docs/test.txt", &eicar())]);
    let report = scan(&scanner(&clamd, Duration::from_secs(10)), &archive, "zip").await;
    assert_eq!(report.rules, ["Conveyor.Test.EICAR"]);
}

#[tokio::test]
async fn signature_and_structural_rules_share_one_sorted_report() {
    let clamd = ClamdServer::spawn().await;
    let archive = zip_of(&[("../../eicar.com", &eicar())]);
    let report = scan(&scanner(&clamd, Duration::from_secs(10)), &archive, "zip").await;
    assert_eq!(
        report.rules,
        [
            "Conveyor.Archive.Executable",
            "Conveyor.Archive.PathTraversal",
            "Conveyor.Test.EICAR",
        ]
    );
}

#[tokio::test]
async fn a_pdf_that_runs_javascript_when_opened_is_infected() {
    let clamd = ClamdServer::spawn().await;
    let pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /OpenAction 2 0 R >>\nendobj\n\
                2 0 obj\n<< /S /JavaScript /JS (app.alert(1)) >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n";
    let scanner = scanner(&clamd, Duration::from_secs(10));
    let report = scan(&scanner, pdf, "pdf").await;
    assert_eq!(report.rules, ["Conveyor.Pdf.AutoJavaScript"]);
    let plain =
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n";
    assert!(scan(&scanner, plain, "pdf").await.is_clean());
}

#[tokio::test]
async fn a_stopped_engine_is_unavailable_until_it_is_back() {
    let mut clamd = ClamdServer::spawn().await;
    let scanner = scanner(&clamd, Duration::from_secs(5));
    assert!(scan(&scanner, &eicar(), "text").await.rules.len() == 1);

    clamd.stop().await;
    let error = scanner
        .scan(b"harmless", "text")
        .await
        .expect_err("no engine");
    assert!(matches!(error, ScanError::Unavailable(_)), "{error}");
    let error = scanner.scan(&eicar(), "text").await.expect_err("no engine");
    assert!(matches!(error, ScanError::Unavailable(_)), "{error}");

    clamd.start().await;
    assert_eq!(
        scan(&scanner, &eicar(), "text").await.rules,
        ["Conveyor.Test.EICAR"]
    );
    assert!(scan(&scanner, b"harmless", "text").await.is_clean());
}

#[tokio::test]
async fn a_frozen_engine_is_unavailable_after_the_timeout() {
    let clamd = ClamdServer::spawn().await;
    let scanner = scanner(&clamd, Duration::from_millis(500));
    clamd.pause().await;
    let started = Instant::now();
    let error = scanner.scan(b"harmless", "text").await.expect_err("frozen");
    assert!(matches!(error, ScanError::Unavailable(_)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(scanner.clamd().ping().await.is_err());

    clamd.resume().await;
    assert!(scan(&scanner, b"harmless", "text").await.is_clean());
}

#[tokio::test]
async fn a_stream_past_clamds_limit_is_an_error_not_clean() {
    let clamd = ClamdServer::spawn().await;
    let scanner = scanner(&clamd, Duration::from_secs(30));
    let error = scanner
        .scan(&vec![b'a'; 64 * MIB + 1], "text")
        .await
        .expect_err("refused");
    assert!(matches!(error, ScanError::Unavailable(_)), "{error}");
}

#[tokio::test]
async fn the_engine_answers_ping_and_version() {
    let clamd = ClamdServer::spawn().await;
    let engine = Clamd::new(&clamd.address(), Duration::from_secs(5));
    engine.ping().await.expect("PONG");
    let version = engine.version().await.expect("version");
    assert!(version.starts_with("ClamAV 1."), "{version}");
}

#[tokio::test]
async fn large_files_scan_within_seconds() {
    let clamd = ClamdServer::spawn().await;
    let scanner = scanner(&clamd, Duration::from_secs(60));
    let mut timings = vec![format!("clamd start: {:?}", clamd.started_in())];
    for (label, bytes) in [("100 KiB", prose(100 * 1024)), ("20 MiB", prose(20 * MIB))] {
        let started = Instant::now();
        let report = scan(&scanner, &bytes, "text").await;
        let elapsed = started.elapsed();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.bytes, bytes.len() as u64);
        assert!(elapsed < Duration::from_secs(20), "{label}: {elapsed:?}");
        timings.push(format!("{label} scan: {elapsed:?}"));
    }
    let archive = zip_of(&[("big.bin", &noise(20 * MIB)), ("eicar.txt", &eicar())]);
    let started = Instant::now();
    let report = scan(&scanner, &archive, "zip").await;
    timings.push(format!("20 MiB zip scan: {:?}", started.elapsed()));
    assert_eq!(report.rules, ["Conveyor.Test.EICAR"]);
    eprintln!("{}", timings.join("\n"));
}
