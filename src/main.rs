//! The `auth-jit` binary: parse the command line, load settings, start
//! telemetry, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

use auth_jit::cli::{run_command, Cli, Command};
use auth_jit::services::telemetry;
use auth_jit::settings::Settings;
use auth_jit::web::lifetime;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("auth-jit: {e}");
            return ExitCode::from(2);
        }
    };
    // Probes and listings print and exit: no telemetry to start (and no
    // OTLP exporter to build on every container health probe).
    if let Some(command @ (Command::Settings | Command::Healthcheck)) = cli.command {
        return match run_command(&settings, command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("auth-jit: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let guard = match telemetry::init(&settings) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("auth-jit: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        None | Some(Command::Serve) => lifetime::run(settings).await,
        Some(command) => run_command(&settings, command).await,
    };
    drop(guard);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auth-jit: {e:#}");
            ExitCode::FAILURE
        }
    }
}
