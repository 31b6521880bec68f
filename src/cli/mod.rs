//! The scripting CLI: one subcommand per question, each with `--json` for
//! scripts. This is the only place (with `main.rs`) that uses `anyhow`:
//! library errors are typed, and become one line for the user here.
// Disk and server data must never panic or wrap (issue 11): as in src/fs,
// these lints are denied outside tests; an `allow` names the bound that
// makes it safe.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::io;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::block::chain::{open_chain, Chain, ChainOptions, FsOpener};
use crate::block::probe::Format;

mod bitmap;
mod chain;
mod check;
mod diff;
mod diff_stream;
mod dirty;
mod ext;
mod extract;
mod files;
mod find;
mod fs;
mod grep;
mod journal;
mod json;
mod lookup;
mod map;
mod meta;
mod nbd;
mod read;
mod superblock;
mod timeline;
mod ui_open;
mod volumes;
mod walk;

/// Explore layered disk images: qcow2 backing chains, raw files, NBD
/// exports.
///
/// `layerscope [IMAGE|URI]` opens the terminal UI (with no argument, on the
/// demo chain built into the binary); the commands below answer one
/// question each, for scripts.
#[derive(Debug, Parser)]
#[command(name = "layerscope", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Image or NBD URI to open in the UI (default: the embedded demo).
    pub image: Option<String>,
    /// Show the filesystem of this volume in the UI (`p1`, `vg0/root`,
    /// as `layerscope volumes` names it; `--partition N` = `--volume
    /// pN`).
    #[arg(long, visible_alias = "partition", value_name = "NAME")]
    pub volume: Option<String>,
    #[command(flatten)]
    pub replay: ReplayArgs,
    /// Write a log (worker requests, errors, NBD state changes) to FILE;
    /// `LAYERSCOPE_LOG=FILE` does the same. Nothing is logged to the
    /// screen.
    #[arg(long, value_name = "FILE")]
    pub log: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub open: ui_open::UiOpenArgs,
}

/// The commands.
///
/// `defer`: each command's arguments are built only when that command
/// runs or its help is printed, not at every start (`--version` 2.2 ->
/// 1.0 ms, 217 -> 120 page faults): a quick `diff` lasts a few ms, and
/// building all 28 commands' arguments was a sizeable part of it.
/// Deferred building applies an argument struct's doc comment after the
/// command's own, as the command's help text, so the argument structs
/// (here and in the command modules) carry plain `//` comments instead.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
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
    /// The disk's volumes: partition table, partitions, LVM volume groups
    /// and logical volumes, what each holds (like `blkid -p`) and which
    /// layers hold its bytes.
    Volumes(volumes::VolumesArgs),
    /// The ext2/3/4 superblock, like `dumpe2fs -h` (with `--groups`, the
    /// group list too, like `dumpe2fs`).
    Info(InfoArgs),
    /// The block group descriptors, like dumpe2fs's group list.
    Groups(FsArgs),
    /// List a directory, like `debugfs -R "ls -l"`.
    Ls(LsArgs),
    /// An inode's fields and block runs (PATH or <INODE>), like `debugfs stat`.
    Stat(PathArgs),
    /// A file's content to stdout (PATH or <INODE>), like `debugfs dump`.
    Cat(CatArgs),
    /// A file's physical blocks and the layer that holds each run.
    Blocks(PathArgs),
    /// The files that layers added, modified, deleted or moved, found from
    /// the clusters the overlays hold (`--full` walks both trees instead).
    Diff(diff::DiffArgs),
    /// For each file, the layer that last changed its content and its
    /// metadata, the layer that created its path, and the bytes each layer
    /// holds.
    ///
    /// Columns: `content` and `metadata`, the layer that last changed the
    /// file's bytes (or link target) and its metadata (mode, owner, links,
    /// attributes, times), following the path's history: a file replaced
    /// at the path (a rename over it) counts as a change of the path, and
    /// the older file's history goes on below. `created`, the layer that
    /// created the path (the lowest of the unbroken run of layers, from
    /// the top down, in which the path exists; `base` when it is in layer
    /// 0; a move or a new hard link creates a path). `layers`, the bytes
    /// of the file each layer serves now (`zero` for holes no layer holds,
    /// `jN` for blocks replayed from layer N's journal). Give `<INODE>`
    /// instead of a path to follow one inode alone.
    #[command(long_about)]
    Blame(diff::BlameArgs),
    /// The ext3/4 journal's transactions (like `debugfs logdump`, decoded):
    /// each one's sequence, commit time and the blocks it writes, what
    /// they are (inode table slots, directory blocks, bitmaps) and the
    /// paths they touch; what recovery replays, and the orphans the
    /// kernel deletes after it.
    Journal(journal::JournalArgs),
    /// The whole image's consistency, read-only: each qcow2 layer like
    /// `qemu-img check`, the filesystem like `e2fsck -fn`; each problem
    /// names its structure, offset and the layer holding the bad bytes.
    /// Exit status: 0 clean, 1 problems found, 2 could not check.
    Check(check::CheckArgs),
    /// The paths of inodes (like `debugfs ncheck`): every name each has.
    Path(lookup::PathLookupArgs),
    /// Which file (inode, paths, offset in the file) or filesystem
    /// structure holds a block (like `debugfs icheck`):
    /// `owner IMAGE --block N` or `--offset BYTES`.
    Owner(lookup::OwnerArgs),
    /// Every file's times, sorted (like `mactime -d`), with the layer
    /// holding each inode; `--body` prints a bodyfile as `fls -r -m /`
    /// does, for `mactime` and other timeline tools.
    Timeline(timeline::TimelineArgs),
    /// A file or a directory tree out of the image (like `debugfs
    /// rdump`): sparse files stay sparse; modes, times, symlinks, hard
    /// links, attributes and (as root) owners kept; nothing is ever
    /// written outside DEST.
    Extract(extract::ExtractArgs),
    /// Files by name, type, size, time and by the layer that last wrote
    /// them, like `find(1)`: `find IMAGE /etc --name '*.conf' --type f`,
    /// `find IMAGE --written-in 2`, `--all-layers` (each match says in
    /// which layers it matches).
    Find(Box<find::FindArgs>),
    /// Lines of file contents matching a regular expression, like `grep
    /// -rn`, with the layer holding each matching line:
    /// `grep IMAGE 'PermitRootLogin' /etc` (`-l` file names only,
    /// `--all-layers` in which layers each line is there).
    Grep(grep::GrepArgs),
    /// Print one frame of the UI as text, after a key script (for snapshot
    /// tests and scripts): `render IMAGE --size 100x30 --keys "j j Tab g 0x400 Enter"`.
    Render(RenderArgs),
    /// Print a shell completion script: `layerscope completions bash >
    /// /etc/bash_completion.d/layerscope` (or zsh, fish, elvish,
    /// powershell).
    Completions(meta::CompletionsArgs),
    /// Print the manual page (roff), for `man -l -` or to install:
    /// `layerscope man > layerscope.1`; `layerscope man ls` for a command's.
    Man(meta::ManArgs),
}

// Arguments of `info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub fs: FsArgs,
    /// Also list the block groups (as `groups` does), in one run: what
    /// `dumpe2fs` prints without `-h`.
    #[arg(long)]
    pub groups: bool,
}

// Arguments of the filesystem commands.
#[derive(Debug, Args)]
pub struct FsArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// See the filesystem as of layer N of the chain (0 is the base).
    #[arg(long)]
    pub layer: Option<usize>,
    /// The volume holding the filesystem, as `layerscope volumes` names
    /// it: `disk`, `p1`, `vg0/root`. Default: the one volume holding a
    /// filesystem. `--partition N` is the same as `--volume pN`.
    #[arg(long, visible_alias = "partition", value_name = "NAME")]
    pub volume: Option<String>,
    #[command(flatten)]
    pub replay: ReplayArgs,
}

// How to read a filesystem whose journal needs recovery (a live
// snapshot, a crash): by default as the kernel would mount it, with the
// journal replayed in memory (nothing is written).
#[derive(Debug, Args, Clone, Default)]
pub struct ReplayArgs {
    /// Read the filesystem as it is on disk: do not replay its journal.
    #[arg(long)]
    pub no_replay: bool,
    /// The external journal device (an image) of a filesystem whose
    /// journal is not inside it.
    #[arg(long, value_name = "IMAGE")]
    pub journal_dev: Option<String>,
}

// Arguments of `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub fs: FsArgs,
    /// The directory (default: the root).
    #[arg(default_value = "/")]
    pub path: std::ffi::OsString,
    /// Long listing: inode, mode, type, owner, size, time.
    #[arg(short = 'l', long)]
    pub long: bool,
    /// Recurse into subdirectories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

// Arguments of commands about one file.
#[derive(Debug, Args)]
pub struct PathArgs {
    #[command(flatten)]
    pub fs: FsArgs,
    /// A path (`/etc/hostname`) or an inode number (`<12>`).
    pub path: std::ffi::OsString,
}

// Arguments of `cat`.
#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub fs: FsArgs,
    /// A path (`/etc/hostname`) or an inode number (`<12>`).
    pub path: std::ffi::OsString,
    /// Write binary content to a terminal anyway (by default it is
    /// refused there: redirect to a file, pipe into `hexyl`, or use
    /// `read --hex`).
    #[arg(long)]
    pub force: bool,
}

// Arguments of `render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Image or NBD URI (default: the embedded demo).
    pub image: Option<String>,
    /// Terminal size, COLUMNSxROWS.
    #[arg(long, default_value = "120x40", value_parser = parse_term_size)]
    pub size: (u16, u16),
    /// Keys to press first: names (Enter Tab BackTab Esc Up Down PageUp
    /// PageDown Home End Space Backspace) or text, separated by spaces.
    #[arg(long, default_value = "")]
    pub keys: String,
    /// Keep colours (ANSI escape sequences).
    #[arg(long)]
    pub ansi: bool,
    /// Show the filesystem of this volume (`p1`, `vg0/root`, as
    /// `layerscope volumes` names it; `--partition N` = `--volume pN`).
    #[arg(long, visible_alias = "partition", value_name = "NAME")]
    pub volume: Option<String>,
    #[command(flatten)]
    pub replay: ReplayArgs,
    /// How the frame names the image files: as given, by file name only,
    /// or redacted (`layer N`), so snapshots do not depend on where the
    /// images are.
    #[arg(long, value_enum, default_value = "as-given", value_name = "STYLE")]
    pub paths: crate::block::chain::PathStyle,
    /// For the benchmark: run the keys against the threaded worker and
    /// print each key's frame time as JSON instead of the frame.
    #[arg(long, hide = true)]
    pub time_keys: bool,
    /// Draw the first frame as the interactive UI first shows it (the hit
    /// map as far as probed, its counts still being walked) instead of the
    /// finished picture: how long the UI takes to show something.
    #[arg(long, conflicts_with_all = ["keys", "time_keys"])]
    pub first_frame: bool,
    /// With --time-keys: then open every directory of the tree.
    #[arg(long, hide = true, requires = "time_keys")]
    pub visit_all: bool,
    #[command(flatten)]
    pub open: ui_open::UiOpenArgs,
}

fn parse_term_size(text: &str) -> Result<(u16, u16), String> {
    let (w, h) = text
        .split_once('x')
        .ok_or_else(|| format!("{text:?}: expected COLUMNSxROWS, like 80x24"))?;
    let w: u16 = w
        .parse()
        .map_err(|_| format!("{w:?}: not a column count"))?;
    let h: u16 = h.parse().map_err(|_| format!("{h:?}: not a row count"))?;
    if !(20..=1000).contains(&w) || !(6..=1000).contains(&h) {
        return Err(format!("{text}: between 20x6 and 1000x1000, please"));
    }
    Ok((w, h))
}

// Arguments of `nbd-info`.
#[derive(Debug, Args)]
pub struct NbdInfoArgs {
    /// `nbd://host[:port]/export` or `nbd+unix:///export?socket=PATH`.
    pub uri: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

// Arguments of `exports`.
#[derive(Debug, Args)]
pub struct ExportsArgs {
    /// `nbd://host[:port]` or `nbd+unix:///?socket=PATH`.
    pub uri: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

// How to open an image.
#[derive(Clone, Debug, Args)]
pub struct ImageArgs {
    /// The image (qcow2 or raw), `ssh://[user@]host[:port]/path` or an NBD
    /// URI. Backing files are found the way qemu finds them: relative to
    /// the overlay's directory (on the remote host for ssh://).
    pub image: String,
    /// Format of IMAGE (default: detect).
    #[arg(short = 'f', long, value_enum)]
    pub format: Option<Format>,
    /// Format of backing files whose overlay does not name one (default:
    /// detect).
    #[arg(short = 'F', long, value_enum)]
    pub backing_format: Option<Format>,
    /// Read a VHDX image whose metadata log was never replayed as it is on
    /// disk, without the log's writes (by default such an image is
    /// refused, as qemu refuses it read-only).
    #[arg(long)]
    pub log_as_is: bool,
    /// Read IMAGE (a qcow2 file) as it was at this internal snapshot: its
    /// ID, else its name, as `qemu-img convert -l` takes it. `chain` lists
    /// them.
    #[arg(long, value_name = "ID|NAME")]
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

// How to reach an NBD server.
#[derive(Clone, Debug, Default, Args)]
pub struct RemoteArgs {
    /// NBD over TLS: require, prefer (when the server offers it) or off.
    /// Default: require for nbds://, off for nbd://.
    #[arg(long, value_enum, value_name = "MODE")]
    pub tls: Option<crate::block::nbd::TlsMode>,
    /// Directory holding ca-cert.pem (and client-cert.pem, client-key.pem
    /// for servers that verify clients), like libnbd's tls-certificates.
    #[arg(long, value_name = "DIR")]
    pub tls_certificates: Option<std::path::PathBuf>,
    /// NBD connections when the server allows multi-conn: for bulk reads
    /// (like nbdcopy; default 4) and for large batches of scattered
    /// metadata reads (default 16); 1 turns it off.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: Option<u16>,
    /// Metadata contexts a command needs beyond the allocation map's
    /// (`diff --bitmap` over NBD: `qemu:dirty-bitmap:NAME`), negotiated
    /// on the chain's own connection: a server allowing one client at a
    /// time (qemu-nbd's default) would refuse a second.
    #[arg(skip)]
    pub contexts: Vec<String>,
    /// The command walks a tree (`ls -R`, `find`, `grep`, …; see
    /// `walk::mark_tree_walk`): over NBD, the connections its batches
    /// spread over open during the first round.
    #[arg(skip)]
    pub walk: bool,
}

impl RemoteArgs {
    /// The NBD client's options.
    pub fn nbd_options(&self) -> crate::block::nbd::Options {
        let mut o = crate::block::nbd::Options {
            tls: self.tls,
            tls_certificates: self.tls_certificates.clone(),
            ..Default::default()
        };
        if let Some(n) = self.connections {
            o.connections = usize::from(n);
            o.walk_connections = usize::from(n);
        }
        o.meta.extra.clone_from(&self.contexts);
        o.walk_ahead = self.walk;
        o
    }
}

// Arguments of `chain`.
#[derive(Debug, Args)]
pub struct ChainArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Print JSON (an array, top layer first).
    #[arg(long)]
    pub json: bool,
}

// Arguments of `map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Print JSON in `qemu-img map --output=json` form.
    #[arg(long)]
    pub json: bool,
    /// Instead, the dirty and clean ranges of this persistent bitmap of
    /// the top (qcow2) layer, as `nbdinfo --map=qemu:dirty-bitmap:NAME`
    /// shows them through `qemu-nbd -B NAME` (`--json`: nbdinfo's JSON).
    #[arg(long, value_name = "NAME")]
    pub bitmap: Option<String>,
    /// Instead, the runs of this metadata context of an NBD server
    /// (`base:allocation`, `qemu:allocation-depth`,
    /// `qemu:dirty-bitmap:NAME`; `nbd-info` lists them), as
    /// `nbdinfo --map=CONTEXT` prints them.
    #[arg(long, value_name = "CONTEXT", conflicts_with = "bitmap")]
    pub context: Option<String>,
}

// Arguments of `read`.
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
    /// Print a hex dump (through the hexyl library, hexyl's colours)
    /// instead of raw bytes.
    #[arg(long)]
    pub hex: bool,
    /// Colours for `--hex`: auto (when stdout is a terminal and NO_COLOR is
    /// unset), always, never.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorChoice,
    /// Write raw bytes to a terminal anyway (by default refused there:
    /// pipe them, redirect to a file, or use --hex).
    #[arg(long, conflicts_with = "hex")]
    pub force: bool,
}

/// When to colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ImageArgs {
    /// Opens the image and its backing chain from the filesystem.
    ///
    /// # Errors
    /// Any error opening a layer.
    pub fn open(&self) -> anyhow::Result<Chain> {
        let opts = ChainOptions {
            format: self.format,
            backing_format: self.backing_format,
            log_as_is: self.log_as_is,
            snapshot: self.snapshot.clone(),
        };
        if crate::block::nbd::is_nbd_uri(&self.image) {
            return Ok(crate::block::nbd_files::open_uri(
                &self.image,
                opts,
                self.remote.nbd_options(),
            )?);
        }
        if crate::block::ssh::is_ssh_uri(&self.image) {
            let chain = crate::block::ssh::open_ssh_chain(&self.image, opts, Default::default())?;
            if let (Some(s), Ok(mut seen)) =
                (crate::block::ssh::session_of(&chain), SSH_SESSIONS.lock())
            {
                seen.push(s);
            }
            return Ok(chain);
        }
        Ok(open_chain(&self.image, opts, &FsOpener)?)
    }
}

/// The ssh sessions this run opened, so [`run`] can say at the end when a
/// connection dropped and was re-established in the middle.
static SSH_SESSIONS: std::sync::Mutex<Vec<std::sync::Arc<crate::block::ssh::Session>>> =
    std::sync::Mutex::new(Vec::new());

/// One line on stderr per ssh session that lost its connection during the
/// run (the answer is complete: every request was retried on the new one).
fn report_reconnects() {
    let Ok(seen) = SSH_SESSIONS.lock() else {
        return;
    };
    for s in seen.iter() {
        let st = s.status();
        if st.stats.reconnects > 0 {
            eprintln!(
                "layerscope: ssh://{}: the connection dropped and was re-established {} time(s){}",
                crate::escape::printable(&st.host),
                st.stats.reconnects,
                st.stats
                    .last_error
                    .map(|e| format!(" (last error: {})", crate::escape::printable(&e)))
                    .unwrap_or_default()
            );
        }
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command hit; [`error_line`] turns it into one line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(path) = crate::ui::log::path(cli.log.as_deref()) {
        crate::ui::log::init(&path)
            .with_context(|| format!("opening the log file {}", path.display()))?;
    }
    // Block-buffered: line buffering would cost a syscall per map entry.
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut command = cli.command;
    if let Some(c) = command.as_mut() {
        walk::mark_tree_walk(c);
    }
    match command {
        Some(Command::Chain(args)) => chain::run(&args.image.open()?, args.json, &mut out),
        Some(Command::Map(args)) => bitmap::map(&args, &mut out),
        Some(Command::Read(args)) => {
            let chain = args.image.open()?;
            if args.hex {
                return read::hex(&chain, &args, &mut out);
            }
            if !args.force && io::IsTerminal::is_terminal(&io::stdout()) {
                anyhow::bail!(
                    "not writing raw disk bytes to a terminal: pipe them (`| hexyl`), redirect to a file, use --hex, or --force"
                );
            }
            // Straight to the file descriptor: stdout's line buffering
            // would scan every data buffer for newlines.
            match (read::SparseFile::for_stdout(), read::stdout_file()) {
                (Some(mut file), _) => read::run(&chain, &args, &mut file),
                (None, Some(file)) => read::run(&chain, &args, &mut read::Descriptor::new(file)),
                (None, None) => read::run(&chain, &args, &mut read::Plain(&mut out)),
            }
        }
        Some(Command::NbdInfo(args)) => nbd::info(&args, &mut out),
        Some(Command::Exports(args)) => nbd::exports(&args, &mut out),
        Some(Command::Volumes(args)) => volumes::run(&args, &mut out),
        Some(Command::Info(args)) => fs::info(&args, &mut out),
        Some(Command::Groups(args)) => fs::groups(&args, &mut out),
        Some(Command::Ls(args)) => files::ls(&args, &mut out),
        Some(Command::Stat(args)) => files::stat(&args, &mut out),
        Some(Command::Cat(args)) => match read::stdout_file() {
            Some(mut f) => files::cat(&args, &mut f),
            None => files::cat(&args, &mut out),
        },
        Some(Command::Blocks(args)) => files::blocks(&args, &mut out),
        Some(Command::Diff(mut args)) => {
            if let Some(name) = &args.bitmap {
                args.image
                    .remote
                    .contexts
                    .push(format!("qemu:dirty-bitmap:{name}"));
            }
            diff::diff(&args, &mut out)
        }
        Some(Command::Blame(args)) => diff::blame(&args, &mut out),
        Some(Command::Journal(args)) => journal::run(&args, &mut out),
        Some(Command::Path(args)) => lookup::path(&args, &mut out),
        Some(Command::Owner(args)) => lookup::owner(&args, &mut out),
        Some(Command::Timeline(args)) => timeline::run(&args, &mut out),
        Some(Command::Extract(args)) => extract::run(&args, &mut out),
        Some(Command::Check(args)) => check::run(&args, &mut out),
        Some(Command::Find(args)) => find::run(&args, &mut out),
        Some(Command::Grep(args)) => grep::run(&args, &mut out),
        Some(Command::Completions(args)) => meta::completions(&args, &mut out),
        Some(Command::Man(args)) => meta::man(&args, &mut out),
        Some(Command::Render(args)) => {
            let bitmap = args.open.bitmap.clone();
            let mut chain = args.open.open(args.image)?;
            if let Some(name) = &bitmap {
                ui_open::UiOpenArgs::check_bitmap(name, &chain)?;
            }
            chain.show_paths(args.paths);
            let (w, h) = args.size;
            if args.time_keys {
                let t = crate::ui::timing::time_keys(chain, w, h, &args.keys, args.visit_all)?;
                return crate::escape::json::to_writer(io::stdout(), &t).map_err(Into::into);
            }
            let options = crate::ui::worker::Options {
                volume: args.volume.clone(),
                replay: fs::worker_replay(&args.replay)?,
                bitmap,
            };
            let frame = if args.first_frame {
                crate::ui::render_first_frame(chain, options, w, h, args.ansi)
            } else {
                crate::ui::render_frame_with(chain, options, w, h, &args.keys, args.ansi)
            };
            io::Write::write_all(&mut out, frame.as_bytes()).map_err(Into::into)
        }
        None => {
            if io::IsTerminal::is_terminal(&io::stdout())
                && io::IsTerminal::is_terminal(&io::stdin())
            {
                drop(out);
                // The UI is up at once; the chain opens on its worker (an
                // NBD server may take its time).
                let image = cli.image.clone();
                let title = image.clone().unwrap_or_else(|| "the demo chain".into());
                let is_nbd = title.starts_with("nbd");
                let bitmap = cli.open.bitmap.clone();
                let how = cli.open;
                let open = Box::new(move || how.open(image).map_err(|e| format!("{e:#}")));
                let options = crate::ui::worker::Options {
                    volume: cli.volume.clone(),
                    replay: fs::worker_replay(&cli.replay)?,
                    bitmap,
                };
                return crate::ui::run_opening(&title, is_nbd, open, options)
                    .context("running the terminal UI");
            }
            let chain = cli.open.open(cli.image)?;
            // Not a terminal (a pipe, a test): the chain and its map as text.
            chain::run(&chain, false, &mut out)?;
            io::Write::write_all(&mut out, b"\n")?;
            map::run(&chain, false, &mut out)
        }
    }?;
    io::Write::flush(&mut out)?;
    report_reconnects();
    Ok(())
}

/// The error as one line: each cause after a colon, control characters
/// escaped (a file name from a hostile image must not reach the terminal
/// raw).
pub fn error_line(err: &anyhow::Error) -> String {
    crate::escape::printable(&format!("{err:#}"))
}

/// The exit status an error asks for, and whether its message is worth
/// printing: `check` exits 1 after its report when it found problems
/// (nothing more to say) and 2 when it could not check (fsck's
/// conventions); `grep` exits 1 silently when nothing matched, as grep
/// does; other errors are 1 with their message.
pub fn exit_status(err: &anyhow::Error) -> (u8, bool) {
    if err.downcast_ref::<check::ProblemsFound>().is_some()
        || err.downcast_ref::<grep::NoMatch>().is_some()
    {
        (1, false)
    } else if err.downcast_ref::<check::CouldNotCheck>().is_some() {
        (2, true)
    } else {
        (1, true)
    }
}

/// True when the error is a closed pipe (`layerscope read … | head`), which
/// is not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            // serde_json keeps the io::Error inside, out of the chain.
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(io::ErrorKind::BrokenPipe)
    })
}
