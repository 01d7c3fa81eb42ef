//! The `scans` queue: scans an upload's object with the engine (clamd with the rules
//! in `rules/`, and the structural inspectors) and records the verdict. `clean`
//! keeps (or brings back) the object in `stored/`; `infected` moves it to
//! `quarantine/`, from where it is never served. A scanner or storage that is
//! unavailable retries and leaves the upload as it was — never `clean` (fail closed).
//! Verdicts and moves of one upload are serialized by its row lock.

use std::time::Instant;

use shared::db::jobs::ClaimedJob;
use shared::db::uploads::{self, UploadRow};
use shared::domain::{UploadLocation, UploadStatus};
use shared::jobs::files::ScanJob;
use shared::storage::{Area, ObjectKey, Storage};
use shared::telemetry::metric;
use sqlx::PgPool;

use crate::handler::{Handler, Outcome};
use crate::scanner::Scanner;

pub struct Scans {
    pool: PgPool,
    storage: Storage,
    scanner: Scanner,
}

fn area(location: UploadLocation) -> Area {
    match location {
        UploadLocation::Staging => Area::Staging,
        UploadLocation::Stored => Area::Stored,
        UploadLocation::Quarantine => Area::Quarantine,
    }
}

impl Scans {
    pub fn new(pool: PgPool, storage: Storage, scanner: Scanner) -> Self {
        Scans {
            pool,
            storage,
            scanner,
        }
    }

    /// Records the verdict and moves the object where the verdict says, under the
    /// upload's row lock: copy, commit, then delete the old object.
    async fn record(
        &self,
        upload: &UploadRow,
        rules: &[String],
    ) -> Result<Option<ObjectKey>, String> {
        let (status, target) = if rules.is_empty() {
            (UploadStatus::Clean, UploadLocation::Stored)
        } else {
            (UploadStatus::Infected, UploadLocation::Quarantine)
        };
        let mut tx = self.pool.begin().await.map_err(|e| e.to_string())?;
        let Some(current) = uploads::lock(&mut tx, upload.id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let mut old = None;
        if current.location != target {
            let from = ObjectKey::new(area(current.location), current.id);
            let to = ObjectKey::new(area(target), current.id);
            self.storage
                .copy(&from, &to)
                .await
                .map_err(|e| format!("cannot move the object: {e}"))?;
            old = Some(from);
        }
        uploads::record_verdict(&mut *tx, current.id, status, target, rules)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(old)
    }
}

impl Handler for Scans {
    type Job = ScanJob;

    async fn handle(&self, _job: &ClaimedJob, payload: ScanJob) -> Outcome {
        let upload = match uploads::find(&self.pool, payload.upload_id, None).await {
            Ok(Some(upload)) => upload,
            Ok(None) => return Outcome::Dead("the upload no longer exists".into()),
            Err(err) => return Outcome::Retry(format!("cannot load the upload: {err}")),
        };
        if upload.location == UploadLocation::Staging {
            return Outcome::Dead("the upload was never stored".into());
        }
        let started = Instant::now();
        let key = ObjectKey::new(area(upload.location), upload.id);
        let max = u64::try_from(upload.size_bytes).unwrap_or(0);
        let bytes = match self.storage.read_all(&key, max).await {
            Ok(bytes) => bytes,
            Err(err) => {
                metrics::counter!(metric::SCAN_ERRORS_TOTAL).increment(1);
                let error = format!("cannot read the object: {err}");
                // The storage not answering a listing is down for every scan: the
                // queue waits for it. Otherwise a concurrent scan may have just moved
                // the object: the next attempt re-reads.
                if self.storage.check().await.is_err() {
                    return Outcome::Blocked {
                        dependency: "storage",
                        reason: error,
                    };
                }
                return Outcome::Retry(error);
            }
        };
        let report = match self.scanner.scan_bytes(bytes, &upload.file_type).await {
            Ok(report) => report,
            Err(err) => {
                metrics::counter!(metric::SCAN_ERRORS_TOTAL).increment(1);
                tracing::warn!(upload_id = %upload.id, error = %err, "scan failed; the upload stays pending");
                // clamd not answering a PING is down for every upload: the queue waits
                // for it without spending attempts; otherwise this scan is retried.
                if self.scanner.clamd().ping().await.is_err() {
                    return Outcome::Blocked {
                        dependency: "clamd",
                        reason: format!("scanner: {err}"),
                    };
                }
                return Outcome::Retry(format!("scanner: {err}"));
            }
        };
        let verdict = if report.is_clean() {
            "clean"
        } else {
            "infected"
        };
        let old = match self.record(&upload, &report.rules).await {
            Ok(old) => old,
            Err(err) => return Outcome::Retry(format!("cannot record the verdict: {err}")),
        };
        if let Some(old) = old
            && let Err(err) = self.storage.delete(&old).await
        {
            tracing::warn!(error = %err, key = %old.as_path(), "cannot remove the object's old copy");
        }
        metrics::counter!(metric::SCANS_TOTAL, "verdict" => verdict).increment(1);
        metrics::counter!(metric::SCANNED_BYTES_TOTAL).increment(report.bytes);
        metrics::histogram!(metric::SCAN_DURATION_SECONDS, "verdict" => verdict)
            .record(started.elapsed().as_secs_f64());
        for rule in &report.rules {
            metrics::counter!(metric::SCAN_RULE_MATCHES_TOTAL, "rule" => rule.clone()).increment(1);
        }
        tracing::info!(upload_id = %upload.id, verdict, rules = ?report.rules, "scanned");
        Outcome::Succeeded
    }

    async fn probe(&self, dependency: &'static str) -> bool {
        match dependency {
            "clamd" => self.scanner.clamd().ping().await.is_ok(),
            "storage" => self.storage.check().await.is_ok(),
            _ => true,
        }
    }
}
