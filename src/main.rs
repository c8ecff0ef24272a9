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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        certex::cli::LogFormat::Json => logs.json().flatten_event(true).init(),
        certex::cli::LogFormat::Text => {
            use std::io::IsTerminal;
            // https://no-color.org: any non-empty NO_COLOR turns colour off.
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            logs.with_ansi(std::io::stderr().is_terminal() && !no_color)
                .init()
        }
    }
    match certex::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certex: {e}");
            ExitCode::from(e.class.code())
        }
    }
}
