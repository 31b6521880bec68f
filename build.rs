//! Links the `layerscope` binary as a position-dependent executable
//! (`-no-pie`), only on x86-64 Linux (issue 19: start-up).
//!
//! As a PIE, every start applied ~22,000 relative relocations to ~400 KiB
//! of `.data.rel.ro` (clap's, serde's and our tables of pointers): the
//! loader's work plus a copy-on-write fault per page, ~10% of a small
//! command's time. Linked at a fixed address those pointers are final in
//! the file and the pages are mapped from it as they are. The objects
//! stay position-independent (nothing is rebuilt); only the binary's link
//! changes, and the tests and the library are untouched.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && arch == "x86_64" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
