//! The `pgsieve` binary: parses the command line, sets up logging, runs one
//! subcommand, and turns its error into a message and an exit code.

use std::process::ExitCode;

use clap::Parser;
use pgsieve::config::{Config, LogFormat, RawConfig};
use pgsieve::run::{connect_sql, run};
use tokio::sync::watch;

mod cli;

use cli::{Cli, Command};

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGSIEVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn load(path: &std::path::Path) -> Result<Config, String> {
    let raw = RawConfig::load(Some(path)).map_err(|e| e.to_string())?;
    Config::resolve(&raw).map_err(|e| e.to_string())
}

/// A watch channel that turns true on SIGINT or SIGTERM.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot listen for SIGTERM.");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("Signal received; shutting down.");
        let _ = tx.send(true);
    });
    rx
}

async fn main_async(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Run { config } => {
            let config = load(&config)?;
            init_logging(config.log_format, &config.log_level);
            run(config, shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        }
        Command::Setup { config, dry_run } => {
            let config = load(&config)?;
            init_logging(config.log_format, &config.log_level);
            let statements = pgsieve::setup::setup_statements(&config.leader.publication);
            if dry_run {
                for sql in statements {
                    println!("{sql};");
                }
                return Ok(());
            }
            let leader = connect_sql(&config.leader.pg, "the leader")
                .await
                .map_err(|e| e.to_string())?;
            for sql in statements {
                leader
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| format!("setup: {e}"))?;
            }
            println!(
                "publication {:?} and policy_log replica identity are in place",
                config.leader.publication
            );
            Ok(())
        }
        Command::Tap {
            config,
            format,
            tables,
            replica_sets,
            variables,
            xids,
            show_values,
            input,
            limit,
        } => {
            let config = load(&config)?;
            init_logging(config.log_format, "warn");
            let options = pgsieve::tap::TapOptions {
                format,
                selection: pgsieve::tap::Selection {
                    tables,
                    replica_sets,
                    variables,
                    xids,
                },
                show_values,
                input,
                limit,
            };
            pgsieve::tap::run(&config, options, shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgsieve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pgsieve: error: {message}");
            ExitCode::FAILURE
        }
    }
}
