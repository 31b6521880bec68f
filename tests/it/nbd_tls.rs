//! NBD over TLS and multi-conn against nbdkit: certificates made here with
//! openssl (a CA, a server certificate for localhost, and a second CA that
//! signed nothing); reads over TLS equal the plain connection's and the
//! file; a wrong CA, a server without TLS and a server that requires it
//! give errors that say so. Multi-conn: nbdkit's log filter counts the
//! connections a read used.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// An nbdkit process, killed when dropped.
struct Nbdkit(Child);

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts nbdkit on a unix socket `sock` with `args` before the plugin.
fn nbdkit(dir: &Path, sock: &str, args: &[&str]) -> Nbdkit {
    let _ = std::fs::remove_file(dir.join(sock));
    let child = Command::new("nbdkit")
        .args(["-f", "-U", sock])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nbdkit");
    let server = Nbdkit(child);
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(dir.join(sock)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nbdkit {args:?} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let mut all = vec!["openssl"];
    all.extend_from_slice(args);
    sh(dir, &all);
}

/// A CA (`NAME-ca-key.pem`, `NAME-ca-cert.pem`).
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=layerscope test CA {name}"),
            "-keyout",
            &format!("{name}-ca-key.pem"),
            "-out",
            &format!("{name}-ca-cert.pem"),
        ],
    );
}

/// The certificates: `server/` for nbdkit (ca-cert, server-cert,
/// server-key), `client/` with the right CA, `wrong/` with another CA.
fn certificates(dir: &Path) {
    make_ca(dir, "good");
    make_ca(dir, "other");
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server-key.pem",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "good-ca-cert.pem",
            "-CAkey",
            "good-ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server-cert.pem",
        ],
    );
    for (sub, files) in [
        (
            "server",
            &[
                ("good-ca-cert.pem", "ca-cert.pem"),
                ("server-cert.pem", "server-cert.pem"),
                ("server-key.pem", "server-key.pem"),
            ][..],
        ),
        ("client", &[("good-ca-cert.pem", "ca-cert.pem")][..]),
        ("wrong", &[("other-ca-cert.pem", "ca-cert.pem")][..]),
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for (from, to) in files {
            std::fs::copy(dir.join(from), dir.join(sub).join(to)).unwrap();
        }
    }
}

/// A disk with content everywhere (random bytes, so any misplaced byte
/// shows).
fn disk(dir: &Path, name: &str, mib: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join(name), &bytes).unwrap();
    bytes
}

#[test]
fn tls_reads_equal_plain_and_bad_setups_say_why() {
    if !need("nbdkit") || !need("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let want = disk(d, "disk.raw", 8);
    let _tls = nbdkit(
        d,
        "tls.sock",
        &[
            "--tls=require",
            "--tls-certificates=server",
            "file",
            "disk.raw",
        ],
    );
    let _plain = nbdkit(d, "plain.sock", &["file", "disk.raw"]);
    let tls_uri = format!("nbds+unix:///?socket={}", d.join("tls.sock").display());
    let plain_uri = format!("nbd+unix:///?socket={}", d.join("plain.sock").display());

    let over_tls = layerscope(d, &["read", &tls_uri, "--tls-certificates", "client"]).ok();
    let plain = layerscope(d, &["read", &plain_uri]).ok();
    assert!(
        over_tls.stdout == plain.stdout,
        "TLS and plain reads differ"
    );
    assert!(over_tls.stdout == want, "TLS read differs from the file");
    // The directory in the URI, as libnbd takes it.
    let with_query = format!("{tls_uri}&tls-certificates={}", d.join("client").display());
    let info = layerscope(d, &["nbd-info", "--json", &with_query])
        .ok()
        .json();
    assert_eq!(info["tls"], true, "{info}");
    assert_eq!(info["size"], 8 << 20);

    // Signed by another CA.
    let r = layerscope(d, &["read", &tls_uri, "--tls-certificates", "wrong"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("not signed by a trusted CA"),
        "{}",
        r.stderr
    );
    // The certificate names localhost: a different expected name fails.
    let r = layerscope(
        d,
        &[
            "read",
            &format!("{tls_uri}&tls-hostname=elsewhere.example"),
            "--tls-certificates",
            "client",
        ],
    );
    assert!(
        r.stderr.contains("not valid for \"elsewhere.example\""),
        "{}",
        r.stderr
    );
    // A server without TLS, asked for it.
    let plain_as_tls = format!("nbds+unix:///?socket={}", d.join("plain.sock").display());
    let r = layerscope(d, &["read", &plain_as_tls, "--tls-certificates", "client"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("does not offer TLS"), "{}", r.stderr);
    // …unless TLS is only preferred.
    let r = layerscope(
        d,
        &[
            "read",
            &plain_as_tls,
            "--tls=prefer",
            "--tls-certificates",
            "client",
        ],
    )
    .ok();
    assert!(r.stdout == want);
    // A server that requires TLS, asked without it.
    let tls_as_plain = format!("nbd+unix:///?socket={}", d.join("tls.sock").display());
    let r = layerscope(d, &["read", &tls_as_plain]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("requires TLS"), "{}", r.stderr);
    // PSK: refused in words.
    let r = layerscope(
        d,
        &[
            "read",
            &format!("{tls_uri}&tls-psk-file={}", d.join("k.psk").display()),
        ],
    );
    assert!(r.stderr.contains("pre-shared key"), "{}", r.stderr);
}

/// The connection ids nbdkit's log filter saw for reads.
fn read_connections(log: &str) -> std::collections::BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains(" Read id="))
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("connection="))
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn multi_conn_reads_use_n_connections_and_equal_the_file() {
    if !need("nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let want = disk(d, "disk.raw", 32);
    let uri = format!("nbd+unix:///?socket={}", d.join("mc.sock").display());
    for (n, expect) in [(None, 4usize), (Some("3"), 3), (Some("1"), 1)] {
        let log = d.join(format!("log-{expect}.txt"));
        let _ = std::fs::remove_file(&log);
        let logfile = format!("logfile={}", log.display());
        let _srv = nbdkit(
            d,
            "mc.sock",
            &["--filter=log", "file", "disk.raw", &logfile],
        );
        let mut args = vec!["read", uri.as_str()];
        if let Some(n) = n {
            args.extend(["--connections", n]);
        }
        let r = layerscope(d, &args).ok();
        assert!(r.stdout == want, "--connections {n:?}: bytes differ");
        let text = std::fs::read_to_string(&log).unwrap();
        let used = read_connections(&text);
        assert_eq!(used.len(), expect, "--connections {n:?}: {used:?}");
    }
    // A server that does not advertise multi-conn gets one connection.
    let log = d.join("log-single.txt");
    let logfile = format!("logfile={}", log.display());
    let _srv = nbdkit(
        d,
        "mc.sock",
        &[
            "--filter=log",
            "--filter=multi-conn",
            "file",
            "disk.raw",
            "multi-conn-mode=disable",
            &logfile,
        ],
    );
    let r = layerscope(d, &["read", &uri]).ok();
    assert!(r.stdout == want);
    let used = read_connections(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(used.len(), 1, "{used:?}");
}
