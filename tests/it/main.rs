//! One integration-test binary (ripgrep's layout): every module builds its
//! images with the real tools and compares layerscope with them.
mod bad_input;
mod bulk;
mod chain;
mod cli;
mod demo;
mod diff;
mod e2e;
mod ext;
mod fat;
mod formats;
mod hostile;
mod lvm;
mod mutate;
mod nbd;
mod nbd_tls;
mod oracle;
mod readonly;
mod ssh;
mod tui;
mod tui_diff;
mod tui_layout;
mod tui_nbd;
mod tui_volumes;
mod util;
mod volumes;
mod xfs;
