//! Booting the Debian kernel under qemu (TCG) with a busybox initramfs
//! built here, so that chains are written by a real kernel: the guest
//! runs a script against its virtio disks and prints `@@SNAP n@@` where
//! the host takes a live snapshot (`blockdev-snapshot-sync` over QMP,
//! what `virsh snapshot-create --disk-only` does), then waits for the
//! host's go on the console.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::sh;

/// The longest a boot may take (TCG on a loaded 2-core machine).
const BOOT_LIMIT: Duration = Duration::from_secs(900);

/// Modules the guest needs: the filesystem, its checksums, the disks.
const WANTED: &[&str] = &["ext4", "crc32c_generic", "virtio_blk", "virtio_pci"];

/// A kernel and its modules directory.
pub struct Kernel {
    pub image: PathBuf,
    pub modules: PathBuf,
}

/// The newest `/boot/vmlinuz-*` whose modules are installed.
pub fn kernel() -> Option<Kernel> {
    let mut found: Vec<Kernel> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("vmlinuz-")?;
            let modules = Path::new("/lib/modules").join(version);
            modules.join("modules.dep").is_file().then(|| Kernel {
                image: e.path(),
                modules,
            })
        })
        .collect();
    found.sort_by(|a, b| a.image.cmp(&b.image));
    found.pop()
}

/// The module files to load, dependencies first, from `modules.dep`
/// (modules built into the kernel are skipped).
fn module_order(k: &Kernel) -> Vec<PathBuf> {
    let dep = std::fs::read_to_string(k.modules.join("modules.dep")).expect("modules.dep");
    let builtin = std::fs::read_to_string(k.modules.join("modules.builtin")).unwrap_or_default();
    let name_of = |path: &str| -> String {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep.lines() {
        let Some((m, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            name_of(m),
            (m.to_owned(), rest.split_whitespace().map(name_of).collect()),
        );
    }
    let builtin: BTreeSet<String> = builtin.lines().map(name_of).collect();
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        m: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if !done.insert(m.to_owned()) {
            return;
        }
        if let Some((_, ds)) = deps.get(m) {
            for d in ds {
                visit(d, deps, done, order);
            }
        }
        order.push(m.to_owned());
    }
    for w in WANTED {
        let w = w.replace('-', "_");
        if builtin.contains(&w) {
            continue;
        }
        assert!(
            deps.contains_key(&w),
            "module {w} is neither in {} nor built in",
            k.modules.join("modules.dep").display()
        );
        visit(&w, &deps, &mut done, &mut order);
    }
    order
        .into_iter()
        .filter_map(|m| deps.get(&m).map(|(p, _)| k.modules.join(p)))
        .collect()
}

/// Builds the initramfs in `dir`: busybox, the modules, `/init` loading
/// them and running `script`.
pub fn initramfs(dir: &Path, k: &Kernel, script: &str) -> PathBuf {
    let root = dir.join("initramfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "dev", "proc", "sys", "mnt", "mods"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = which("busybox").expect("busybox on PATH");
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    let mut load = String::new();
    for (i, m) in module_order(k).into_iter().enumerate() {
        let name = m.file_name().unwrap().to_string_lossy().into_owned();
        let target = root.join("mods").join(format!("{i:02}.ko"));
        if name.ends_with(".ko.xz") {
            let out = sh(dir, &["xz", "-dc", m.to_str().unwrap()]);
            std::fs::write(&target, out.stdout).unwrap();
        } else if name.ends_with(".ko.zst") {
            let out = sh(dir, &["zstd", "-dc", m.to_str().unwrap()]);
            std::fs::write(&target, out.stdout).unwrap();
        } else {
            std::fs::copy(&m, &target).unwrap();
        }
        load += &format!("insmod /mods/{i:02}.ko || echo \"@@ERROR insmod {name}@@\"\n");
    }
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
         {load}\
         # No periodic writeback: what is on disk is what the script made so.\n\
         echo 0 > /proc/sys/vm/dirty_writeback_centisecs\n\
         sh /script.sh\n\
         echo \"@@END $?@@\"\n\
         echo b > /proc/sysrq-trigger\n"
    );
    std::fs::write(root.join("init"), init).unwrap();
    std::fs::write(root.join("script.sh"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cpio = dir.join("initramfs.cpio");
    let list = Command::new("find")
        .arg(".")
        .current_dir(&root)
        .output()
        .expect("find");
    let mut c = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&cpio).unwrap())
        .spawn()
        .expect("cpio");
    c.stdin.take().unwrap().write_all(&list.stdout).unwrap();
    assert!(c.wait().unwrap().success(), "cpio failed");
    cpio
}

/// `tool` on PATH.
fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A QMP connection.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Qmp {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < Duration::from_secs(60) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("QMP socket {}: {e}", path.display()),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let mut greeting = String::new();
        q.reader.read_line(&mut greeting).unwrap();
        q.call("qmp_capabilities", serde_json::json!({}));
        q
    }

    fn call(&mut self, cmd: &str, args: serde_json::Value) -> serde_json::Value {
        let msg = serde_json::json!({"execute": cmd, "arguments": args});
        writeln!(self.writer, "{msg}").unwrap();
        loop {
            let mut line = String::new();
            assert!(self.reader.read_line(&mut line).unwrap() > 0, "QMP closed");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if let Some(e) = v.get("error") {
                panic!("QMP {cmd}: {e}");
            }
            if let Some(r) = v.get("return") {
                return r.clone();
            }
        }
    }
}

/// One disk of the guest: its chain's file names in `dir`, base first;
/// the boot writes into the last, and each snapshot adds one. `snapshots`
/// says whether the guest's `@@SNAP@@` marks snapshot this disk.
pub struct Disk {
    pub files: Vec<String>,
    pub snapshots: bool,
}

/// Boots the kernel with `disks` (virtio, in order: /dev/vda, vdb, …)
/// and `script`, taking the live snapshots the script asks for. Returns
/// the console output.
pub fn boot(dir: &Path, k: &Kernel, script: &str, disks: &mut [Disk]) -> String {
    let cpio = initramfs(dir, k, script);
    let qmp_path = dir.join("qmp.sock");
    let _ = std::fs::remove_file(&qmp_path);
    let mut args: Vec<String> = [
        "-m",
        "256",
        "-nographic",
        "-no-reboot",
        "-net",
        "none",
        "-kernel",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(k.image.to_str().unwrap().into());
    args.extend(["-initrd".into(), cpio.to_str().unwrap().into()]);
    // no_timer_check: under TCG on a loaded host the kernel's IO-APIC
    // timer check can time out and panic the boot ("IO-APIC + timer
    // doesn't work"), as it did at load 10; the guest needs no such check.
    args.extend([
        "-append".into(),
        "console=ttyS0 panic=-1 quiet loglevel=4 no_timer_check".into(),
    ]);
    for (i, d) in disks.iter().enumerate() {
        args.push("-drive".into());
        args.push(format!(
            "file={},if=virtio,format=qcow2,id=disk{i}",
            d.files.last().unwrap()
        ));
    }
    args.extend([
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp_path.to_str().unwrap()),
    ]);
    let mut child = Command::new("qemu-system-x86_64")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut qmp = Qmp::connect(&qmp_path);
    let start = Instant::now();
    let mut console = String::new();
    let mut log = std::fs::File::create(dir.join("console.log")).unwrap();
    let mut ended = None;
    loop {
        let left = BOOT_LIMIT.saturating_sub(start.elapsed());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the guest ran for {BOOT_LIMIT:?}; console:\n{console}");
            }
        };
        console.push_str(&line);
        console.push('\n');
        let _ = writeln!(log, "{:7.1} {line}", start.elapsed().as_secs_f64());
        if line.contains("@@ERROR") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the guest failed: {line}; console:\n{console}");
        }
        // Markers may follow the firmware's escape sequences on a line.
        if let Some(at) = line.find("@@END ") {
            ended = line[at + 6..]
                .trim()
                .trim_end_matches('@')
                .parse::<i32>()
                .ok();
        }
        if line.contains("@@SNAP") {
            for (i, d) in disks.iter_mut().enumerate().filter(|(_, d)| d.snapshots) {
                let below = d.files.last().unwrap().clone();
                let n = d.files.len();
                let stem = below
                    .split('.')
                    .next()
                    .unwrap()
                    .trim_end_matches(char::is_numeric)
                    .to_owned();
                let next = format!("{stem}{n}.qcow2");
                sh(
                    dir,
                    &[
                        "qemu-img", "create", "-q", "-f", "qcow2", "-b", &below, "-F", "qcow2",
                        &next,
                    ],
                );
                qmp.call(
                    "blockdev-snapshot-sync",
                    serde_json::json!({
                        "device": format!("disk{i}"),
                        "snapshot-file": dir.join(&next).to_str().unwrap(),
                        "format": "qcow2",
                        "mode": "existing",
                    }),
                );
                d.files.push(next);
            }
            stdin.write_all(b"go\n").unwrap();
            stdin.flush().unwrap();
        }
    }
    let status = child.wait().unwrap();
    assert!(
        ended == Some(0),
        "the guest script did not finish cleanly ({status}); console:\n{console}"
    );
    // Absolute backing paths were never written: the overlays were made
    // with relative names before qemu used them.
    console
}
