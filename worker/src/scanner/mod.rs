//! The `scans` queue's engine: clamd with our signatures in `rules/` (byte patterns),
//! and the structural [`inspect`]ors in Rust (what signatures cannot see). A file is
//! infected when any rule of either matched; an engine that cannot answer is an
//! error, never clean.

pub mod clamd;
pub mod inspect;

use bytes::Bytes;
use shared::config::ScannerConfig;

pub use clamd::Clamd;
pub use inspect::{Limits, Rule};

/// Conveyor's own signatures, as clamd loads them from `rules/` (body signatures are
/// `Name:…`, logical ones `Name;…`).
const SIGNATURE_FILES: [&str; 2] = [
    include_str!("../../../rules/conveyor.ndb"),
    include_str!("../../../rules/conveyor.ldb"),
];

/// Every rule name a verdict of Conveyor's own can carry: the inspectors' and the
/// signatures shipped in `rules/`, sorted. A signature of another database clamd
/// loads (ClamAV's official one, an operator's own file) is named by clamd at its
/// first match.
pub fn known_rules() -> Vec<&'static str> {
    let signatures = SIGNATURE_FILES.iter().flat_map(|file| {
        file.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| line.split([':', ';']).next())
    });
    let mut rules: Vec<&'static str> = Rule::ALL
        .iter()
        .map(|rule| rule.name())
        .chain(signatures)
        .collect();
    rules.sort_unstable();
    rules.dedup();
    rules
}

/// Registers `conveyor_scan_rule_matches_total` at zero for every [`known_rules`], so
/// the first match of a rule is an increase a dashboard and an alert can see.
pub fn register_rule_metrics() {
    for rule in known_rules() {
        metrics::counter!(shared::telemetry::metric::SCAN_RULE_MATCHES_TOTAL, "rule" => rule)
            .increment(0);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// No verdict: clamd unreachable, silent, refusing or answering nonsense. Retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A verdict: the rules that matched (empty when clean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rule and signature names, sorted and deduplicated.
    pub rules: Vec<String>,
    /// How many bytes were scanned.
    pub bytes: u64,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.rules.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Scanner {
    clamd: Clamd,
    limits: Limits,
}

impl Scanner {
    pub fn new(clamd: Clamd, limits: Limits) -> Scanner {
        Scanner { clamd, limits }
    }

    pub fn from_config(config: &ScannerConfig) -> Scanner {
        let limits = Limits {
            archive_max_depth: config.archive_max_depth,
            archive_max_entries: config.archive_max_entries,
            archive_max_bytes: config.archive_max_bytes,
            archive_max_ratio: config.archive_max_ratio,
            max_image_pixels: config.max_image_pixels,
            ..Limits::default()
        };
        Scanner::new(Clamd::new(&config.clamd_addr, config.timeout), limits)
    }

    pub fn clamd(&self) -> &Clamd {
        &self.clamd
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Scans `bytes`, detected as `file_type`, with the inspectors and clamd at once.
    /// An unavailable clamd fails the scan even when an inspector already matched, so
    /// a recorded verdict always names every rule. The inspectors that run off the
    /// async threads share `bytes` (a reference count, no copy).
    pub async fn scan_bytes(&self, bytes: Bytes, file_type: &str) -> Result<Report, ScanError> {
        self.scan_with(&bytes, file_type, || bytes.clone()).await
    }

    /// [`Scanner::scan_bytes`] for borrowed bytes: copied once, and only when an
    /// inspector runs off the async threads.
    pub async fn scan(&self, bytes: &[u8], file_type: &str) -> Result<Report, ScanError> {
        self.scan_with(bytes, file_type, || Bytes::copy_from_slice(bytes))
            .await
    }

    /// `owned` gives the bytes to move onto the blocking pool, when that is needed.
    async fn scan_with(
        &self,
        bytes: &[u8],
        file_type: &str,
        owned: impl FnOnce() -> Bytes,
    ) -> Result<Report, ScanError> {
        let inspection = self.inspect(bytes, file_type, owned);
        let (structural, signature) = tokio::join!(inspection, self.clamd.scan(bytes));
        let mut rules: Vec<String> = structural?
            .into_iter()
            .map(|rule| rule.name().to_owned())
            .chain(signature?)
            .collect();
        rules.sort();
        rules.dedup();
        Ok(Report {
            rules,
            bytes: bytes.len() as u64,
        })
    }

    /// The inspectors, off the async threads (on `owned()`) when they may take a while.
    async fn inspect(
        &self,
        bytes: &[u8],
        file_type: &str,
        owned: impl FnOnce() -> Bytes,
    ) -> Result<Vec<Rule>, ScanError> {
        if !inspect::is_costly(bytes, file_type) {
            return Ok(inspect::inspect(bytes, file_type, &self.limits));
        }
        let owned = owned();
        let file_type = file_type.to_owned();
        let limits = self.limits;
        tokio::task::spawn_blocking(move || inspect::inspect(&owned, &file_type, &limits))
            .await
            .map_err(|err| ScanError::Unavailable(format!("the inspectors failed: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(rules: &[&str]) -> Report {
        Report {
            rules: rules.iter().map(|r| (*r).to_owned()).collect(),
            bytes: 1,
        }
    }

    #[test]
    fn the_known_rules_are_the_inspectors_and_the_shipped_signatures() {
        let rules = known_rules();
        for rule in Rule::ALL {
            assert!(rules.contains(&rule.name()), "{rule}");
        }
        for signature in ["Conveyor.Test.EICAR", "Conveyor.Pdf.AutoJavaScript"] {
            assert!(rules.contains(&signature), "{signature} in {rules:?}");
        }
        assert!(
            rules
                .iter()
                .all(|r| r.starts_with("Conveyor.") && !r.contains(' ')),
            "{rules:?}"
        );
    }

    #[test]
    fn a_report_without_rules_is_clean() {
        assert!(report(&[]).is_clean());
        assert!(!report(&["Conveyor.Test.EICAR"]).is_clean());
    }

    #[tokio::test]
    async fn a_structural_match_never_hides_an_unavailable_engine() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let scanner = Scanner::new(
            Clamd::new(&format!("127.0.0.1:{port}"), Duration::from_secs(2)),
            Limits::default(),
        );
        let result = scanner.scan(b"not a zip", "zip").await;
        assert!(
            matches!(result, Err(ScanError::Unavailable(_))),
            "{result:?}"
        );
        let result = scanner.scan(b"plain words", "text").await;
        assert!(
            matches!(result, Err(ScanError::Unavailable(_))),
            "{result:?}"
        );
        let result = scanner
            .scan_bytes(Bytes::from_static(b"not a zip"), "zip")
            .await;
        assert!(
            matches!(result, Err(ScanError::Unavailable(_))),
            "{result:?}"
        );
    }
}
