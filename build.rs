//! Links the `layerscope` binary with packed relative relocations
//! (`-z pack-relative-relocs`, DT_RELR) where the toolchain supports them
//! (issue 19: start-up).
//!
//! The binary is position-independent (ASLR is kept: it parses hostile
//! images and talks TLS), so every start applies ~22,000 relative
//! relocations (clap's, serde's and our tables of pointers). As RELA
//! entries they are 530 KiB the loader reads and walks at each start; as
//! RELR, a 7 KiB bitmap (--version 1.54 -> 1.22 ms task-clock). The
//! relocated pointers and the address-space layout are the same. Only
//! the binary's link changes (nothing is recompiled, tests and library
//! untouched), and only when a test link with the flag succeeds: an old
//! linker does not know it, and the loader needs glibc 2.36 (the linker
//! then records that requirement as GLIBC_ABI_DT_RELR).
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    // Only a native build: the test link runs the host's C compiler.
    if var("TARGET") != var("HOST") {
        return;
    }
    if links_with_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the C compiler (rustc's linker driver on Linux) links a
/// program with `-z pack-relative-relocs` and glibc provides the loader
/// support (the link fails without GLIBC_ABI_DT_RELR).
fn links_with_relr() -> bool {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let src = out.join("relr-probe.c");
    let exe = out.join("relr-probe");
    if std::fs::write(&src, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let linked = Command::new(cc)
        .args(["-pie", "-fPIE", "-Wl,-z,pack-relative-relocs", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .is_ok_and(|o| o.status.success());
    // The probe must also run: a loader without DT_RELR support refuses it.
    linked && Command::new(&exe).status().is_ok_and(|s| s.success())
}
