//! The PostgreSQL section: where the database is, its pool, migrations at start and
//! the worker's commit durability.

use secrecy::SecretString;

use super::ConfigError;
use super::env::Env;

#[derive(Debug)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
    /// Connections each pool keeps open even when idle (at most `max_connections`),
    /// opened when the process starts, so the first requests and jobs — and those after
    /// a quiet spell — do not pay a connection's setup (TLS and authentication, 50–90 ms
    /// on loopback) on their path.
    pub min_connections: u32,
    /// Run pending migrations when the api starts.
    pub auto_migrate: bool,
    /// Whether the worker's commits (claims, outcomes, maintenance) wait for the WAL
    /// flush. Off by default: a PostgreSQL crash may then forget the last moments of
    /// bookkeeping, and those jobs run again (at-least-once); nothing a client
    /// submitted is affected (the api always commits synchronously).
    pub worker_synchronous_commit: bool,
}

impl DatabaseConfig {
    /// Migrations run at start by default everywhere but production.
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
        production: bool,
    ) -> Result<Self, ConfigError> {
        Ok(DatabaseConfig {
            url: env.url(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/conveyor",
                &["postgres", "postgresql"],
            )?,
            max_connections: env.parsed_range("DATABASE_MAX_CONNECTIONS", 10, 1..=1000)?,
            min_connections: env.parsed_range("DATABASE_MIN_CONNECTIONS", 4, 0..=1000)?,
            auto_migrate: env.bool("AUTO_MIGRATE", !production)?,
            worker_synchronous_commit: env.bool("WORKER_SYNCHRONOUS_COMMIT", false)?,
        })
    }
}
