//! The `pgsieve` binary: parses the command line, sets up logging, runs one
//! subcommand, and turns its error into a message and an exit code.

use std::process::ExitCode;

use clap::Parser;
use pgsieve::config::{Config, LogFormat, RawConfig};
use pgsieve::report::error_chain;
use pgsieve::run::{connect_sql, run};
use tokio::sync::watch;

mod cli;

use cli::{Cli, Command};

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGSIEVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colors only on a terminal: a log file or journal must stay plain text
    // (and greppable: `field=value`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(pgsieve::report::redacting_stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn load(path: &std::path::Path) -> Result<Config, String> {
    let raw = RawConfig::load(Some(path)).map_err(|e| error_chain(&e))?;
    Config::resolve(&raw).map_err(|e| error_chain(&e))
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

/// Runs one subcommand; the error is the message `main` prints.
async fn main_async(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Run { config } => {
            let config = load(&config)?;
            init_logging(config.log_format, &config.log_level);
            pgsieve::run::preflight(&config)
                .await
                .map_err(|e| error_chain(&e))?;
            run(config, shutdown_signal())
                .await
                .map_err(|e| error_chain(&e))
        }
        Command::Setup { config, dry_run } => setup(&config, dry_run).await,
        Command::Check { config } => {
            let config = load(&config)?;
            init_logging(config.log_format, "warn");
            let results = pgsieve::ops::check::run_checks(&config).await;
            print!("{}", pgsieve::ops::check::render(&results));
            match pgsieve::ops::check::failures(&results) {
                0 => Ok(()),
                failed => Err(format!("{failed} of {} checks failed", results.len())),
            }
        }
        Command::Status { config, format } => {
            let config = load(&config)?;
            init_logging(config.log_format, "warn");
            let report = pgsieve::ops::status::read_status(&config).await;
            match format {
                cli::StatusFormat::Text => print!("{}", report.to_text()),
                cli::StatusFormat::Json => println!("{}", report.to_json()),
            }
            if report.is_complete() {
                Ok(())
            } else {
                Err("status is incomplete: some databases could not be read".into())
            }
        }
        Command::Verify {
            config,
            follower,
            format,
        } => verify(&config, follower, format).await,
        Command::Resync { config, follower } => {
            let config = load(&config)?;
            init_logging(config.log_format, &config.log_level);
            let report = pgsieve::ops::resync::resync(&config, &follower, true)
                .await
                .map_err(|e| error_chain(&e))?;
            print!("{}", pgsieve::ops::resync::render_text(&follower, &report));
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
            let options = pgsieve::ops::tap::TapOptions {
                format,
                selection: pgsieve::ops::tap::Selection {
                    tables,
                    replica_sets,
                    variables,
                    xids,
                },
                show_values,
                input,
                limit,
            };
            pgsieve::ops::tap::run(&config, options, shutdown_signal())
                .await
                .map_err(|e| error_chain(&e))
        }
        #[cfg(feature = "harness")]
        Command::Bench(args) => bench(args).await,
        #[cfg(feature = "harness")]
        Command::Demo { keep_running } => {
            pgsieve::dev::demo::run(&pgsieve::dev::demo::DemoOptions { keep_running })
                .await
                .map_err(|e| error_chain(&e))
        }
    }
}

/// `pgsieve setup`: prints (`--dry-run`) or runs the leader's publication statements.
async fn setup(config: &std::path::Path, dry_run: bool) -> Result<(), String> {
    let config = load(config)?;
    init_logging(config.log_format, &config.log_level);
    let statements = pgsieve::ops::setup::setup_statements(&config.leader.publication);
    if dry_run {
        for sql in statements {
            println!("{sql};");
        }
        return Ok(());
    }
    let leader = connect_sql(&config.leader.pg, "the leader")
        .await
        .map_err(|e| error_chain(&e))?;
    for sql in statements {
        leader
            .batch_execute(&sql)
            .await
            .map_err(|e| format!("setup: {}", error_chain(&e)))?;
    }
    println!(
        "publication {:?} and policy_log replica identity are in place",
        config.leader.publication
    );
    Ok(())
}

/// `pgsieve verify`: compares followers with the leader; any difference is an error
/// so the exit code tells scripts.
async fn verify(
    config: &std::path::Path,
    follower: Option<String>,
    format: cli::StatusFormat,
) -> Result<(), String> {
    let config = load(config)?;
    init_logging(config.log_format, "warn");
    let options = pgsieve::ops::verify::VerifyOptions {
        follower,
        progress: format == cli::StatusFormat::Text,
        ..Default::default()
    };
    let verdicts = pgsieve::ops::verify::verify(&config, &options)
        .await
        .map_err(|e| error_chain(&e))?;
    match format {
        cli::StatusFormat::Text => {
            print!("{}", pgsieve::ops::verify::render_text(&verdicts))
        }
        cli::StatusFormat::Json => {
            println!("{}", pgsieve::ops::verify::render_json(&verdicts))
        }
    }
    let differ: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.equal)
        .map(|v| v.follower.as_str())
        .collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "follower(s) differ from the leader: {}",
            differ.join(", ")
        ))
    }
}

/// `pgsieve bench`: the flags become [`pgsieve::dev::bench::BenchOptions`]; problems
/// the bench finds make the exit code fail.
#[cfg(feature = "harness")]
async fn bench(args: cli::BenchArgs) -> Result<(), String> {
    init_logging(LogFormat::Text, "warn");
    let mut options = pgsieve::dev::bench::BenchOptions::new(args.quick);
    options.out = args.out;
    if !args.workloads.is_empty() {
        options.fanout.clear();
    }
    options.workloads = args.workloads;
    if let Some(counts) = args.fanout {
        options.fanout = counts.into_iter().filter(|&n| n > 0).collect();
    }
    options.progress = !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    options.pglogical = !args.without_pglogical;
    options.schemas = args.schemas;
    options.filters = args.filters;
    let report = pgsieve::dev::bench::run(&options)
        .await
        .map_err(|e| error_chain(&e))?;
    println!("{}", report.markdown());
    let problems = report.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the bench found {} problem(s): {}",
            problems.len(),
            problems.join("; ")
        ))
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
