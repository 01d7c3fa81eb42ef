//! The `scans` queue's engine (clamd) and the limits of the structural inspectors:
//! image pixels and archive depth, size, ratio and entries.

use std::time::Duration;

use super::env::Env;
use super::{ConfigError, MIB};

/// The `scans` queue's engine (clamd with the rules in `rules/`) and the limits of
/// the structural inspectors.
#[derive(Debug)]
pub struct ScannerConfig {
    /// `host:port` or `unix:/path/to/clamd.ctl`.
    pub clamd_addr: String,
    /// One clamd exchange (connect, stream, verdict) longer than this is an error.
    pub timeout: Duration,
    /// An image whose header declares more pixels is a pixel flood.
    pub max_image_pixels: u64,
    /// Archives nested deeper than this are refused.
    pub archive_max_depth: u32,
    /// Declared uncompressed bytes of an archive past this are a bomb.
    pub archive_max_bytes: u64,
    /// Compression ratio past this (archives over 1 MiB uncompressed) is a bomb.
    pub archive_max_ratio: u64,
    pub archive_max_entries: u64,
}

impl ScannerConfig {
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
    ) -> Result<Self, ConfigError> {
        Ok(ScannerConfig {
            clamd_addr: env.string("CLAMD_ADDR", "127.0.0.1:3310"),
            timeout: env.seconds_in("CLAMD_TIMEOUT_SECS", 60, 1..=3600)?,
            max_image_pixels: env.parsed_range(
                "SCAN_MAX_IMAGE_PIXELS",
                100_000_000,
                1..=u64::MAX / 2,
            )?,
            archive_max_depth: env.parsed_range("SCAN_ARCHIVE_MAX_DEPTH", 2, 0..=32)?,
            archive_max_bytes: env.parsed_range(
                "SCAN_ARCHIVE_MAX_BYTES",
                512 * MIB,
                1..=u64::MAX / 2,
            )?,
            archive_max_ratio: env.parsed_range("SCAN_ARCHIVE_MAX_RATIO", 100, 2..=100_000)?,
            archive_max_entries: env.parsed_range(
                "SCAN_ARCHIVE_MAX_ENTRIES",
                10_000,
                1..=10_000_000,
            )?,
        })
    }
}
