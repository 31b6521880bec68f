//! The CLI's own edges: shell completions (run through bash's completion
//! machinery), the manual pages (rendered by man), and a closed pipe
//! (quiet, exit 0, like coreutils).
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{layerscope, mkfs, need};

/// bash completes a subcommand and an option from the generated script.
#[test]
fn bash_completion_completes_commands_and_options() {
    if !need("bash") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let script = layerscope(tmp.path(), &["completions", "bash"]).ok().stdout;
    std::fs::write(tmp.path().join("c.bash"), script).unwrap();
    let complete = |words: &str, cword: usize| -> String {
        let program = format!(
            "source c.bash; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; _layerscope layerscope; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = Command::new("bash")
            .args(["-c", &program])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let subs = complete("layerscope ch", 1);
    assert!(subs.lines().any(|l| l == "chain"), "{subs}");
    let opts = complete("layerscope ls --js", 2);
    assert!(opts.lines().any(|l| l == "--json"), "{opts}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let run = layerscope(tmp.path(), &["completions", shell]).ok();
        assert!(run.text().contains("layerscope"), "{shell}");
    }
}

/// `man -l -` renders the main page and a command's page; an unknown
/// command lists the real ones.
#[test]
fn manual_pages_render() {
    if !need("man") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let render = |args: &[&str]| -> String {
        let roff = layerscope(tmp.path(), args).ok().stdout;
        let mut man = Command::new("man")
            .args(["-l", "-"])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut man.stdin.take().unwrap(), &roff).unwrap();
        let mut text = String::new();
        man.stdout
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert!(man.wait().unwrap().success());
        text
    };
    let main = render(&["man"]);
    assert!(
        main.contains("NAME") && main.contains("layerscope"),
        "{main}"
    );
    assert!(main.contains("chain") && main.contains("blame"), "{main}");
    let ls = render(&["man", "ls"]);
    assert!(
        ls.contains("layerscope-ls") && ls.contains("--recursive"),
        "{ls}"
    );
    let bad = layerscope(tmp.path(), &["man", "nosuch"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("the commands are") && bad.stderr.contains("chain"),
        "{}",
        bad.stderr
    );
}

/// `ls -R --json | head -c 1`: the reader goes away; layerscope ends
/// quietly with status 0, as `ls | head` does.
#[test]
fn a_closed_pipe_is_not_an_error() {
    if !need("mke2fs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    mkfs(tmp.path(), "big", "400M", 3000);
    for args in [
        &["ls", "-R", "--json", "big.raw"][..],
        &["ls", "-R", "-l", "big.raw"][..],
        &["map", "--json", "big.raw"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_layerscope"))
            .args(args)
            .current_dir(tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut one = [0u8; 1];
        child.stdout.take().unwrap().read_exact(&mut one).unwrap();
        // stdout is closed here: the next write fails with EPIPE.
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The README's library example is the crate's doctest (`src/lib.rs`),
/// line for line, so `cargo test --doc` compiles and runs it.
#[test]
fn the_readme_library_example_is_the_doctest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block: Vec<&str> = readme
        .split("```rust\n")
        .nth(1)
        .expect("a rust block in the README")
        .split("\n```")
        .next()
        .unwrap()
        .lines()
        .collect();
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let doc: Vec<&str> = lib
        .split("//! ```rust\n")
        .nth(1)
        .expect("a rust doctest in src/lib.rs")
        .split("\n//! ```")
        .next()
        .unwrap()
        .lines()
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .filter(|l| !l.starts_with("# "))
        .collect();
    assert!(block.iter().any(|l| l.contains("open_chain(")));
    assert_eq!(block, doc);
}
