//! The `api` binary: command line, configuration and wiring; nothing else.

use std::process::ExitCode;
use std::sync::Arc;

use api::AppState;
use clap::{Parser, Subcommand};
use shared::redis::Redis;
use shared::{Config, db, telemetry};
use tokio::net::TcpListener;

/// Conveyor's HTTP API: accepts requests, stores them in PostgreSQL and hands their
/// jobs to the workers through Redis.
///
/// Configuration comes from environment variables (and a `.env` file outside
/// production); `.env.example` lists each with its default. A configuration error
/// prints one line and exits with status 2.
#[derive(Debug, Parser)]
#[command(name = "api", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API on API_ADDR and /metrics + health on METRICS_ADDR (the default).
    ///
    /// Runs pending migrations first when AUTO_MIGRATE=true (the default outside
    /// production). Stops on SIGTERM or Ctrl-C, letting in-flight requests finish
    /// within SHUTDOWN_GRACE_SECS.
    Serve,
    /// Apply pending database migrations to DATABASE_URL, then exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => Arc::new(config),
        Err(err) => {
            eprintln!("api: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("api: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(&config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "api stopped");
            eprintln!("api: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = db::pool(config)?;
    db::migrate(&pool)
        .await
        .map_err(|err| anyhow::anyhow!("migrations failed: {err}"))?;
    tracing::info!(
        applied = db::MIGRATOR.iter().count(),
        "database schema is up to date"
    );
    Ok(())
}

async fn serve(config: Arc<Config>) -> anyhow::Result<()> {
    let prometheus = telemetry::prometheus();
    telemetry::record_build_info("api");
    for var in &config.generated_secrets {
        tracing::warn!(
            variable = var,
            "{var} is not set: using a random key for this process only. Tokens and encrypted \
             data will not survive a restart. Never run production like this."
        );
    }
    let pool = db::pool(&config)?;
    let redis = Redis::connect_lazy(&config)?;
    if config.auto_migrate {
        db::migrate(&pool)
            .await
            .map_err(|err| anyhow::anyhow!("migrations failed: {err}"))?;
    }
    let api = TcpListener::bind(config.api_addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on API_ADDR {}: {err}", config.api_addr))?;
    let ops = TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "cannot listen on METRICS_ADDR {}: {err}",
                config.metrics_addr
            )
        })?;
    tracing::info!(
        api = %config.api_addr,
        metrics = %config.metrics_addr,
        env = config.app_env.as_str(),
        "api listening"
    );
    let state = AppState::new(config, pool, redis);
    api::server::serve(state, prometheus, api, ops, shared::shutdown::signal()).await?;
    tracing::info!("api stopped");
    Ok(())
}
