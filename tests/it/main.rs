//! One integration-test binary (ripgrep's layout): every module builds its
//! images with the real tools and compares layerscope with them.
mod bad_input;
mod chain;
mod demo;
mod diff;
mod e2e;
mod ext;
mod fat;
mod mutate;
mod nbd;
mod oracle;
mod readonly;
mod tui;
mod tui_diff;
mod tui_layout;
mod tui_nbd;
mod util;
