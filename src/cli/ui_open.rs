//! How the interactive UI and `render` open their image: the options the
//! other commands take with it (`-f`, `-F`, `--log-as-is`, `--snapshot`,
//! the NBD ones), and the persistent bitmap the hit map shows first.
use anyhow::Context;
use clap::Args;

use super::{Format, ImageArgs, RemoteArgs};
use crate::block::chain::Chain;

// ImageArgs without the image (the UI's is optional: the demo chain),
// and `--bitmap`.
#[derive(Debug, Default, Args)]
pub struct UiOpenArgs {
    /// Format of IMAGE (default: detect).
    #[arg(short = 'f', long, value_enum)]
    pub format: Option<Format>,
    /// Format of backing files whose overlay does not name one (default:
    /// detect).
    #[arg(short = 'F', long, value_enum)]
    pub backing_format: Option<Format>,
    /// Read a VHDX image whose metadata log was never replayed as it is on
    /// disk (by default such an image is refused, as qemu refuses it
    /// read-only).
    #[arg(long)]
    pub log_as_is: bool,
    /// Show IMAGE (a qcow2 file) as it was at this internal snapshot: its
    /// ID, else its name, as `qemu-img convert -l` takes it.
    #[arg(long, value_name = "ID|NAME")]
    pub snapshot: Option<String>,
    /// Colour the hit map by this persistent dirty bitmap of the top layer
    /// (qcow2): dirty bytes and clean ones, as `map --bitmap NAME` lists
    /// them (`m` cycles through owner, served and each bitmap).
    #[arg(long, value_name = "NAME")]
    pub bitmap: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

impl UiOpenArgs {
    /// Opens IMAGE (a path or NBD URI) with these options, or the
    /// embedded demo when absent.
    ///
    /// # Errors
    /// As [`ImageArgs::open`]; options given without an image.
    pub fn open(self, image: Option<String>) -> anyhow::Result<Chain> {
        match image {
            Some(image) => ImageArgs {
                image,
                format: self.format,
                backing_format: self.backing_format,
                log_as_is: self.log_as_is,
                snapshot: self.snapshot,
                remote: self.remote,
            }
            .open(),
            None => {
                if self.snapshot.is_some() || self.format.is_some() {
                    anyhow::bail!(
                        "--snapshot and --format need an image (the demo chain has none)"
                    );
                }
                Ok(crate::demo::open().context("opening the embedded demo chain")?)
            }
        }
    }

    /// `--bitmap NAME` checked against the top layer of `chain` (a
    /// headless frame fails rather than say it in the message line).
    ///
    /// # Errors
    /// A top layer that is not qcow2, or has no bitmap NAME.
    pub fn check_bitmap(name: &str, chain: &Chain) -> anyhow::Result<()> {
        let top = chain.top().context("an empty chain")?;
        let Some(q) = top.qcow2.as_ref() else {
            anyhow::bail!(
                "{}: persistent bitmaps are a qcow2 feature, and this is {}",
                crate::escape::printable(&top.path),
                top.format.name()
            );
        };
        let names: Vec<String> = q.bitmaps()?.into_iter().map(|b| b.name).collect();
        if !names.iter().any(|n| n == name) {
            anyhow::bail!(
                "{}: no bitmap {:?} (bitmaps here: {})",
                crate::escape::printable(&top.path),
                crate::escape::printable(name),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    crate::escape::printable(&names.join(", "))
                }
            );
        }
        Ok(())
    }
}
