//! `completions` and `man`: what clap knows about the CLI, for shells and
//! for `man`, so neither drifts from the arguments the binary accepts.
use std::io::Write;

use clap::{Args, CommandFactory};

use super::Cli;

// Arguments of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

// Arguments of `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// A command's page instead of the main one (`layerscope man ls`
    /// prints `layerscope-ls(1)`).
    pub command: Option<String>,
}

/// Writes the completion script.
///
/// # Errors
/// Write errors.
pub fn completions(args: &CompletionsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "layerscope", out);
    Ok(())
}

/// Writes the manual page.
///
/// # Errors
/// An unknown command; write errors.
pub fn man(args: &ManArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let cmd = Cli::command();
    let page = match &args.command {
        None => cmd,
        Some(name) => {
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|c| c.get_name().to_owned())
                .collect();
            let sub = cmd.find_subcommand(name).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "no command {:?}; the commands are {}",
                    crate::escape::printable(name),
                    names.join(", ")
                )
            })?;
            // A page name lives as long as the command: one small leak per
            // run, in a process that ends after printing it.
            let page_name: &'static str = format!("layerscope-{name}").leak();
            sub.name(page_name)
        }
    };
    clap_mangen::Man::new(page).render(out)?;
    Ok(())
}
