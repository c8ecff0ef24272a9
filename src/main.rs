//! The `certex` binary: parse arguments, set up logging, run one command.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = certex::cli::Cli::parse();
    let default = match cli.command {
        certex::cli::Command::Serve(_)
        | certex::cli::Command::Witness(certex::cli::witness::WitnessCommand::Serve(_)) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .init();
    match certex::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certex: {e}");
            ExitCode::FAILURE
        }
    }
}
