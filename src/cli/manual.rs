//! `certex completions SHELL` and `certex man [--out DIR]`: shell
//! completions and manual pages generated from the clap definition of
//! [`crate::cli::Cli`], so they never drift from the real flags.

use std::path::PathBuf;

use clap::{Args, CommandFactory};

use crate::cli::args::CliError;

/// Arguments of `certex completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `certex man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write certex.1 and one page per subcommand (certex-case-list.1, …)
    /// into this directory (created if missing); without it, certex.1 goes
    /// to standard output.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Writes the completion script for `args.shell` to standard output.
pub fn completions(args: &CompletionsArgs) -> Result<(), CliError> {
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "certex", &mut std::io::stdout());
    Ok(())
}

/// Writes the manual page(s); see [`ManArgs`].
pub fn man(args: &ManArgs) -> Result<(), CliError> {
    let cmd = crate::cli::Cli::command();
    match &args.out {
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .map_err(|e| CliError::other(format!("cannot write the manual page: {e}"))),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::other(format!("--out {}: {e}", dir.display())))?;
            clap_mangen::generate_to(cmd, dir)
                .map_err(|e| CliError::other(format!("--out {}: {e}", dir.display())))
        }
    }
}
