//! The `api` binary: command line, configuration and wiring; nothing else.

use std::process::ExitCode;
use std::sync::Arc;

use api::AppState;
use clap::{Parser, Subcommand};
use shared::config::AuthConfig;
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
    /// Create an admin account (e.g. the first one), then exit.
    ///
    /// The password is read from the ADMIN_PASSWORD environment variable if set,
    /// otherwise from the first line of standard input; never from an argument, so it
    /// stays out of shell history and process listings. It must meet the password
    /// policy. The admin must enable 2FA before any admin endpoint accepts them.
    CreateAdmin {
        /// Email address of the new admin.
        #[arg(long)]
        email: String,
        /// Optional display name.
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Create an account with any role, its address taken as confirmed, then exit.
    ///
    /// For operators who vouch for an address (no verification email is sent). The
    /// password is read from ACCOUNT_PASSWORD if set, otherwise from the first line of
    /// standard input; never from an argument.
    CreateUser {
        /// Email address of the new account.
        #[arg(long)]
        email: String,
        /// admin, promoter or user.
        #[arg(long, default_value = "user")]
        role: shared::domain::Role,
        /// Optional display name.
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Operators' actions: `jobs list|show|retry|discard`, `queues list|pause|resume`,
    /// `canary` (the admin API's, audited as cli:<OPERATOR or Unix user>).
    #[command(flatten)]
    Ops(api::cli::OpsCommand),
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
    // Only the api reads the auth section; `migrate` needs none of its keys.
    let auth = if matches!(cli.command, Some(Command::Migrate)) {
        None
    } else {
        match AuthConfig::from_env() {
            Ok(auth) => Some(Arc::new(auth)),
            Err(err) => {
                eprintln!("api: configuration error: {err}");
                return ExitCode::from(2);
            }
        }
    };
    // Before the subscriber, whose Sentry layer it enables; kept until the process ends.
    let _monitoring = match shared::monitoring::init("api", config.app_env) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("api: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    // The operators' commands print their results (tables, JSON) on stdout, where the
    // log lines go too: they run without them and report errors on stderr.
    if !matches!(cli.command, Some(Command::Ops(_))) {
        telemetry::init_tracing(config.log_format, "api");
    }
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
        match (cli.command.unwrap_or(Command::Serve), auth) {
            (Command::Migrate, _) => migrate(&config).await,
            (Command::Serve, Some(auth)) => serve(config, auth).await,
            (
                Command::CreateAdmin {
                    email,
                    display_name,
                },
                Some(auth),
            ) => {
                let role = shared::domain::Role::Admin;
                create_account(config, auth, &email, role, display_name, "ADMIN_PASSWORD").await
            }
            (
                Command::CreateUser {
                    email,
                    role,
                    display_name,
                },
                Some(auth),
            ) => create_account(config, auth, &email, role, display_name, "ACCOUNT_PASSWORD").await,
            (Command::Ops(command), Some(auth)) => api::cli::run(config, auth, command).await,
            (_, None) => Err(anyhow::anyhow!("the auth configuration was not loaded")),
        }
    });
    // What the trace exporter still holds goes out before the process ends.
    shared::otel::shutdown();
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
    let known = db::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .count();
    tracing::info!(migrations = known, "database schema is up to date");
    Ok(())
}

async fn create_account(
    config: Arc<Config>,
    auth: Arc<AuthConfig>,
    email: &str,
    role: shared::domain::Role,
    display_name: Option<String>,
    password_var: &str,
) -> anyhow::Result<()> {
    let password = match std::env::var(password_var) {
        Ok(password) if !password.is_empty() => password,
        _ => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|err| anyhow::anyhow!("cannot read the password from stdin: {err}"))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let pool = db::pool(&config)?;
    if config.database.auto_migrate {
        db::migrate(&pool)
            .await
            .map_err(|err| anyhow::anyhow!("migrations failed: {err}"))?;
    }
    let redis = Redis::connect_lazy(&config)?;
    let state = AppState::new(config, auth, pool, redis)?;
    let account =
        api::services::accounts::NewAccount::parse(email, &password, display_name.as_deref(), None)
            .map_err(describe)?;
    let row = api::services::accounts::create(&state.pool, &state.security, account, role)
        .await
        .map_err(describe)?;
    if role == shared::domain::Role::Admin {
        println!(
            "created admin {}; enable 2FA (POST /api/v1/auth/2fa/setup) before using admin endpoints",
            row.id
        );
    } else {
        println!("created {} {}", role.as_str(), row.id);
    }
    Ok(())
}

/// An `ApiError` as one line for the terminal, with its field errors.
fn describe(err: api::ApiError) -> anyhow::Error {
    match err {
        api::ApiError::Unprocessable { detail, errors }
        | api::ApiError::Validation { detail, errors } => {
            let fields: Vec<String> = errors
                .iter()
                .map(|e| format!("{} {}", e.field, e.message))
                .collect();
            anyhow::anyhow!("{detail}: {}", fields.join("; "))
        }
        other => anyhow::anyhow!("{other}"),
    }
}

async fn serve(config: Arc<Config>, auth: Arc<AuthConfig>) -> anyhow::Result<()> {
    let prometheus = telemetry::prometheus();
    telemetry::record_build_info("api");
    config.warn_about_keys(&auth.generated_secrets);
    let pool = db::pool(&config)?;
    db::warm(&pool);
    let redis = Redis::connect_lazy(&config)?;
    if config.database.auto_migrate {
        db::migrate(&pool)
            .await
            .map_err(|err| anyhow::anyhow!("migrations failed: {err}"))?;
    }
    // Before the ports open: a SIGTERM from then on stops the api gracefully.
    let shutdown = shared::shutdown::signal();
    let (api_addr, metrics_addr) = (config.http.api_addr, config.ops.metrics_addr);
    let api = TcpListener::bind(api_addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on API_ADDR {api_addr}: {err}"))?;
    let ops = TcpListener::bind(metrics_addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on METRICS_ADDR {metrics_addr}: {err}"))?;
    tracing::info!(
        api = %api_addr,
        metrics = %metrics_addr,
        env = config.app_env.as_str(),
        "api listening"
    );
    let state = AppState::new(config, auth, pool, redis)?;
    api::server::serve(state, prometheus, api, ops, shutdown).await?;
    tracing::info!("api stopped");
    Ok(())
}
