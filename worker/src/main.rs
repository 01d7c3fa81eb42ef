//! The `worker` binary: command line, configuration and wiring; nothing else.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use shared::redis::Redis;
use shared::{Config, db, telemetry};
use tokio::net::TcpListener;
use worker::runtime::Runtime;

/// Conveyor's job worker: consumes the Redis-backed queues and records every job's
/// outcome in PostgreSQL. Stateless: run as many as the load needs.
///
/// Configuration comes from environment variables (and a `.env` file outside
/// production); `.env.example` lists each with its default. A configuration error
/// prints one line and exits with status 2.
#[derive(Debug, Parser)]
#[command(name = "worker", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the worker (the default), serving /metrics and health on WORKER_METRICS_ADDR.
    ///
    /// Stops on SIGTERM or Ctrl-C: fetching stops at once and in-flight jobs get
    /// SHUTDOWN_GRACE_SECS to finish.
    Run,
    /// Print the DNS TXT record that publishes the DKIM public key (from DKIM_DOMAIN,
    /// DKIM_SELECTOR and DKIM_PRIVATE_KEY or DKIM_PRIVATE_KEY_FILE), then exit.
    DkimRecord,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => Arc::new(config),
        Err(err) => {
            eprintln!("worker: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Some(Command::DkimRecord)) {
        return dkim_record(&config);
    }
    // Before the subscriber, whose Sentry layer it enables; kept until the process ends.
    let _monitoring = match shared::monitoring::init("worker", config.app_env) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("worker: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(config.log_format, "worker");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("worker: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run(config).await,
            // Answered before the runtime started.
            Command::DkimRecord => Ok(()),
        }
    });
    // What the trace exporter still holds goes out before the process ends.
    shared::otel::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "worker stopped");
            eprintln!("worker: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `worker dkim-record`: the record's name, its value, and the zone-file line (the
/// value split into TXT strings of at most 255 characters).
fn dkim_record(config: &Config) -> ExitCode {
    let Some(dkim) = &config.dkim else {
        eprintln!(
            "worker: DKIM is not configured: set DKIM_DOMAIN, DKIM_SELECTOR and \
             DKIM_PRIVATE_KEY or DKIM_PRIVATE_KEY_FILE"
        );
        return ExitCode::from(2);
    };
    let signer = match worker::dkim::DkimSigner::new(dkim) {
        Ok(signer) => signer,
        Err(err) => {
            eprintln!("worker: {err:#}");
            return ExitCode::from(2);
        }
    };
    let (name, value) = signer.dns_record();
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect();
    println!("name:  {name}");
    println!("type:  TXT");
    println!("value: {value}");
    println!("zone:  {name}. IN TXT ( {} )", strings.join(" "));
    ExitCode::SUCCESS
}

async fn run(config: Arc<Config>) -> anyhow::Result<()> {
    // First: a SIGTERM from now on stops the worker gracefully, even one that arrives
    // while the queues are still being built (after the metrics port is open).
    let shutdown = shared::shutdown::signal();
    let prometheus = telemetry::prometheus();
    telemetry::register_worker_metrics();
    worker::scanner::register_rule_metrics();
    telemetry::spawn_process_metrics();
    telemetry::record_build_info("worker");
    config.warn_about_keys(&[]);
    let pool = db::worker_pool(&config)?;
    db::warm(&pool);
    let redis = Redis::connect_lazy(&config)?;
    let addr = config.ops.worker_metrics_addr;
    let ops = TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on WORKER_METRICS_ADDR {addr}: {err}"))?;
    tracing::info!(metrics = %addr, env = config.app_env.as_str(), "worker started");
    Runtime::with_queues(config, pool, redis)?
        .run(Some((ops, prometheus)), shutdown)
        .await?;
    tracing::info!("worker stopped");
    Ok(())
}
