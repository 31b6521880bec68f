//! The scripting CLI: one subcommand per question, each with `--json` for
//! scripts. This is the only place (with `main.rs`) that uses `anyhow`:
//! library errors are typed, and become one line for the user here.
use std::io;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::block::chain::{open_chain, Chain, ChainOptions, FsOpener};
use crate::block::probe::Format;

mod chain;
mod map;
mod nbd;
mod read;

/// Explore layered disk images: qcow2 backing chains and raw files.
///
/// With no command, shows the demo chain built into the binary.
#[derive(Debug, Parser)]
#[command(name = "layerscope", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the backing chain: each layer's file, format, sizes and backing
    /// file (like `qemu-img info --backing-chain`).
    Chain(ChainArgs),
    /// Show which layer holds each range of the disk (like `qemu-img map`;
    /// `--json` prints the same entries as `qemu-img map --output=json`).
    Map(MapArgs),
    /// Write raw bytes of the virtual disk to stdout (pipe into `hexyl`).
    Read(ReadArgs),
    /// Show an NBD connection: export, size, flags, block sizes, metadata
    /// contexts, and the client's counters (like `nbdinfo`).
    NbdInfo(NbdInfoArgs),
    /// List the exports of an NBD server.
    Exports(ExportsArgs),
}

/// Arguments of `nbd-info`.
#[derive(Debug, Args)]
pub struct NbdInfoArgs {
    /// `nbd://host[:port]/export` or `nbd+unix:///export?socket=PATH`.
    pub uri: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `exports`.
#[derive(Debug, Args)]
pub struct ExportsArgs {
    /// `nbd://host[:port]` or `nbd+unix:///?socket=PATH`.
    pub uri: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// How to open an image.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The image (qcow2 or raw). Backing files are found the way qemu finds
    /// them: relative to the overlay's directory.
    pub image: String,
    /// Format of IMAGE (default: detect).
    #[arg(short = 'f', long, value_enum)]
    pub format: Option<Format>,
    /// Format of backing files whose overlay does not name one (default:
    /// detect).
    #[arg(short = 'F', long, value_enum)]
    pub backing_format: Option<Format>,
}

/// Arguments of `chain`.
#[derive(Debug, Args)]
pub struct ChainArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Print JSON (an array, top layer first).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Print JSON in `qemu-img map --output=json` form.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Where to start, in bytes (`4096`, `0x1000`, `64K`, `1MiB`).
    #[arg(long, default_value = "0", value_parser = crate::units::parse_size)]
    pub offset: u64,
    /// How many bytes (default: to the end of the disk).
    #[arg(long, value_parser = crate::units::parse_size)]
    pub length: Option<u64>,
    /// After reading, print to stderr one JSON line saying how many bytes
    /// and reads each layer served (the runtime hit map's counters).
    #[arg(long)]
    pub hits: bool,
}

impl ImageArgs {
    /// Opens the image and its backing chain from the filesystem.
    ///
    /// # Errors
    /// Any error opening a layer.
    pub fn open(&self) -> anyhow::Result<Chain> {
        if crate::block::nbd::is_nbd_uri(&self.image) {
            return Ok(crate::block::chain::open_nbd(
                &self.image,
                Default::default(),
            )?);
        }
        let opts = ChainOptions {
            format: self.format,
            backing_format: self.backing_format,
        };
        Ok(open_chain(&self.image, opts, &FsOpener)?)
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command hit; [`error_line`] turns it into one line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Block-buffered: line buffering would cost a syscall per map entry.
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    match cli.command {
        Some(Command::Chain(args)) => chain::run(&args.image.open()?, args.json, &mut out),
        Some(Command::Map(args)) => map::run(&args.image.open()?, args.json, &mut out),
        Some(Command::Read(args)) => {
            let chain = args.image.open()?;
            // Straight to the file descriptor: stdout's line buffering
            // would scan every data buffer for newlines.
            match (read::SparseFile::for_stdout(), read::stdout_file()) {
                (Some(mut file), _) => read::run(&chain, &args, &mut file),
                (None, Some(file)) => read::run(&chain, &args, &mut read::Plain(file)),
                (None, None) => read::run(&chain, &args, &mut read::Plain(&mut out)),
            }
        }
        Some(Command::NbdInfo(args)) => nbd::info(&args, &mut out),
        Some(Command::Exports(args)) => nbd::exports(&args, &mut out),
        None => {
            let demo = crate::demo::open().context("opening the embedded demo chain")?;
            chain::run(&demo, false, &mut out)?;
            io::Write::write_all(&mut out, b"\n")?;
            map::run(&demo, false, &mut out)
        }
    }?;
    io::Write::flush(&mut out)?;
    Ok(())
}

/// The error as one line: each cause after a colon, control characters
/// escaped (a file name from a hostile image must not reach the terminal
/// raw).
pub fn error_line(err: &anyhow::Error) -> String {
    crate::escape::printable(&format!("{err:#}"))
}

/// True when the error is a closed pipe (`layerscope read … | head`), which
/// is not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
