//! `certex completions SHELL` and `certex man [--out DIR]`: shell
//! completions and manual pages generated from the clap definition of the
//! whole command (the `Cli` definition, handed in), so they never drift from
//! the real flags.

use std::path::PathBuf;

use clap::Args;

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

/// Writes the completion script of `cmd` for `args.shell` to standard output.
pub fn completions(args: &CompletionsArgs, mut cmd: clap::Command) -> Result<(), CliError> {
    clap_complete::generate(args.shell, &mut cmd, "certex", &mut std::io::stdout());
    Ok(())
}

/// Writes the manual page(s) of `cmd`; see [`ManArgs`].
pub fn man(args: &ManArgs, cmd: clap::Command) -> Result<(), CliError> {
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
