#!/usr/bin/env python3
"""layerscope benchmark: side-by-side timings against the tools people use.

Builds (once, cached in bench/work/) a 2 GiB ext4 chain with ~20k files and
three thin overlays (the middle one compressed), and a 1 TiB chain with a few
allocated clusters; then times layerscope and the reference tool on the same
input in the same run and prints ratios.

    python3 bench/bench.py            # build if needed, run everything
    python3 bench/bench.py --rebuild  # regenerate the images first

Thin overlays are made the way qemu users make them: an overlay over the
edited flat image, rebased (safe mode) onto the real backing file, so it
holds exactly the clusters that differ (`qemu-img rebase -c` compresses).
Timings are medians of several runs after one untimed warm-up run each;
no root, no cache dropping.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work")
BIN = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target", "release", "layerscope")
RUNS = 5


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def build_tree(path, files=20000, seed=1):
    """~20k files in ~200 directories, mostly small, a few large: ~700 MiB."""
    rng = random.Random(seed)
    os.makedirs(path)
    blob = os.urandom(8 << 20)
    total = 0
    for i in range(files):
        d = os.path.join(path, f"d{i % 200:03d}", f"s{(i // 200) % 10}")
        os.makedirs(d, exist_ok=True)
        r = rng.random()
        size = rng.randint(0, 16 << 10) if r < 0.97 else rng.randint(64 << 10, 512 << 10) if r < 0.997 else rng.randint(4 << 20, 8 << 20)
        start = rng.randint(0, len(blob) - size)
        with open(os.path.join(d, f"f{i:05d}.dat"), "wb") as f:
            f.write(blob[start:start + size])
        total += size
    return total


def debugfs(image, commands):
    script = os.path.join(WORK, "debugfs.cmds")
    with open(script, "w") as f:
        f.write("\n".join(commands) + "\n")
    sh("debugfs", "-w", "-f", script, image, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def thin_overlay(flat, backing, out, compress=False):
    """An overlay of `backing` holding exactly the clusters where `flat` differs."""
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.abspath(flat), "-F", "raw", out)
    args = ["qemu-img", "rebase", "-b", os.path.basename(backing), "-F", "qcow2"]
    if compress:
        args.append("-c")
    sh(*args, out, cwd=os.path.dirname(out) or ".")


def build():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    tree = os.path.join(WORK, "tree")
    t0 = time.time()
    data = build_tree(tree)
    print(f"  tree: 20000 files, {data >> 20} MiB ({time.time() - t0:.1f}s)", flush=True)
    base_raw = os.path.join(WORK, "base.raw")
    sh("mke2fs", "-q", "-t", "ext4", "-b", "4096", "-d", tree, "-E", "root_owner=0:0", base_raw, "2G")
    sh("qemu-img", "convert", "-O", "qcow2", base_raw, os.path.join(WORK, "base.qcow2"))
    payload = os.path.join(WORK, "payload")
    with open(payload, "wb") as f:
        f.write(os.urandom(256 << 10))
    # Overlay 1 (compressed): 200 new files, 100 deleted.
    flat1 = os.path.join(WORK, "flat1.raw")
    sh("cp", "--sparse=always", base_raw, flat1)
    debugfs(flat1, ["mkdir /new1"] + [f"write {payload} /new1/n{i}" for i in range(200)]
            + [f"rm /d{i % 200:03d}/s0/f{i:05d}.dat" for i in range(0, 20000, 200)][:100])
    thin_overlay(flat1, "base.qcow2", os.path.join(WORK, "l1.qcow2"), compress=True)
    # Overlay 2: a directory of 1000 small files.
    flat2 = os.path.join(WORK, "flat2.raw")
    sh("cp", "--sparse=always", flat1, flat2)
    debugfs(flat2, ["mkdir /many"] + [f"write /etc/hostname /many/m{i}" for i in range(1000)])
    thin_overlay(flat2, "l1.qcow2", os.path.join(WORK, "l2.qcow2"))
    # Overlay 3 (top): 100 files changed.
    flat3 = os.path.join(WORK, "flat3.raw")
    sh("cp", "--sparse=always", flat2, flat3)
    cmds = []
    for i in range(1, 20000, 200)[:100]:
        p = f"/d{i % 200:03d}/s{(i // 200) % 10}/f{i:05d}.dat"
        cmds += [f"rm {p}", f"write {payload} {p}"]
    debugfs(flat3, cmds)
    thin_overlay(flat3, "l2.qcow2", os.path.join(WORK, "top.qcow2"))
    for f in (flat1, flat2, flat3):
        os.remove(f)
    shutil.rmtree(tree)
    # The 1 TiB chains: a few clusters, and ten times as many.
    for name, count in (("tb", 40), ("tb10", 400)):
        base = os.path.join(WORK, f"{name}-base.qcow2")
        top = os.path.join(WORK, f"{name}-top.qcow2")
        sh("qemu-img", "create", "-q", "-f", "qcow2", base, "1T")
        sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.basename(base), "-F", "qcow2", top)
        rng = random.Random(count)
        for img in (base, top):
            cmds = [f"write -P {i % 250 + 1} {rng.randrange(0, (1 << 40) >> 16) << 16} 64k" for i in range(count)]
            script = os.path.join(WORK, "qemu-io.cmds")
            with open(script, "w") as f:
                f.write("\n".join(cmds) + "\n")
            with open(script) as f:
                sh("qemu-io", "-f", "qcow2", img, stdin=f, stdout=subprocess.DEVNULL)
    print(f"  built in {time.time() - t0:.0f}s", flush=True)


def timed(cmd, out=None, runs=RUNS):
    """Median wall time of `cmd` and its peak RSS (KiB) from GNU time.
    `out`: a path to send stdout to (deleted before each run), else /dev/null."""
    times, rss = [], 0
    # One untimed run first: every tool meets warm caches (page cache,
    # qemu-nbd's metadata cache), not just the ones measured later.
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if out and os.path.exists(out):
        os.remove(out)
    for _ in range(runs):
        if out and os.path.exists(out):
            os.remove(out)
        sink = open(out, "wb") if out else subprocess.DEVNULL
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, stdout=sink, stderr=subprocess.PIPE, check=True)
        if out:
            sink.close()
        times.append(time.perf_counter() - t0)
        rss = max(rss, int(p.stderr.decode().strip().splitlines()[-1]))
    return statistics.median(times), rss


def row(what, ours, theirs, theirs_name, goal):
    (t1, m1), (t2, m2) = ours, theirs
    print(f"{what:<44} layerscope {t1 * 1000:9.1f} ms {m1 / 1024:7.1f} MiB | {theirs_name:<28} {t2 * 1000:9.1f} ms {m2 / 1024:7.1f} MiB | ratio {t1 / t2:5.2f}x  (goal {goal})")


def main():
    # Each row as it is measured, also when the output goes to a file.
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser()
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--tui", action="store_true", help="only the TUI rows")
    ap.add_argument("--tui-first", action="store_true", help="only the TUI first-frame rows (partitioned and 1 TiB chains)")
    ap.add_argument("--remote", action="store_true", help="only the remote rows (slow NBD, multi-conn, ssh)")
    ap.add_argument("--volumes", action="store_true", help="only the volumes row")
    ap.add_argument("--formats", action="store_true", help="only the image format rows (VMDK, VHD, VHDX, VDI)")
    ap.add_argument("--throughput", action="store_true", help="only the bulk read rows (issue 19)")
    ap.add_argument("--blame", action="store_true", help="only the blame -R rows of --throughput")
    ap.add_argument("--mass", action="store_true", help="only the diff --json mass-create, mass-delete and mass-modify rows (20,000 and 200,000 files created, removed or touched)")
    ap.add_argument("--overlay", action="store_true", help="only the rows whose cost must follow the overlays (issue 19): multi-layer diff, diff and first frame at 1 TiB and 16 TiB, NBD map")
    ap.add_argument("--toolbox", action="store_true", help="only the check/extract/timeline/find/grep rows")
    ap.add_argument("--fs-kinds", action="store_true", help="only the XFS and FAT rows")
    ap.add_argument("--journal", action="store_true", help="only the journal replay rows (a dirty journal of 1000 transactions)")
    ap.add_argument("--xfs", action="store_true", help="only the XFS rows")
    args = ap.parse_args()
    sh("cargo", "build", "--release", "--quiet", cwd=ROOT)
    if args.volumes:
        volumes_bench()
        return
    if args.throughput:
        throughput_bench(args.rebuild)
        overlay_bench(args.rebuild)
        return
    if args.overlay:
        overlay_bench(args.rebuild)
        return
    if args.blame:
        blame_rows(os.path.join(WORK, "throughput"))
        return
    if args.mass:
        mass_create_rows()
        mass_delete_rows()
        mass_modify_rows()
        mass_rename_rows()
        return
    if args.fs_kinds:
        fs_kinds_bench()
        return
    if args.journal:
        journal_bench(args.rebuild)
        return
    if args.xfs:
        xfs_bench(args.rebuild)
        return
    if args.tui or args.tui_first:
        tui_first_frame_bench()
        if args.tui_first:
            return
    if args.rebuild or not os.path.exists(os.path.join(WORK, "tb10-top.qcow2")):
        print("building benchmark images in bench/work ...", flush=True)
        build()
    top = os.path.join(WORK, "top.qcow2")
    size = json.loads(subprocess.check_output(["qemu-img", "info", "--output=json", top]))["virtual-size"]
    print(f"\nchain: {top} (4 layers, {size >> 20} MiB virtual); {RUNS} runs each, medians, warm cache\n")
    if args.tui:
        tui_bench(top)
        return
    if args.toolbox:
        toolbox_bench(top)
        return
    if args.remote:
        remote_bench(top, size)
        return
    if args.formats:
        formats_bench()
        return

    row("map --json (2 GiB chain)", timed([BIN, "map", "--json", top]),
        timed(["qemu-img", "map", "--output=json", top]), "qemu-img map --output=json", "<= 0.5x")

    # Output on tmpfs where there is one: a disk-backed file measures this
    # machine's write-back, not the readers. Both tools make a sparse file.
    out_dir = "/dev/shm" if os.path.isdir("/dev/shm") else WORK
    out_raw = os.path.join(out_dir, "layerscope-bench-out.raw")
    qemu = timed(["qemu-img", "convert", "-O", "raw", top, out_raw], runs=3)
    ours_file = timed([BIN, "read", top], out=out_raw, runs=3)
    os.remove(out_raw)
    ours_null = timed([BIN, "read", top], runs=3)
    mib = size / (1 << 20)
    print(f"{'full read, 2 GiB virtual':<44} qemu-img convert -O raw {out_dir}: {mib / qemu[0]:6.0f} MiB/s | layerscope read > {out_dir}: {mib / ours_file[0]:6.0f} MiB/s | layerscope read > /dev/null: {mib / ours_null[0]:6.0f} MiB/s")
    print(f"{'':<44} throughput ratio layerscope/qemu-img: {qemu[0] / ours_file[0]:.2f}x writing the same sparse file, {qemu[0] / ours_null[0]:.2f}x to /dev/null (goal >= 1.0x)")

    nbd_bench(top, size)
    remote_bench(top, size)
    tui_bench(top)
    fs_bench(top)
    diff_bench(top)
    toolbox_bench(top)
    volumes_bench()
    formats_bench()
    fs_kinds_bench()
    xfs_bench(args.rebuild)

    for name in ("tb", "tb10"):
        img = os.path.join(WORK, f"{name}-top.qcow2")
        row(f"map --json (1 TiB, {'80' if name == 'tb' else '800'} clusters)", timed([BIN, "map", "--json", img]),
            timed(["qemu-img", "map", "--output=json", img]), "qemu-img map --output=json", "RSS < 64 MiB")


# Formats of issue 17: (file name, qemu-img -O, -o options).
FORMATS = [
    ("fmt.vmdk", "vmdk", []),
    ("fmt-stream.vmdk", "vmdk", ["-o", "subformat=streamOptimized"]),
    ("fmt.vhd", "vpc", []),
    ("fmt.vhdx", "vhdx", []),
    ("fmt.vdi", "vdi", []),
]


def formats_bench():
    """Each format on the 2 GiB ext4 disk of the main chain (converted
    from base.raw once, cached in bench/work): `map --json` vs `qemu-img
    map --output=json` (30 interleaved rounds) and a full `read` vs
    `qemu-img convert -O raw` to the same tmpfs file (5 interleaved
    rounds); then `map --json` peak RSS on a 1 TiB image of each format
    with 40 scattered 64 KiB writes."""
    base_raw = os.path.join(WORK, "base.raw")
    out_dir = "/dev/shm" if os.path.isdir("/dev/shm") else WORK
    out = os.path.join(out_dir, "layerscope-bench-fmt.raw")
    for name, fmt, opts in FORMATS:
        img = os.path.join(WORK, name)
        if not os.path.exists(img):
            sh("qemu-img", "convert", "-O", fmt, *opts, base_raw, img)
        ours, theirs = interleaved([[BIN, "map", "--json", img], ["qemu-img", "map", "--output=json", img]])
        print(f"{'map --json ' + name + ' (2 GiB ext4)':<44} layerscope {ours * 1000:9.1f} ms | qemu-img map --output=json {theirs * 1000:9.1f} ms | ratio {ours / theirs:5.2f}x  (goal <= 0.5x)")
        ours, theirs = interleaved([["sh", "-c", f'"$0" read "$1" > "$2"', BIN, img, out],
                                    ["qemu-img", "convert", "-O", "raw", img, out]], rounds=5, warmup=1)
        os.remove(out)
        mib = 2048
        print(f"{'read ' + name + ' (2 GiB) > ' + out_dir:<44} layerscope {mib / ours:6.0f} MiB/s | qemu-img convert -O raw {mib / theirs:6.0f} MiB/s | throughput ratio {theirs / ours:5.2f}x  (goal >= 1.0x)")
    rng = random.Random(17)
    cmds = [f"write -P {i % 250 + 1} {rng.randrange(0, (1 << 40) >> 20) << 20} 64k" for i in range(40)]
    for name, fmt, opts in FORMATS:
        if "stream" in name:
            continue  # qemu-io cannot write a streamOptimized image in place
        img = os.path.join(WORK, "tb-" + name)
        if not os.path.exists(img):
            sh("qemu-img", "create", "-q", "-f", fmt, img, "1T" if fmt != "vpc" else "1000G")
            script = os.path.join(WORK, "qemu-io.cmds")
            with open(script, "w") as f:
                f.write("\n".join(cmds) + "\n")
            with open(script) as f:
                sh("qemu-io", "-f", fmt, img, stdin=f, stdout=subprocess.DEVNULL)
        ours, theirs = peak_rss([BIN, "map", "--json", img]), peak_rss(["qemu-img", "map", "--output=json", img])
        print(f"{'map --json tb-' + name + ' peak RSS':<44} layerscope {ours / 1024:7.1f} MiB | qemu-img map {theirs / 1024:7.1f} MiB  (goal < 64 MiB)")


def lvm_cmd(dev, *args):
    """An LVM command limited to `dev`, with activation off (no
    device-mapper), no udev, no devices file, no backups."""
    config = (f'global {{ activation = 0 }} devices {{ filter = [ "a|^{dev}$|", "r|.*|" ] '
              'obtain_device_list_from_udev = 0 use_devicesfile = 0 } backup { backup = 0 archive = 0 }')
    return [args[0], "--config", config] + list(args[1:])


def build_xfs(top):
    """The 2 GiB XFS chain: mkfs.xfs -p PROTOFILE from the same kind of
    ~20k-file tree as the ext4 chain, and a thin overlay whose edits
    xfs_db -x made (a label, attributes on 100 files)."""
    t0 = time.time()
    tree = os.path.join(WORK, "xfs-tree")
    shutil.rmtree(tree, ignore_errors=True)
    build_tree(tree, seed=2)
    lines = ["/dev/null", "0 0", "d--755 0 0"]

    def walk(d):
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if os.path.isdir(p):
                lines.append(f"{name} d--755 0 0")
                walk(p)
                lines.append("$")
            else:
                lines.append(f"{name} ---644 0 0 {p}")
    walk(tree)
    lines.append("$")
    proto = os.path.join(WORK, "xfs-proto")
    with open(proto, "w") as f:
        f.write("\n".join(lines) + "\n")
    base_raw = os.path.join(WORK, "xfs-base.raw")
    sh("truncate", "-s", "2G", base_raw)
    sh("mkfs.xfs", "-q", "-f", "-p", proto, base_raw)
    sh("qemu-img", "convert", "-O", "qcow2", base_raw, os.path.join(WORK, "xfs-base.qcow2"))
    flat = os.path.join(WORK, "xfs-flat1.raw")
    sh("cp", "--sparse=always", base_raw, flat)
    cmds = []
    for i in range(0, 20000, 200):
        cmds += [f"path /d{i % 200:03d}/s{(i // 200) % 10}/f{i:05d}.dat", "attr_set -u -v 100 user.bench"]
    subprocess.run(["xfs_db", "-x", flat], input="\n".join(cmds).encode() + b"\n", check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["xfs_db", "-x", "-c", "label bench", flat], check=True, stdout=subprocess.DEVNULL)
    thin_overlay(flat, "xfs-base.qcow2", top)
    os.remove(flat)
    shutil.rmtree(tree)
    print(f"  XFS chain built in {time.time() - t0:.0f}s", flush=True)


def xfs_bench(rebuild=False):
    """XFS through the qcow2 chain vs xfsprogs on the flattened image:
    `ls -R /` vs a recursive listing with xfs_db alone (bench/xfs_db_ls.py:
    one xfs_db per tree level), and `info --groups` vs xfs_info plus one
    xfs_db printing the AGF and AGI of every AG (the two medians summed).
    Medians of interleaved runs. No kernel mount here to run find on."""
    if shutil.which("mkfs.xfs") is None or shutil.which("xfs_db") is None:
        print("(XFS rows skipped: apt-get install xfsprogs)")
        return
    top = os.path.join(WORK, "xfs-top.qcow2")
    if rebuild or not os.path.exists(top):
        os.makedirs(WORK, exist_ok=True)
        build_xfs(top)
    flat = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else WORK, "layerscope-bench-xfs.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", top, flat], check=True)
    try:
        agcount = int(subprocess.check_output(["xfs_db", "-r", "-c", "sb 0", "-c", "print agcount", flat]).split()[-1])
        ags = []
        for a in range(agcount):
            ags += ["-c", f"agf {a}", "-c", "print", "-c", f"agi {a}", "-c", "print"]
        ls = [BIN, "ls", "-R", top]
        db_ls = ["python3", os.path.join(HERE, "xfs_db_ls.py"), flat]
        info = [BIN, "info", "--groups", top]
        xfs_info, db_ags = ["xfs_info", flat], ["xfs_db", "-r"] + ags + [flat]
        t_ls, t_db_ls = interleaved([ls, db_ls], rounds=10, warmup=1)
        t_info, t_xfs_info, t_db_ags = interleaved([info, xfs_info, db_ags])
        row("XFS ls -R / (~20k files, chain vs flat raw)", (t_ls, peak_rss(ls)), (t_db_ls, peak_rss(db_ls)),
            "xfs_db ls, per level (flat)", "absolute, RSS < 64 MiB")
        row(f"XFS info --groups ({agcount} AGs, chain vs flat)", (t_info, peak_rss(info)),
            (t_xfs_info + t_db_ags, max(peak_rss(xfs_info), peak_rss(db_ags))), "xfs_info + xfs_db agf/agi", "<= 1x")
    finally:
        os.remove(flat)


def volumes_bench():
    """`volumes --json` on a 2 GiB GPT disk (BIOS boot, FAT32 ESP, ext4
    /boot, an LVM PV with root and home LVs holding ext4) vs what one would
    run instead: `sfdisk --json`, `blkid -p -O OFFSET` per partition and
    `lvs` (on a loop device over the PV's partition, as LVM needs a block
    device). Same raw image for all; medians of interleaved runs; the
    tools' medians are summed."""
    if os.geteuid() != 0 or shutil.which("losetup") is None or shutil.which("lvs") is None:
        print("(volumes row skipped: needs root, losetup and lvm2)")
        return
    disk = os.path.join(WORK, "volumes.raw")
    parts = [(2048, 2048, "21686148-6449-6E6F-744E-656564454649"), (4096, 524288, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
             (528384, 1048576, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"), (1576960, 2613248, "E6D6D379-F507-44C2-A23C-238F2A3DF928")]
    vg = "lsbench"
    env = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    pv_at, pv_len = parts[3][0] * 512, parts[3][1] * 512

    def attach():
        return subprocess.check_output(["losetup", "-f", "--show", "-o", str(pv_at), "--sizelimit", str(pv_len), disk]).decode().strip()

    if not os.path.exists(disk):
        os.makedirs(WORK, exist_ok=True)
        with open(disk + ".tmp", "wb") as f:
            f.truncate(2 << 30)
        script = "label: gpt\n" + "".join(f"start={a}, size={n}, type={t}\n" for a, n, t in parts)
        subprocess.run(["sfdisk", "-q", disk + ".tmp"], input=script.encode(), check=True)
        sh("mkfs.vfat", "-F", "32", "-n", "ESP", "--offset", str(parts[1][0]), disk + ".tmp", str(parts[1][1] // 2), stdout=subprocess.DEVNULL)
        sh("mke2fs", "-q", "-F", "-t", "ext4", "-L", "boot", "-E", f"offset={parts[2][0] * 512}", disk + ".tmp", f"{parts[2][1] // 2}k")
        dev = subprocess.check_output(["losetup", "-f", "--show", "-o", str(pv_at), "--sizelimit", str(pv_len), disk + ".tmp"]).decode().strip()
        try:
            sh(*lvm_cmd(dev, "pvcreate", "-q", dev), **quiet)
            sh(*lvm_cmd(dev, "vgcreate", "-q", vg, dev), **quiet)
            for name, size in (("root", "800m"), ("home", "400m")):
                sh(*lvm_cmd(dev, "lvcreate", "-q", "-an", "-Zn", "-L", size, "-n", name, vg), **quiet)
            segs = json.loads(subprocess.check_output(lvm_cmd(dev, "lvs", "--reportformat", "json", "--units", "b", "--nosuffix",
                                                              "-o", "lv_name,seg_pe_ranges", vg), env=env))["report"][0]["lv"]
            pe_start = int(subprocess.check_output(lvm_cmd(dev, "pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", dev), env=env).decode().split()[0])
            extent = int(subprocess.check_output(lvm_cmd(dev, "vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", vg), env=env).decode().split()[0])
        finally:
            subprocess.run(["losetup", "-d", dev])
        # ext4 in each (linear) LV: made apart, copied to its extents.
        for lv in segs:
            first, last = (int(x) for x in lv["seg_pe_ranges"].split(":")[1].split("-"))
            flat = os.path.join(WORK, f"lv-{lv['lv_name']}.raw")
            with open(flat, "wb") as f:
                f.truncate((last - first + 1) * extent)
            sh("mke2fs", "-q", "-F", "-t", "ext4", "-L", lv["lv_name"], flat)
            sh("dd", f"if={flat}", f"of={disk}.tmp", "bs=1M", f"seek={pv_at + pe_start + first * extent}", "oflag=seek_bytes", "conv=notrunc,sparse", "status=none")
            os.remove(flat)
        os.rename(disk + ".tmp", disk)
    dev = attach()
    try:
        ours = [BIN, "volumes", "--json", disk]
        theirs = [["sfdisk", "--json", disk]] + [["blkid", "-p", "-O", str(a * 512), disk] for a, _, _ in parts]
        theirs.append(lvm_cmd(dev, "lvs", "--reportformat", "json", "-o", "+seg_pe_ranges,devices", vg))
        # lvs warns that activation is off: keep stderr out of the timing.
        # blkid exits 2 on the BIOS boot partition (nothing to probe).
        medians = interleaved([ours] + theirs, rounds=20, check=False)
        t_ours, t_theirs = medians[0], sum(medians[1:])
        print(f"{'volumes --json (2 GiB GPT disk with LVM)':<44} layerscope {t_ours * 1000:9.1f} ms {peak_rss(ours) / 1024:7.1f} MiB | "
              f"{'sfdisk + 4 blkid -p + lvs':<28} {t_theirs * 1000:9.1f} ms | ratio {t_ours / t_theirs:5.2f}x  (goal <= 1x)")
        print(f"{'':<44} (sfdisk {medians[1] * 1000:.1f} ms, blkid {sum(medians[2:6]) * 1000:.1f} ms in all, lvs {medians[6] * 1000:.1f} ms)")
    finally:
        subprocess.run(["losetup", "-d", dev])


def fs_kinds_bench():
    """XFS and FAT32 through the generic trait path, each a two-layer
    qcow2 chain (5000 files in 50 directories; the overlay changes 50
    files: their mode on XFS with xfs_db, their bytes on FAT with mcopy):
    ls -R vs `fls -r -p` and `mdir -/ -b` on FAT's flat image (fls has no
    XFS; no tool lists an XFS image's tree without mounting it), and the
    tree-compare diff of the overlay, timed alone. Medians of interleaved
    runs."""
    d = os.path.join(WORK, "fskinds")
    if not os.path.exists(os.path.join(d, "fat-top.qcow2")):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        src = os.path.join(d, "src")
        names = []
        for i in range(50):
            os.makedirs(os.path.join(src, f"d{i:02}"))
            for j in range(100):
                name = f"d{i:02}/file-{j:03}.txt"
                with open(os.path.join(src, name), "wb") as f:
                    f.write(bytes([j % 251]) * (1000 + 37 * j))
                names.append(name)
        # XFS from a protofile, the overlay from xfs_db edits.
        proto = ["/dev/null", "0 0", "d--755 0 0"]
        for i in range(50):
            proto.append(f"d{i:02} d--755 0 0")
            for j in range(100):
                proto.append(f"file-{j:03}.txt ---644 0 0 {os.path.join(src, f'd{i:02}/file-{j:03}.txt')}")
            proto.append("$")
        proto.append("$")
        with open(os.path.join(d, "proto"), "w") as f:
            f.write("\n".join(proto) + "\n")
        xfs = os.path.join(d, "xfs.raw")
        with open(xfs, "wb") as f:
            f.truncate(512 << 20)
        sh("mkfs.xfs", "-q", "-p", os.path.join(d, "proto"), xfs, env=dict(os.environ, TEST_DIR="1", TEST_DEV="1", QA_CHECK_FS="1"))
        sh("qemu-img", "convert", "-O", "qcow2", xfs, os.path.join(d, "xfs-base.qcow2"))
        shutil.copy(xfs, os.path.join(d, "xfs-edit.raw"))
        cmds = "".join(f"path /{n}\nwrite core.mode 0100600\n" for n in names[::100])
        subprocess.run(["xfs_db", "-x", os.path.join(d, "xfs-edit.raw")], input=cmds.encode(), stdout=subprocess.DEVNULL, check=True)
        thin_overlay(os.path.join(d, "xfs-edit.raw"), os.path.join(d, "xfs-base.qcow2"), os.path.join(d, "xfs-top.qcow2"))
        # FAT32 filled with mcopy, the overlay rewrites 50 files.
        fat = os.path.join(d, "fat.raw")
        sh("mkfs.vfat", "-C", "-F", "32", fat, str(256 << 10), stdout=subprocess.DEVNULL)
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        sh("mcopy", "-s", "-i", fat, *[os.path.join(src, f"d{i:02}") for i in range(50)], "::/", env=env)
        sh("qemu-img", "convert", "-O", "qcow2", fat, os.path.join(d, "fat-base.qcow2"))
        shutil.copy(fat, os.path.join(d, "fat-edit.raw"))
        new = os.path.join(d, "new.txt")
        with open(new, "wb") as f:
            f.write(b"rewritten\n" * 300)
        for n in names[::100]:
            sh("mcopy", "-o", "-i", os.path.join(d, "fat-edit.raw"), new, f"::/{n}", env=env)
        thin_overlay(os.path.join(d, "fat-edit.raw"), os.path.join(d, "fat-base.qcow2"), os.path.join(d, "fat-top.qcow2"))
    fat_top, fat = os.path.join(d, "fat-top.qcow2"), os.path.join(d, "fat-edit.raw")
    xfs_top = os.path.join(d, "xfs-top.qcow2")
    ls_fat, fls, mdir = [BIN, "ls", "-R", fat_top], ["fls", "-r", "-p", fat], ["mdir", "-i", fat, "-/", "-b", "::/"]
    ls_xfs, diff_fat, diff_xfs = [BIN, "ls", "-R", xfs_top], [BIN, "diff", fat_top], [BIN, "diff", xfs_top]
    have_fls = shutil.which("fls") is not None
    cmds = [ls_fat, mdir] + ([fls] if have_fls else [])
    medians = interleaved(cmds, rounds=15)
    row("FAT32 ls -R (5000 files, chain vs flat raw)", (medians[0], peak_rss(ls_fat)), (medians[1], peak_rss(mdir)), "mdir -/ -b (flat raw image)", "<= 1x")
    if have_fls:
        row("FAT32 ls -R (5000 files, chain vs flat raw)", (medians[0], peak_rss(ls_fat)), (medians[2], peak_rss(fls)), "fls -r -p (flat raw image)", "<= 1x")
    t = interleaved([ls_xfs, diff_fat, diff_xfs], rounds=5)
    print(f"{'XFS ls -R (5000 files, 2 layers)':<44} layerscope {t[0] * 1000:9.1f} ms {peak_rss(ls_xfs) / 1024:7.1f} MiB (no tool to compare with)")
    print(f"{'FAT32 diff, trees (50 files rewritten)':<44} layerscope {t[1] * 1000:9.1f} ms {peak_rss(diff_fat) / 1024:7.1f} MiB")
    print(f"{'XFS diff, trees (50 modes changed)':<44} layerscope {t[2] * 1000:9.1f} ms {peak_rss(diff_xfs) / 1024:7.1f} MiB")
    fat_check_rows(d, fat_top, fat)


def fat_check_rows(d, fat_top, fat):
    """`check --fs-only` of FAT32 vs `fsck.fat -n` on the flat raw image:
    the 5000-file chain above, and a 16 GiB FAT32 of 512-byte clusters
    (33 M clusters, two 126 MiB FATs, a few hundred files) read as qcow2,
    where the FATs are holes: the check's cost follows the clusters in
    use, fsck.fat reads both FATs whole. Interleaved medians."""
    big, big_raw = os.path.join(d, "fat16g.qcow2"), os.path.join(d, "fat16g.raw")
    if not os.path.exists(big):
        with open(big_raw, "wb") as f:
            f.truncate(16 << 30)
        sh("mkfs.vfat", "-F", "32", "-s", "1", big_raw, stdout=subprocess.DEVNULL)
        src = os.path.join(d, "fat16g-src")
        os.makedirs(os.path.join(src, "a", "b"), exist_ok=True)
        for i in range(300):
            with open(os.path.join(src, "a" if i % 3 else "a/b", f"f{i:03}"), "wb") as f:
                f.write(bytes([i % 251]) * (1000 * (i + 1)))
        sh("mcopy", "-s", "-i", big_raw, os.path.join(src, "a"), "::/", env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
        sh("qemu-img", "convert", "-O", "qcow2", big_raw, big)
    for what, image, raw in (("FAT32 check (5000 files, chain vs flat)", fat_top, fat),
                             ("FAT32 check, 16 GiB, 33 M clusters", big, big_raw)):
        ours, theirs = [BIN, "check", "--fs-only", image], ["fsck.fat", "-n", raw]
        t = interleaved([ours, theirs], rounds=9, warmup=1)
        row(what, (t[0], peak_rss(ours)), (t[1], peak_rss(theirs)), "fsck.fat -n (flat raw image)", "<= 1x")


def diff_bench(top):
    """Layer diff of the top overlay (100 files rewritten) from its clusters,
    vs the full walk and compare of both trees (`diff --full`, which reads
    what `diff -r` of two mounted trees reads)."""
    ours = timed([BIN, "diff", top], runs=5)
    full = timed([BIN, "diff", "--full", top], runs=3)
    row("diff top overlay (100 files changed)", ours, full, "layerscope diff --full", "<= 0.1x")
    ours = timed([BIN, "diff", "--from", "0", top], runs=3)
    full = timed([BIN, "diff", "--full", "--from", "0", top], runs=3)
    row("diff layers 1-3 (1300 new, 100 del, 100 chg)", ours, full, "layerscope diff --full", "")
    ours = timed([BIN, "blame", top, "/d001/s9/f19801.dat"], runs=5)
    print(f"{'blame one file (4 layers)':<44} layerscope {ours[0] * 1000:9.1f} ms {ours[1] / 1024:7.1f} MiB")


def build_throughput(d):
    """The bulk-read chain of issue 19: a 2 GiB ext4 base holding ~600 MiB
    of file data (half random, half zeros that mke2fs -d leaves as holes)
    and a 28 MiB file; a middle overlay of 736 compressed clusters (qemu-io
    write -c); a top overlay with 200 zero clusters over data and 100 data
    clusters; and the flat raw image of the whole (qemu-img convert)."""
    t0 = time.time()
    os.makedirs(d, exist_ok=True)
    tree = os.path.join(d, "tree")
    shutil.rmtree(tree, ignore_errors=True)
    rng = random.Random(5)
    for i in range(40):
        os.makedirs(os.path.join(tree, f"d{i}"))
        for j in range(50):
            n = rng.choice([1000, 20000, 200000, 2000000])
            with open(os.path.join(tree, f"d{i}", f"f{j}"), "wb") as f:
                f.write(rng.randbytes(n // 2) + bytes(n - n // 2))
    with open(os.path.join(tree, "big.bin"), "wb") as f:
        f.write(rng.randbytes(28 << 20))
    base_raw = os.path.join(d, "base.raw")
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", tree, "-E", "root_owner=0:0", base_raw, "2G")
    shutil.rmtree(tree)
    sh("qemu-img", "convert", "-O", "qcow2", base_raw, os.path.join(d, "base.qcow2"))
    os.remove(base_raw)
    mid, top = os.path.join(d, "mid.qcow2"), os.path.join(d, "top.qcow2")
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid)
    cmds = [f"write -c -P {i % 200 + 1} {rng.randrange(0, (2 << 30) >> 16) << 16} 64k" for i in range(736)]
    subprocess.run(["qemu-io", "-f", "qcow2", mid], input="\n".join(cmds).encode() + b"\n", stdout=subprocess.DEVNULL)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top)
    cmds = [f"write -z {rng.randrange(0, (600 << 20) >> 16) << 16} 64k" for _ in range(200)]
    cmds += [f"write -P 7 {rng.randrange(0, (2 << 30) >> 16) << 16} 64k" for _ in range(100)]
    subprocess.run(["qemu-io", "-f", "qcow2", top], input="\n".join(cmds).encode() + b"\n", stdout=subprocess.DEVNULL)
    sh("qemu-img", "convert", "-O", "raw", top, os.path.join(d, "flat.raw"))
    print(f"  throughput chain built in {time.time() - t0:.0f}s", flush=True)


def build_listing(d, files):
    """An ext4 image of `files` small files (0-3000 bytes, every fourth
    with a user xattr) in files/10 directories, as raw (for fls) and
    qcow2 (for layerscope): the `ls -R --json` rows of issue 19."""
    rng = random.Random(files)
    tree = os.path.join(d, f"tree{files}")
    shutil.rmtree(tree, ignore_errors=True)
    dirs = max(200, files // 100)
    for i in range(files):
        sub = os.path.join(tree, f"d{i % dirs:04d}", f"s{(i // dirs) % 10}")
        os.makedirs(sub, exist_ok=True)
        p = os.path.join(sub, f"f{i:06d}.dat")
        with open(p, "wb") as f:
            f.write(rng.randbytes(rng.randint(0, 3000)))
        if i % 4 == 0:
            os.setxattr(p, "user.tag", f"v{i}".encode())
    raw = os.path.join(d, f"ls{files}.raw")
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-i", "8192", "-d", tree, "-E", "root_owner=0:0",
       raw, "2G" if files < 100000 else "4G")
    shutil.rmtree(tree)
    sh("qemu-img", "convert", "-O", "qcow2", raw, os.path.join(d, f"ls{files}.qcow2"))


def listing_rows(d):
    """`ls -R --json` (qcow2) vs `fls -r -p` (the raw image) at 20,000 and
    200,000 files: interleaved wall medians, CPU time and peak RSS."""
    for files, rounds in ((20000, 9), (200000, 5)):
        raw, img = os.path.join(d, f"ls{files}.raw"), os.path.join(d, f"ls{files}.qcow2")
        if not os.path.exists(img):
            print(f"building the {files}-file listing image ...", flush=True)
            build_listing(d, files)
        ours, theirs = [BIN, "ls", "-R", "--json", img, "/"], ["fls", "-r", "-p", raw]
        t1, t2 = interleaved([ours, theirs], rounds=rounds, warmup=1)
        cpu = [cpu_time(c) for c in (ours, theirs)]
        rss = [peak_rss(c) for c in (ours, theirs)]
        what = f"ls -R --json ({files} files)"
        print(f"{what:<40} layerscope {t1 * 1000:8.1f} ms (cpu {cpu[0] * 1000:6.0f} ms, {rss[0] / 1024:5.1f} MiB) | fls -r -p {t2 * 1000:8.1f} ms (cpu {cpu[1] * 1000:6.0f} ms, {rss[1] / 1024:5.1f} MiB) | ratio {t1 / t2:5.2f}x, cpu {cpu[0] / cpu[1]:5.2f}x (goal <= 0.5x, < 32 MiB)")


def blame_rows(d):
    """`blame -R` of a 2-layer chain (the 20,000- and 200,000-file images,
    each with a thin overlay where debugfs wrote 200 files of 200 KB and
    removed 100) vs `e2fsck -fn` and `fls -r -p` of its flat raw image:
    interleaved wall medians, CPU time and peak RSS."""
    for files, rounds in ((20000, 5), (200000, 3)):
        name = "blame" if files == 20000 else f"blame{files}"
        flat, top = os.path.join(d, f"{name}-flat.raw"), os.path.join(d, f"{name}-top.qcow2")
        if not os.path.exists(os.path.join(d, f"ls{files}.qcow2")):
            print(f"building the {files}-file listing image ...", flush=True)
            build_listing(d, files)
        if not os.path.exists(top):
            sh("cp", "--sparse=always", os.path.join(d, f"ls{files}.raw"), flat)
            payload = os.path.join(d, "payload")
            with open(payload, "wb") as f:
                f.write(random.Random(7).randbytes(200000))
            dirs = max(200, files // 100)
            debugfs(flat, ["mkdir /new"] + [f"write {payload} /new/n{i}" for i in range(200)]
                    + [f"rm /d{i:04d}/s0/f{i:06d}.dat" for i in range(100) if i < dirs])
            thin_overlay(flat, os.path.join(d, f"ls{files}.qcow2"), top)
        ours = [BIN, "blame", "-R", top, "/"]
        e2fsck, fls = ["e2fsck", "-fn", flat], ["fls", "-r", "-p", flat]
        t1, t2, t3 = interleaved([ours, e2fsck, fls], rounds=rounds, warmup=1, check=False)
        cpu = [cpu_time(c) for c in (ours, e2fsck)]
        rss = [peak_rss(c) for c in (ours, e2fsck)]
        what = f"blame -R ({files} files, 2 layers)"
        print(f"{what:<40} layerscope {t1 * 1000:8.1f} ms (cpu {cpu[0] * 1000:6.0f} ms, {rss[0] / 1024:5.1f} MiB) | e2fsck -fn {t2 * 1000:8.1f} ms (cpu {cpu[1] * 1000:6.0f} ms, {rss[1] / 1024:5.1f} MiB) | ratio {t1 / t2:5.2f}x, cpu {cpu[0] / cpu[1]:5.2f}x (goal <= 1x, < 64 MiB); vs fls -r -p {t3 * 1000:.1f} ms: {t1 / t3:.2f}x")


def throughput_bench(rebuild=False):
    """Bulk reads (issue 19) vs what a user runs otherwise, paired and
    interleaved (medians of 15 rounds): `read > /dev/null` vs `qemu-img
    convert` to a null-co target of the disk's size with --target-is-zero
    (it reads what it must and writes nothing), for the 3-layer chain and
    for its flat raw image; `read > FILE` vs `qemu-img convert -O raw`
    (both make a sparse file on tmpfs); `cat` of a 28 MiB file vs icat;
    `ls -R --json` vs `fls -r -p` at 20,000 and 200,000 files (with RSS).
    Also each side's CPU time, since on a shared machine wall time moves
    with the load."""
    d = os.path.join(WORK, "throughput")
    top, flat = os.path.join(d, "top.qcow2"), os.path.join(d, "flat.raw")
    if rebuild or not os.path.exists(flat):
        print("building the throughput chain ...", flush=True)
        build_throughput(d)
    size = os.path.getsize(flat)
    out_dir = "/dev/shm" if os.path.isdir("/dev/shm") else d
    out = os.path.join(out_dir, "layerscope-tp-out.raw")
    null = f"driver=null-co,size={size}"
    sh_cmd = shutil.which("sh") or "/bin/sh"

    def to_file(cmd):
        return [sh_cmd, "-c", f'rm -f {out}; exec "$@" > {out}', "sh"] + cmd

    ino = subprocess.check_output([BIN, "stat", "--json", top, "/big.bin"])
    ino = json.loads(ino)["inode"]
    pairs = [
        ("read > /dev/null (3-layer chain)", [BIN, "read", top],
         ["qemu-img", "convert", "-n", "--target-is-zero", "--target-image-opts", top, null], "qemu-img convert to null-co", "<= 0.67x"),
        ("read > /dev/null (flat raw image)", [BIN, "read", flat],
         ["qemu-img", "convert", "-n", "--target-is-zero", "--target-image-opts", flat, null], "qemu-img convert to null-co", "<= 1x"),
        ("read > sparse file (3-layer chain)", to_file([BIN, "read", top]),
         [sh_cmd, "-c", f"rm -f {out}; exec qemu-img convert -O raw {top} {out}"], "qemu-img convert -O raw", "<= 0.67x"),
        ("cat of a 28 MiB file (chain vs flat)", [BIN, "cat", top, "/big.bin"],
         ["icat", flat, str(ino)], "icat (flat raw image)", "<= 0.67x"),
    ]
    cmds = [c for p in pairs for c in (p[1], p[2])]
    medians = interleaved(cmds, rounds=15, warmup=2)
    for i, (what, ours, theirs, name, goal) in enumerate(pairs):
        cpu = [cpu_time(c) for c in (ours, theirs)]
        t1, t2 = medians[2 * i], medians[2 * i + 1]
        print(f"{what:<40} layerscope {t1 * 1000:8.1f} ms (cpu {cpu[0] * 1000:6.0f} ms) | {name:<28} {t2 * 1000:8.1f} ms (cpu {cpu[1] * 1000:6.0f} ms) | ratio {t1 / t2:5.2f}x (goal {goal})")
    if os.path.exists(out):
        os.remove(out)
    listing_rows(d)
    blame_rows(d)


def data_ranges(path):
    """The data ranges (start, end) of a sparse file (SEEK_DATA/SEEK_HOLE)."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        end, at = os.fstat(fd).st_size, 0
        while at < end:
            try:
                s = os.lseek(fd, at, os.SEEK_DATA)
            except OSError:
                break
            at = os.lseek(fd, s, os.SEEK_HOLE)
            out.append((s, at))
    finally:
        os.close(fd)
    return out


def sparse_overlay(old, new, backing, out, cluster=65536):
    """A qcow2 overlay of `backing` holding the clusters where the sparse
    raw files `old` and `new` differ; only their data ranges are read, so
    a 16 TiB disk costs what its data costs. Returns the clusters written."""
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.basename(backing), "-F", "qcow2", out)
    clusters = sorted({c for s, e in data_ranges(old) + data_ranges(new) for c in range(s // cluster, -(-e // cluster))})
    pieces = out + ".pieces"
    os.makedirs(pieces, exist_ok=True)
    cmds = []
    with open(old, "rb") as fo, open(new, "rb") as fn:
        for c in clusters:
            fo.seek(c * cluster)
            fn.seek(c * cluster)
            a, b = fo.read(cluster), fn.read(cluster)
            if a != b:
                p = os.path.join(pieces, str(c))
                with open(p, "wb") as f:
                    f.write(b)
                cmds.append(f"write -q -s {p} {c * cluster} {cluster}")
    subprocess.run(["qemu-io", "-f", "qcow2", out], input=("\n".join(cmds) + "\n").encode(), check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(pieces)
    return len(cmds)


def build_sparse_fs_chain(d, name, size, files=200):
    """A whole-disk ext4 of `size` bytes (1 TiB, 16 TiB: sparse, lazy inode
    tables) with `files` files of up to 200 KB in 20 directories, as a qcow2
    base, and a proper filesystem overlay (not random writes): debugfs adds
    a directory of 20 files, deletes 5, rewrites 5 and chmods 5 on a raw
    copy, and the overlay holds the clusters that differ. The raw files
    live on tmpfs (a 16 TiB file does not fit ext4's file size limit)."""
    base, top = os.path.join(d, f"{name}-base.qcow2"), os.path.join(d, f"{name}-top.qcow2")
    if os.path.exists(top):
        return top
    t0 = time.time()
    os.makedirs(d, exist_ok=True)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else d
    tree = os.path.join(shm, f"layerscope-bench-{name}-tree")
    shutil.rmtree(tree, ignore_errors=True)
    rng = random.Random(size)
    for i in range(files):
        sub = os.path.join(tree, f"d{i % 20:02d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:05d}.dat"), "wb") as f:
            f.write(rng.randbytes(rng.randint(0, 200000)))
    raw0, raw1 = (os.path.join(shm, f"layerscope-bench-{name}-{k}.raw") for k in (0, 1))
    try:
        sh("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", tree,
           "-E", "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1", raw0, str(size // 4096))
        shutil.rmtree(tree)
        sh("qemu-img", "convert", "-O", "qcow2", raw0, base)
        sh("cp", "--sparse=always", raw0, raw1)
        payload = os.path.join(shm, f"layerscope-bench-{name}-payload")
        with open(payload, "wb") as f:
            f.write(rng.randbytes(100000))
        cmds = ["mkdir /new"] + [f"write {payload} /new/n{i}" for i in range(20)]
        cmds += [f"rm /d{i % 20:02d}/f{i:05d}.dat" for i in range(0, 50, 10)]
        for i in range(1, 50, 10):
            p = f"/d{i % 20:02d}/f{i:05d}.dat"
            cmds += [f"rm {p}", f"write {payload} {p}"]
        cmds += [f"sif /d{i % 20:02d}/f{i:05d}.dat mode 0100600" for i in range(2, 50, 10)]
        debugfs(raw1, cmds)
        os.remove(payload)
        n = sparse_overlay(raw0, raw1, base, top)
    finally:
        for f in (raw0, raw1):
            if os.path.exists(f):
                os.remove(f)
    print(f"  {name}: {size >> 40} TiB ext4, overlay of {n} clusters, built in {time.time() - t0:.0f}s", flush=True)
    return top


def build_chmod_chain(d, n):
    """A 2 GiB ext4 of `n` empty files (dirs of 500) as a qcow2 base, and
    an overlay in which debugfs changed every file's mode: `diff` reports
    `n` changes. Cached in `d`."""
    base, top = os.path.join(d, f"c{n}-base.qcow2"), os.path.join(d, f"c{n}-top.qcow2")
    if os.path.exists(top):
        return top
    os.makedirs(d, exist_ok=True)
    tree, raw = os.path.join(d, f"c{n}-tree"), os.path.join(d, f"c{n}.raw")
    shutil.rmtree(tree, ignore_errors=True)
    for i in range(n):
        sub = os.path.join(tree, f"d{i // 500:04d}")
        if i % 500 == 0:
            os.makedirs(sub)
        open(os.path.join(sub, f"f{i:06d}"), "w").close()
    try:
        sh("truncate", "-s", "2G", raw)
        sh("mkfs.ext4", "-q", "-F", "-N", str(n + 4096), "-d", tree, raw)
        shutil.rmtree(tree)
        sh("qemu-img", "convert", "-O", "qcow2", raw, base)
        debugfs(raw, [f"sif /d{i // 500:04d}/f{i:06d} mode 0100600" for i in range(n)])
        sh("qemu-img", "convert", "-O", "qcow2", "-B", os.path.basename(base), "-F", "qcow2", raw, top)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
        if os.path.exists(raw):
            os.remove(raw)
    return top


def diff_json_rss_rows():
    """`diff --json` peak RSS at 1,000, 16,000 and 120,000 changes (issue
    19 item 3: memory flat in the number of changes)."""
    d = os.path.join(WORK, "json")
    for n in (1000, 16000, 120000):
        top = build_chmod_chain(d, n)
        t = timed([BIN, "diff", "--json", top], runs=1)
        print(f"{'diff --json, ' + format(n, ',') + ' changes':<40} layerscope {t[0] * 1000:8.1f} ms, peak RSS {t[1] / 1024:6.1f} MiB (goal: flat in the changes)")


def mass_created(n):
    """The paths a mass create of `n` files makes (what `build_mass_create`
    gives debugfs, in its order): /new, /new/dNNNN (200 files each), the
    files under them, and every 100th file in an existing directory
    /base/dK instead. The oracle of the row and of tests/it/diff_mass.rs."""
    dirs = ["/new"] + [f"/new/d{k:04d}" for k in range(-(-n // 200))]
    files = [f"/base/d{i % 10}/m{i:06d}" if i % 100 == 99 else f"/new/d{i // 200:04d}/f{i:06d}" for i in range(n)]
    return dirs, files


def mass_base_tree(tree, rng):
    """What a mass-create or mass-delete base holds besides the mass: 10
    directories /base/dK of 20 small random files."""
    for k in range(10):
        os.makedirs(os.path.join(tree, "base", f"d{k}"))
        for j in range(20):
            with open(os.path.join(tree, "base", f"d{k}", f"b{j:02d}"), "wb") as f:
                f.write(rng.randbytes(rng.randint(0, 5000)))


def build_mass_create(d, n):
    """A 2 GiB ext4 base (10 directories of 20 small files, by mke2fs -d)
    and a thin overlay in which debugfs created `n` files (every 16th with
    3,000 bytes, the rest empty) in 1 + n/200 new directories, every 100th
    in an existing directory: the `diff --json` mass-create rows. Returns
    the top overlay and its flat raw image (the `fls` anchor). Cached."""
    base, top, flat = (os.path.join(d, f"mass{n}-{k}") for k in ("base.qcow2", "top.qcow2", "flat.raw"))
    if os.path.exists(top):
        return top, flat
    t0 = time.time()
    os.makedirs(d, exist_ok=True)
    tree = os.path.join(d, f"mass{n}-tree")
    shutil.rmtree(tree, ignore_errors=True)
    rng = random.Random(n)
    mass_base_tree(tree, rng)
    raw = os.path.join(d, f"mass{n}-base.raw")
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-N", str(n + 20000), "-d", tree,
       "-E", "root_owner=0:0", raw, "2G")
    shutil.rmtree(tree)
    sh("qemu-img", "convert", "-O", "qcow2", raw, base)
    os.rename(raw, flat)
    payload = os.path.join(d, f"mass{n}-payload")
    with open(payload, "wb") as f:
        f.write(rng.randbytes(3000))
    dirs, files = mass_created(n)
    cmds = [f"mkdir {p}" for p in dirs]
    cmds += [f"write {payload if i % 16 == 0 else '/dev/null'} {p}" for i, p in enumerate(files)]
    debugfs(flat, cmds)
    os.remove(payload)
    thin_overlay(flat, base, top)
    print(f"  mass create of {n} files built in {time.time() - t0:.0f}s", flush=True)
    return top, flat


def build_mass_delete(d, n):
    """A 2 GiB ext4 base holding the tree a mass create of `n` files makes
    (`mass_created`, every 16th file with 3,000 bytes, besides 10
    directories of 20 small files; by mke2fs -d) and a thin overlay in
    which debugfs removed all of it: the `diff --json` mass-delete rows.
    Returns the top overlay and the base's raw image (the `fls` anchor:
    what was there). Cached."""
    base, top, old = (os.path.join(d, f"gone{n}-{k}") for k in ("base.qcow2", "top.qcow2", "old.raw"))
    if os.path.exists(top):
        return top, old
    t0 = time.time()
    os.makedirs(d, exist_ok=True)
    tree = os.path.join(d, f"gone{n}-tree")
    shutil.rmtree(tree, ignore_errors=True)
    rng = random.Random(n)
    mass_base_tree(tree, rng)
    dirs, files = mass_created(n)
    for p in dirs:
        os.makedirs(tree + p, exist_ok=True)
    payload = rng.randbytes(3000)
    for i, p in enumerate(files):
        with open(tree + p, "wb") as f:
            f.write(payload if i % 16 == 0 else b"")
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-N", str(n + 20000), "-d", tree,
       "-E", "root_owner=0:0", old, "2G")
    shutil.rmtree(tree)
    sh("qemu-img", "convert", "-O", "qcow2", old, base)
    flat = os.path.join(d, f"gone{n}-flat.raw")
    shutil.copyfile(old, flat)
    debugfs(flat, [f"rm {p}" for p in files] + [f"rmdir {p}" for p in reversed(dirs)])
    thin_overlay(flat, base, top)
    os.remove(flat)
    print(f"  mass delete of {n} files built in {time.time() - t0:.0f}s", flush=True)
    return top, old


def mass_delete_rows():
    """`diff --json` of a mass delete (20,000 and 200,000 files removed in
    the top overlay) vs `fls -r -p` of the base's raw image (what was
    there): interleaved wall medians, CPU time and peak RSS (issue 19:
    memory flat, < 32 MiB). The row checks that every removed path is
    listed as deleted."""
    d = os.path.join(WORK, "mass")
    for n, rounds in ((20000, 5), (200000, 3)):
        top, old = build_mass_delete(d, n)
        ours, fls = [BIN, "diff", "--json", top], ["fls", "-r", "-p", old]
        got = json.loads(subprocess.check_output(ours))["changes"]
        dirs, files = mass_created(n)
        deleted = {c["path"] for c in got if c["change"] == "deleted"}
        missing = set(dirs + files) - deleted
        assert not missing, f"{len(missing)} removed paths not listed, e.g. {sorted(missing)[:3]}"
        t1, t2 = interleaved([ours, fls], rounds=rounds, warmup=1)
        cpu = [cpu_time(c) for c in (ours, fls)]
        rss = [peak_rss(c) for c in (ours, fls)]
        what = f"diff --json, {n} files deleted"
        print(f"{what:<40} layerscope {t1 * 1000:8.1f} ms (cpu {cpu[0] * 1000:6.0f} ms, {rss[0] / 1024:5.1f} MiB) | fls -r -p {t2 * 1000:8.1f} ms (cpu {cpu[1] * 1000:6.0f} ms, {rss[1] / 1024:5.1f} MiB) | ratio {t1 / t2:5.2f}x ({len(got)} changes; goal < 32 MiB)")


def build_mass_modify(d, n):
    """The mass-delete base (`build_mass_delete`: the tree a mass create
    of `n` files makes) and a thin overlay in which debugfs set the mtime
    of every file (what a `touch` over the tree, or a restore that sets
    times, leaves): the `diff --json` mass-modify rows. Returns the top
    overlay and the base's raw image. Cached."""
    build_mass_delete(d, n)
    base, old = (os.path.join(d, f"gone{n}-{k}") for k in ("base.qcow2", "old.raw"))
    top = os.path.join(d, f"touched{n}-top.qcow2")
    if os.path.exists(top):
        return top, old
    t0 = time.time()
    flat = os.path.join(d, f"touched{n}-flat.raw")
    shutil.copyfile(old, flat)
    _, files = mass_created(n)
    debugfs(flat, [f"sif {p} mtime 20200101000000" for p in files])
    thin_overlay(flat, base, top)
    os.remove(flat)
    print(f"  mass modify of {n} files built in {time.time() - t0:.0f}s", flush=True)
    return top, old


def mass_modify_rows():
    """`diff --json` of a mass modify (the mtime of 20,000 and 200,000
    files set in the top overlay) vs `fls -r -p` of the base, and `diff
    --full --json` beside it (the walk of both trees; a scan per modified
    file made it quadratic, 42 s at 200,000). The row checks that every
    file is listed as modified, by both."""
    d = os.path.join(WORK, "mass")
    for n, rounds in ((20000, 5), (200000, 3)):
        top, old = build_mass_modify(d, n)
        ours, full, fls = [BIN, "diff", "--json", top], [BIN, "diff", "--full", "--json", top], ["fls", "-r", "-p", old]
        _, files = mass_created(n)
        for cmd in (ours, full):
            got = json.loads(subprocess.check_output(cmd))["changes"]
            modified = {c["path"] for c in got if c["change"] == "modified" and "mtime" in c.get("metadata", [])}
            missing = set(files) - modified
            assert not missing, f"{cmd[2]}: {len(missing)} touched files not listed, e.g. {sorted(missing)[:3]}"
        t1, t2, t3 = interleaved([ours, full, fls], rounds=rounds, warmup=1)
        rss = [peak_rss(c) for c in (ours, full)]
        what = f"diff --json, {n} files modified"
        print(f"{what:<40} layerscope {t1 * 1000:8.1f} ms ({rss[0] / 1024:5.1f} MiB) | fls -r -p {t3 * 1000:8.1f} ms | ratio {t1 / t3:5.2f}x | diff --full {t2 * 1000:8.1f} ms ({rss[1] / 1024:5.1f} MiB)")


def build_mass_rename(d, n):
    """A base of `n` directories `/d/dirK` (each holding a file `f` and a
    directory `sub`; without dir_index, where debugfs's link keeps the
    directory sound) and a thin overlay in which debugfs renamed every
    one to `/d/movK` (unlink, then link the inode under a name as long):
    the `diff --json` mass-rename row. Returns the top overlay and the
    base's raw image. Cached."""
    os.makedirs(d, exist_ok=True)
    base, old, top = (os.path.join(d, f"renamed{n}-{k}") for k in ("base.qcow2", "old.raw", "top.qcow2"))
    if os.path.exists(top):
        return top, old
    t0 = time.time()
    tree = os.path.join(d, f"renamed{n}-tree")
    shutil.rmtree(tree, ignore_errors=True)
    for k in range(n):
        os.makedirs(os.path.join(tree, "d", f"dir{k}", "sub"))
        with open(os.path.join(tree, "d", f"dir{k}", "f"), "w") as f:
            f.write("x")
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-O", "^dir_index", "-b", "4096", "-N", str(3 * n + 1000),
       "-d", tree, "-E", "root_owner=0:0", old, "512M")
    shutil.rmtree(tree)
    sh("qemu-img", "convert", "-O", "qcow2", old, base)
    ls = subprocess.run(["debugfs", "-R", "ls -l /d", old], capture_output=True, text=True, check=True).stdout
    cmds = []
    for line in ls.splitlines():
        w = line.split()
        if w and w[-1].startswith("dir"):
            cmds += [f"unlink /d/{w[-1]}", f"link <{w[0]}> /d/mov{w[-1][3:]}"]
    flat = os.path.join(d, f"renamed{n}-flat.raw")
    shutil.copyfile(old, flat)
    debugfs(flat, cmds)
    sh("e2fsck", "-fn", flat, stdout=subprocess.DEVNULL)
    thin_overlay(flat, base, top)
    os.remove(flat)
    print(f"  mass rename of {n} directories built in {time.time() - t0:.0f}s", flush=True)
    return top, old


def mass_rename_rows():
    """`diff --json` of a mass rename (20,000 directories renamed in the
    top overlay, each holding a file and a directory) vs `fls -r -p` of
    the base, and `diff --full --json` beside it. Each changed name was
    matched against every directory move: 46 s before the moves were
    indexed by path. The row checks that every directory, and what is
    under it, is listed as moved from its old path, by both."""
    d = os.path.join(WORK, "mass")
    n = 20000
    top, old = build_mass_rename(d, n)
    ours, full, fls = [BIN, "diff", "--json", top], [BIN, "diff", "--full", "--json", top], ["fls", "-r", "-p", old]
    want = {(f"/d/mov{k}{p}", f"/d/dir{k}{p}") for k in range(n) for p in ("", "/f", "/sub")}
    for cmd in (ours, full):
        got = json.loads(subprocess.check_output(cmd))["changes"]
        moved = {(c["path"], c.get("from")) for c in got if c["change"] == "moved"}
        assert moved == want and len(got) == len(want), f"{cmd[2]}: {len(want - moved)} moves not listed, {len(got) - len(want & moved)} other changes"
    t1, t2, t3 = interleaved([ours, full, fls], rounds=5, warmup=1)
    rss = [peak_rss(c) for c in (ours, full)]
    what = f"diff --json, {n} directories renamed"
    print(f"{what:<40} layerscope {t1 * 1000:8.1f} ms ({rss[0] / 1024:5.1f} MiB) | fls -r -p {t3 * 1000:8.1f} ms | ratio {t1 / t3:5.2f}x | diff --full {t2 * 1000:8.1f} ms ({rss[1] / 1024:5.1f} MiB)")


def mass_create_rows():
    """`diff --json` of a mass create (20,000 and 200,000 files created in
    the top overlay) vs `fls -r -p` of the top's flat raw image, which
    lists the whole tree as of the top: interleaved wall medians, CPU time
    and peak RSS (issue 19: items streamed, memory flat, < 32 MiB). The
    row checks that every created path is listed as added."""
    d = os.path.join(WORK, "mass")
    for n, rounds in ((20000, 5), (200000, 3)):
        top, flat = build_mass_create(d, n)
        ours, fls = [BIN, "diff", "--json", top], ["fls", "-r", "-p", flat]
        got = json.loads(subprocess.check_output(ours))["changes"]
        dirs, files = mass_created(n)
        added = {c["path"] for c in got if c["change"] == "added"}
        missing = set(dirs + files) - added
        assert not missing, f"{len(missing)} created paths not listed, e.g. {sorted(missing)[:3]}"
        t1, t2 = interleaved([ours, fls], rounds=rounds, warmup=1)
        cpu = [cpu_time(c) for c in (ours, fls)]
        rss = [peak_rss(c) for c in (ours, fls)]
        what = f"diff --json, {n} files created"
        print(f"{what:<40} layerscope {t1 * 1000:8.1f} ms (cpu {cpu[0] * 1000:6.0f} ms, {rss[0] / 1024:5.1f} MiB) | fls -r -p {t2 * 1000:8.1f} ms (cpu {cpu[1] * 1000:6.0f} ms, {rss[1] / 1024:5.1f} MiB) | ratio {t1 / t2:5.2f}x ({len(got)} changes; goal < 32 MiB)")


def overlay_bench(rebuild=False):
    """Rows whose cost must follow the overlays, not the disk (issue 19
    items 5 and 6), interleaved medians with CPU time: the quick diff
    across three overlays (`diff --from 0 --to 3` of the 2 GiB chain)
    vs `diff --full`, with the three single-layer diffs' sum beside it;
    the quick diff of a small overlay on a 1 TiB and a 16 TiB ext4 vs
    `diff --full`; the TUI's first frame there (`render --first-frame`,
    and in a pty), and `render`'s finished picture (the hit map's exact
    counts: every L2 table of the base read);
    `map --json` over NBD vs `nbdinfo --map=qemu:allocation-depth`."""
    if rebuild or not os.path.exists(os.path.join(WORK, "top.qcow2")):
        print("building the 2 GiB chain ...", flush=True)
        build()
    top = os.path.join(WORK, "top.qcow2")
    quick = [BIN, "diff", "--from", "0", "--to", "3", top]
    full = [BIN, "diff", "--full", "--from", "0", "--to", "3", top]
    singles = [[BIN, "diff", "--from", str(k), "--to", str(k + 1), top] for k in range(3)]
    t = interleaved([quick, full] + singles, rounds=7, warmup=1)
    cpu = [cpu_time(c) for c in (quick, full)]
    print(f"{'diff --from 0 --to 3 (3 overlays)':<40} layerscope {t[0] * 1000:8.1f} ms (cpu {cpu[0] * 1000:6.0f} ms) | diff --full {t[1] * 1000:8.1f} ms (cpu {cpu[1] * 1000:6.0f} ms) | ratio {t[0] / t[1]:5.2f}x, cpu {cpu[0] / cpu[1]:5.2f}x (goal <= 0.1x)")
    print(f"{'':<40} the single-layer diffs 0-1, 1-2, 2-3: {t[2] * 1000:.1f} + {t[3] * 1000:.1f} + {t[4] * 1000:.1f} = {sum(t[2:5]) * 1000:.1f} ms (0-3 costs {t[0] / sum(t[2:5]):.2f}x their sum)")
    d = os.path.join(WORK, "sparse")
    if rebuild:
        shutil.rmtree(d, ignore_errors=True)
    for name, size in (("tb1", 1 << 40), ("tb16", 1 << 44)):
        img = build_sparse_fs_chain(d, name, size)
        q, f = [BIN, "diff", img], [BIN, "diff", "--full", img]
        t = interleaved([q, f], rounds=7, warmup=1)
        cpu = [cpu_time(c) for c in (q, f)]
        what = f"diff, small overlay, {size >> 40} TiB disk"
        print(f"{what:<40} layerscope {t[0] * 1000:8.1f} ms (cpu {cpu[0] * 1000:6.0f} ms) | diff --full {t[1] * 1000:8.1f} ms (cpu {cpu[1] * 1000:6.0f} ms) | ratio {t[0] / t[1]:5.2f}x, cpu {cpu[0] / cpu[1]:5.2f}x (goal <= 0.1x)")
        first = timed([BIN, "render", "--first-frame", img, "--size", "120x40"])
        render = timed([BIN, "render", img, "--size", "120x40"])
        ff, _ = first_frame_interactive(img, ["none:", "Hex @"])
        what = f"TUI first frame, {size >> 40} TiB disk"
        print(f"{what:<40} render --first-frame {first[0] * 1000:7.1f} ms, interactive (pty, 120x40) {ff * 1000:7.1f} ms (goal < 100 ms) | "
              f"render (the finished picture: exact hit map) {render[0] * 1000:7.1f} ms, RSS {render[1] / 1024:.1f} MiB")
    diff_json_rss_rows()
    mass_create_rows()
    mass_delete_rows()
    mass_modify_rows()
    mass_rename_rows()
    tp = os.path.join(WORK, "throughput")
    if not os.path.exists(os.path.join(tp, "top.qcow2")):
        print("building the throughput chain ...", flush=True)
        build_throughput(tp)
    nbd_map_row(os.path.join(tp, "top.qcow2"))


def nbd_map_row(top):
    """`map --json` over NBD (qemu-nbd -A, unix socket) vs `nbdinfo
    --map=qemu:allocation-depth` (issue 19 item 6), on the throughput
    chain: its random writes (corrupt as a filesystem, which a map does
    not read) make ~2,000 map entries.

    Beside each tool, qemu-nbd's own CPU per run (its threads' schedstat):
    the map needs two contexts (base:allocation for zero/data, depth for
    the layer), which costs the server about twice what the depth context
    alone does, so the second line compares with nbdinfo asked for both
    (two runs, the same information)."""
    if not shutil.which("qemu-nbd") or not shutil.which("nbdinfo"):
        print("(NBD map row: qemu-nbd or nbdinfo missing, skipped)")
        return
    sock = os.path.join(WORK, "overlay-bench.sock")
    if os.path.exists(sock):
        os.remove(sock)
    server = subprocess.Popen(["qemu-nbd", "--read-only", "--persistent", "--shared=8", "-A", "--socket", sock, "-f", "qcow2", top])
    try:
        wait_for(sock, "qemu-nbd")
        uri = f"nbd+unix:///?socket={sock}"
        ours, theirs = [BIN, "map", "--json", uri], ["nbdinfo", "--map=qemu:allocation-depth", uri]
        both = ["sh", "-c", f"nbdinfo --map '{uri}' && nbdinfo --map=qemu:allocation-depth '{uri}'"]
        t = interleaved([ours, theirs, both], rounds=15, warmup=2)
        cpu = [cpu_time(c) for c in (ours, theirs, both)]
        srv = [server_cpu(server.pid, c) for c in (ours, theirs, both)]
        print(f"{'map --json over NBD (3-layer chain)':<40} layerscope {t[0] * 1000:8.1f} ms (cpu {cpu[0] * 1000:6.0f} ms, server {srv[0] * 1000:5.1f} ms) | nbdinfo --map=...depth {t[1] * 1000:8.1f} ms (cpu {cpu[1] * 1000:6.0f} ms, server {srv[1] * 1000:5.1f} ms) | ratio {t[0] / t[1]:5.2f}x (goal <= 0.5x)")
        print(f"{'  the same information from nbdinfo':<40} nbdinfo --map + --map=...depth {t[2] * 1000:8.1f} ms (cpu {cpu[2] * 1000:6.0f} ms, server {srv[2] * 1000:5.1f} ms) | ratio {t[0] / t[2]:5.2f}x")
    finally:
        server.terminate()
        server.wait()


def server_cpu(pid, cmd, runs=5):
    """CPU seconds a server process (all its threads, from
    /proc/PID/task/*/schedstat, nanoseconds) spends per run of `cmd`:
    the median of `runs`. 0 where /proc has no schedstat."""
    def now():
        total = 0
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            return 0
        return total / 1e9
    spent = []
    for _ in range(runs):
        before = now()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        spent.append(now() - before)
    return statistics.median(spent)


def cpu_time(cmd):
    """User + system seconds of one run (its children included), from
    wait4's rusage: microseconds, where GNU time's %U %S count in
    hundredths and said 0 for a `diff --full` of the 1 TiB disk."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in (0, 1):
        raise subprocess.CalledProcessError(p.returncode, cmd)
    return ru.ru_utime + ru.ru_stime


def build_snapshots_image(d):
    """A 1 TiB qcow2 (64 KiB clusters) with 4 KiB written every 512 MiB
    (2,048 L2 tables, each with one data cluster) and then 30 internal
    snapshots, which share every L2 table with the image: the `check`
    row where qemu-img check walks each table once per snapshot and
    layerscope once. Cached."""
    img = os.path.join(d, "snapshots.qcow2")
    if os.path.exists(img):
        return img
    os.makedirs(d, exist_ok=True)
    tmp = img + ".part"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=64k", tmp, "1T")
    cmds = [a for i in range(2048) for a in ("-c", f"write -P 1 {i * 512}M 4k")]
    sh("qemu-io", *cmds, tmp, stdout=subprocess.DEVNULL)
    for i in range(30):
        sh("qemu-img", "snapshot", "-c", f"s{i}", tmp)
    os.rename(tmp, img)
    return img


def toolbox_bench(top):
    """check, extract and timeline of the 2 GiB chain vs what a person runs
    on the flattened image: e2fsck -fn plus qemu-img check of each layer,
    debugfs rdump, fls -r -m. Outputs on tmpfs where there is one."""
    tmp = "/dev/shm" if os.path.isdir("/dev/shm") else WORK
    flat = os.path.join(tmp, "layerscope-bench-flat.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", top, flat], check=True)
    layers = [os.path.join(WORK, n) for n in ("base.qcow2", "l1.qcow2", "l2.qcow2", "top.qcow2")]
    script = os.path.join(WORK, "check-theirs.sh")
    with open(script, "w") as f:
        f.write(f"e2fsck -fn {flat} >/dev/null\n" + "".join(f"qemu-img check -q {l} >/dev/null\n" for l in layers))
    dest = os.path.join(tmp, "layerscope-bench-extract")
    try:
        ours = timed([BIN, "check", top], runs=3)
        theirs = timed(["sh", script], runs=3)
        row("check (2 GiB chain: 4 layers + ext4)", ours, theirs, "e2fsck -fn + 4x qemu-img check", "<= 1x")
        ours_fs = timed([BIN, "check", "--fs-only", top], runs=3)
        e2fsck = timed(["e2fsck", "-fn", flat], runs=3)
        row("check --fs-only (2 GiB chain vs flat)", ours_fs, e2fsck, "e2fsck -fn (flat raw image)", "")
        snaps = build_snapshots_image(os.path.join(WORK, "snapshots"))
        row("check --image-only (1 TiB, 30 snapshots)", timed([BIN, "check", "--image-only", snaps], runs=3),
            timed(["qemu-img", "check", snaps], runs=3), "qemu-img check", "<= 1x")

        def fresh(cmd):
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            return cmd
        # Each run extracts into an emptied directory (the removal is
        # outside the timing: timed() runs the command given).
        times_ours, times_theirs = [], []
        for _ in range(3):
            shutil.rmtree(dest, ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run([BIN, "extract", top, "/", dest], check=True, stdout=subprocess.DEVNULL)
            times_ours.append(time.perf_counter() - t0)
            fresh(None)
            t0 = time.perf_counter()
            subprocess.run(["debugfs", "-R", f"rdump / {dest}", flat], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times_theirs.append(time.perf_counter() - t0)
        shutil.rmtree(dest, ignore_errors=True)
        rss = peak_rss([BIN, "extract", top, "/", dest])
        row("extract / (~20k files, chain vs flat raw)", (statistics.median(times_ours), rss), (statistics.median(times_theirs), 0), "debugfs rdump (flat raw image)", "<= 1x (throughput >= 1x)")
        if shutil.which("fls"):
            ours = timed([BIN, "timeline", "--body", top], runs=3)
            theirs = timed(["fls", "-r", "-m", "/", flat], runs=3)
            row("timeline --body (~20k files)", ours, theirs, "fls -r -m / (flat raw image)", "<= 1x")
        find_grep_rows(top, flat, dest)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
        os.remove(flat)


def find_grep_rows(top, flat, dest):
    """find and grep over the chain's top layer vs find(1) and grep -r on a
    copy debugfs rdump extracted from the flat image (the extraction not
    timed), and vs what the Sleuth Kit and debugfs offer on the image
    itself (fls -r -p | grep for names)."""
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    subprocess.run(["debugfs", "-R", f"rdump / {dest}", flat], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    copy = os.path.join(dest, os.path.basename(dest.rstrip("/")))
    copy = copy if os.path.isdir(copy) else dest
    ours = timed([BIN, "find", top, "--name", "f*7.dat"], runs=3)
    theirs = timed(["find", copy, "-name", "f*7.dat"], runs=3)
    row("find --name (~20k files)", ours, theirs, "find -name (extracted copy)", "")
    if shutil.which("fls"):
        fls = timed(["sh", "-c", f"fls -r -p {flat} | grep -E '/f[^/]*7\\.dat$'"], runs=3)
        row("find --name (~20k files)", ours, fls, "fls -r -p | grep (flat raw)", "")
    ours = timed([BIN, "find", top, "--type", "f", "--size", "+100k"], runs=3)
    theirs = timed(["find", copy, "-type", "f", "-size", "+100k"], runs=3)
    row("find --type f --size +100k", ours, theirs, "find -type f -size (copy)", "")
    ours = timed([BIN, "find", "--all-layers", top, "--name", "f*7.dat"], runs=3)
    row("find --all-layers --name (4 layers)", ours, theirs, "find -name (one copy)", "")
    # Content search: a string that is nowhere, so every byte is read.
    pat = "layerscope-bench-absent"
    cmd = [BIN, "grep", "-l", top, pat]
    ours = timed(["sh", "-c", " ".join(cmd) + " || true"], runs=3)
    theirs = timed(["sh", "-c", f"LC_ALL=C grep -rl {pat} {copy} || true"], runs=3)
    row("grep -l (one layer, ~700 MiB of files)", ours, theirs, "LC_ALL=C grep -rl (copy)", ">= 1x throughput")
    shutil.rmtree(dest, ignore_errors=True)


def interleaved(cmds, rounds=30, warmup=3, check=True):
    """Median wall times (s) of shell-free commands run round-robin: each
    round runs every command once, so load that comes and goes on a shared
    machine falls on all of them alike (hyperfine's back-to-back batches,
    `hyperfine -N -w 3 -r 30`, let it fall on one). `warmup` rounds are
    not counted."""
    times = [[] for _ in cmds]
    for r in range(warmup + rounds):
        for i, c in enumerate(cmds):
            t0 = time.perf_counter()
            subprocess.run(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=check)
            if r >= warmup:
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def peak_rss(cmd):
    """Peak RSS (KiB) of one run, from GNU time."""
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return int(p.stderr.decode().strip().splitlines()[-1])


def fs_bench(top):
    """The ext commands through the qcow2 chain vs the e2fsprogs and Sleuth
    Kit tools on the flattened image: info + groups (two runs) and info
    --groups (one run, what dumpe2fs prints) vs dumpe2fs, ls -R vs fls -r -p;
    medians of 30 interleaved runs."""
    flat = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else WORK, "layerscope-bench-flat.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", top, flat], check=True)
    try:
        info, groups, both, dumpe2fs = [BIN, "info", top], [BIN, "groups", top], [BIN, "info", "--groups", top], ["dumpe2fs", flat]
        ls, fls = [BIN, "ls", "-R", top], ["fls", "-r", "-p", flat]
        have_fls = shutil.which("fls") is not None
        floor = [[BIN, "--version"], [shutil.which("true") or "/bin/true"]]
        # Short and long runs measured apart: a 100 ms walk just before a
        # 2 ms run leaves it colder caches than its rival had.
        medians = interleaved([info, groups, both, dumpe2fs] + floor)
        if have_fls:
            medians += interleaved([ls, fls])
        t = dict(zip(("info", "groups", "both", "dumpe2fs", "version", "true", "ls", "fls"), medians))
        rss = {"info": max(peak_rss(info), peak_rss(groups)), "both": peak_rss(both), "dumpe2fs": peak_rss(dumpe2fs)}
        row("info + groups, two runs (2 GiB chain vs flat)", (t["info"] + t["groups"], rss["info"]), (t["dumpe2fs"], rss["dumpe2fs"]), "dumpe2fs (flat raw image)", "<= 1x")
        print(f"{'':<44} (each run starts a process: layerscope --version {t['version'] * 1000:.1f} ms, true {t['true'] * 1000:.1f} ms)")
        row("info --groups, one run (2 GiB chain vs flat)", (t["both"], rss["both"]), (t["dumpe2fs"], rss["dumpe2fs"]), "dumpe2fs (flat raw image)", "<= 1x")
        if have_fls:
            row("ls -R / (~20k files, chain vs flat raw)", (t["ls"], peak_rss(ls)), (t["fls"], peak_rss(fls)), "fls -r -p (flat raw image)", "<= 0.5x, RSS < 64 MiB")
        else:
            print("(fls missing: apt-get install sleuthkit)")
    finally:
        os.remove(flat)


def build_bigdir(path):
    """One directory of 20k entries (small files, mke2fs -d) as a qcow2: the
    UI lists it while keys come in."""
    tree = path + ".tree"
    many = os.path.join(tree, "many")
    os.makedirs(many)
    for i in range(20000):
        with open(os.path.join(many, f"file{i:05d}.txt"), "wb") as f:
            f.write(b"x" * (i % 300))
    raw = path + ".raw"
    sh("mke2fs", "-q", "-t", "ext4", "-b", "4096", "-N", "30000", "-d", tree, raw, "256M")
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, path)
    os.remove(raw)
    shutil.rmtree(tree)


def time_keys(image, keys, visit_all=False, runs=RUNS, size="120x40"):
    """`render --time-keys` (the threaded worker, keys not waiting for it,
    each key's frame timed in the UI thread): the median over runs of each
    figure it prints, and the peak RSS (KiB) over runs."""
    figures, rss = [], 0
    cmd = [BIN, "render", image, "--size", size, "--time-keys", "--keys", keys] + (["--visit-all"] if visit_all else [])
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    for _ in range(runs):
        p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, check=True)
        figures.append(json.loads(p.stdout))
        rss = max(rss, int(p.stderr.decode().strip().splitlines()[-1]))
    return {k: statistics.median(f[k] for f in figures) for k in figures[0]}, rss


def tui_bench(top):
    """The UI, headless (layerscope render): the first frame with data, and
    the cost of one keystroke (a frame after 400 scroll keys, less the
    first frame, over 400); then with the worker on its thread (render
    --time-keys): keys pressed while a 20k-entry directory lists, and the
    peak RSS after opening every directory of the 2 GiB chain."""
    first = timed([BIN, "render", top, "--size", "120x40"])
    many = timed([BIN, "render", top, "--size", "120x40", "--keys", " ".join(["PageDown"] * 400)])
    per_key = (many[0] - first[0]) / 400
    print(f"{'TUI first frame with data (120x40)':<44} {first[0] * 1000:6.1f} ms (goal < 100 ms), RSS {first[1] / 1024:.1f} MiB")
    print(f"{'TUI keystroke, inline worker (PageDown)':<44} {per_key * 1000:6.2f} ms per key (the state change only: render draws the last frame), RSS after 400 pages {many[1] / 1024:.1f} MiB (goal < 64 MiB)")
    t, rss = time_keys(top, " ".join(["PageDown"] * 400))
    print(f"{'TUI keystroke to frame (PageDown, 2 GiB)':<44} median {t['median_ms']:5.2f} ms, max {t['max_ms']:5.2f} ms per key, each frame drawn, worker on its thread (goal < 16 ms), RSS {rss / 1024:.1f} MiB")
    big = os.path.join(WORK, "tui-bigdir.qcow2")
    if not os.path.exists(big):
        build_bigdir(big)
    # Open /, wait, then open /many (20k entries) and keep pressing Down.
    t, rss = time_keys(big, "BackTab Enter Wait Down Down Enter " + " ".join(["Down"] * 300))
    print(f"{'TUI key while a 20k-entry directory lists':<44} median {t['while_listing_median_ms']:5.2f} ms, max {t['while_listing_max_ms']:5.2f} ms over {t['while_listing']:.0f} keys (goal < 16 ms); all {t['keys']:.0f} keys: median {t['median_ms']:5.2f}, max {t['max_ms']:5.2f} ms; first frame {t['first_frame_ms']:.1f} ms, RSS {rss / 1024:.1f} MiB")
    t, rss = time_keys(top, "", visit_all=True, runs=3)
    print(f"{'TUI every directory opened (2 GiB chain)':<44} {t['dirs_opened']:.0f} directories, {t['tree_rows']:.0f} rows: peak RSS {rss / 1024:.1f} MiB (goal < 64 MiB)")
    # Every pane on screen at once (200x60): each key's frame draws all
    # of them.
    first = timed([BIN, "render", top, "--size", "200x60"])
    print(f"{'TUI first frame with data (200x60)':<44} {first[0] * 1000:6.1f} ms (goal < 100 ms), RSS {first[1] / 1024:.1f} MiB")
    t, rss = time_keys(top, " ".join(["PageDown"] * 400), size="200x60")
    print(f"{'TUI keystroke to frame (PageDown, 200x60)':<44} median {t['median_ms']:5.2f} ms, max {t['max_ms']:5.2f} ms per key, worker on its thread (goal < 16 ms); first frame {t['first_frame_ms']:.1f} ms, RSS {rss / 1024:.1f} MiB")
    # Keys in every pane: superblock and groups scrolled, the tree opened,
    # the hit map's modes, the chain's layers, the hex paged.
    tour = ("5 " + "Down " * 60 + "PageDown " * 5 + "6 " + "Down " * 10 + "2 Enter Down Enter Down Enter Up Up "
            + "4 m m m 1 Down Enter Up Enter 3 " + "PageDown " * 100 + "Tab " * 16)
    t, rss = time_keys(top, tour.strip(), size="200x60")
    print(f"{'TUI keys in every pane (200x60)':<44} median {t['median_ms']:5.2f} ms, max {t['max_ms']:5.2f} ms over {t['keys']:.0f} keys (goal < 16 ms), RSS {rss / 1024:.1f} MiB")


def nbd_bench(top, size):
    """The same chain over NBD (qemu-nbd -A on a unix socket)."""
    if not shutil.which("qemu-nbd") or not shutil.which("nbdcopy"):
        print("(NBD: qemu-nbd or nbdcopy missing, skipped)")
        return
    sock = os.path.join(WORK, "bench.sock")
    if os.path.exists(sock):
        os.remove(sock)
    server = subprocess.Popen(["qemu-nbd", "--read-only", "--persistent", "--shared=8", "-A", "--socket", sock, "-f", "qcow2", top])
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        uri = f"nbd+unix:///?socket={sock}"
        mib = size / (1 << 20)
        ours = timed([BIN, "read", uri], runs=3)
        one = timed(["nbdcopy", "--connections=1", uri, "null:"], runs=3)
        many = timed(["nbdcopy", uri, "null:"], runs=3)
        print(f"{'full read over NBD (unix socket)':<44} layerscope read: {mib / ours[0]:6.0f} MiB/s | nbdcopy --connections=1: {mib / one[0]:6.0f} MiB/s | nbdcopy (default): {mib / many[0]:6.0f} MiB/s")
        print(f"{'':<44} throughput ratio: {one[0] / ours[0]:.2f}x nbdcopy --connections=1 (goal >= 1.0x), {many[0] / ours[0]:.2f}x default nbdcopy")
        row("map --json over NBD", timed([BIN, "map", "--json", uri]),
            timed(["nbdinfo", "--map=qemu:allocation-depth", uri]), "nbdinfo --map=...depth", "<= 1x")
    finally:
        server.terminate()
        server.wait()


def wait_for(path_or_check, what, secs=20):
    t0 = time.time()
    while not (os.path.exists(path_or_check) if isinstance(path_or_check, str) else path_or_check()):
        if time.time() - t0 > secs:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def remote_bench(top, size):
    """Remote sources: the chain over NBD behind a 20 ms per-request delay
    (qemu-nbd -A, nbdkit's nbd plugin with the delay filter in front),
    multi-conn reads, and the chain over ssh (a throwaway sshd on
    127.0.0.1). One run each where a run takes seconds."""
    if not (shutil.which("qemu-nbd") and shutil.which("nbdkit") and shutil.which("nbdcopy")):
        print("(remote: qemu-nbd, nbdkit or nbdcopy missing, skipped)")
        return
    qsock, dsock = os.path.join(WORK, "remote-q.sock"), os.path.join(WORK, "remote-delay.sock")
    for p in (qsock, dsock):
        if os.path.exists(p):
            os.remove(p)
    q = subprocess.Popen(["qemu-nbd", "--read-only", "--persistent", "--shared=16", "-A", "--socket", qsock, "-f", "qcow2", top])
    d = None
    try:
        wait_for(qsock, "qemu-nbd")
        quri = f"nbd+unix:///?socket={qsock}"
        mib = size / (1 << 20)
        # Interleaved (each round runs all three): a run here takes a
        # third of a second, and back-to-back batches of one tool let
        # the machine's swings fall on one of them (0.77x in a batched
        # run where interleaved rounds gave 1.15x).
        ours, ours1, theirs = interleaved([[BIN, "read", quri], [BIN, "read", quri, "--connections", "1"],
                                           ["nbdcopy", quri, "null:"]], rounds=9, warmup=1)
        print(f"{'read, multi-conn (4) vs default nbdcopy':<44} layerscope read: {mib / ours:6.0f} MiB/s (--connections 1: {mib / ours1:6.0f}) | nbdcopy: {mib / theirs:6.0f} MiB/s | ratio {theirs / ours:.2f}x (goal >= 1x; interleaved medians of 9)")
        d = subprocess.Popen(["nbdkit", "-f", "-U", dsock, "--filter=delay", "nbd", f"socket={qsock}", "rdelay=20ms", "delay-extents=20ms"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(dsock, "nbdkit delay")
        duri = f"nbd+unix:///?socket={dsock}"
        copy = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else WORK, "layerscope-bench-copy.raw")
        # Interleaved rounds, medians of 5 for both: the goal is a ratio
        # (0.1x), and one run of theirs (2.5 s) against the median of
        # ours moved it by several hundredths from run to run.
        ls_cmd = [BIN, "ls", "-R", duri]
        today_cmd = ["sh", "-c", f"nbdcopy '{duri}' {copy} && fls -r -p {copy}"]
        t_ls, t_today = interleaved([ls_cmd, today_cmd], rounds=5, warmup=1)
        ls, today = (t_ls, peak_rss(ls_cmd)), (t_today, peak_rss(today_cmd))
        os.remove(copy)
        row("ls -R / over NBD, 20 ms per request", ls, today, "nbdcopy + fls -r -p the copy", "<= 0.1x")
        row("map --json over NBD, 20 ms per request", timed([BIN, "map", "--json", duri], runs=5),
            timed(["nbdinfo", "--map", duri], runs=5), "nbdinfo --map", "<= 1x")
        t, rss = time_keys(duri, "", runs=1)
        print(f"{'TUI first frame over NBD, 20 ms per request':<44} {t['first_frame_ms']:.0f} ms after the open (goal < 1 s)")
        # The whole of what the issue times: the process started, the
        # export opened, the first frame, / listed, then /many (1,002
        # entries; the second-to-last row of /) opened and listed, and
        # the exit. The worker on its thread, as in the terminal.
        many = timed([BIN, "render", duri, "--time-keys", "--keys", "BackTab Enter Wait End Up Enter Wait"], runs=5)
        print(f"{'TUI open, / and /many (1,002 entries), NBD':<44} {many[0] * 1000:.0f} ms from start to exit, RSS {many[1] / 1024:.1f} MiB (goal < 1 s)")
    finally:
        for p in (d, q):
            if p:
                p.terminate()
                p.wait()
    ssh_bench(top)


def ssh_bench(top):
    """The chain over ssh: a throwaway sshd on 127.0.0.1 with keys made
    here, reached with LAYERSCOPE_SSH_COMMAND="ssh -F CONFIG"; qemu-img
    uses qemu's ssh driver (libssh, authenticated through an ssh-agent
    holding the same key) with the chain spelled out in JSON."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or not shutil.which("ssh-agent"):
        print("(ssh: sshd or ssh-agent missing, skipped)")
        return
    import pwd
    import socket
    import tempfile
    tmp = tempfile.mkdtemp(prefix="layerscope-bench-ssh-")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    for k in ("host", "user"):
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(tmp, k))
    shutil.copy(os.path.join(tmp, "user.pub"), os.path.join(tmp, "authorized_keys"))
    with open(os.path.join(tmp, "sshd_config"), "w") as f:
        f.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp}/host\nAuthorizedKeysFile {tmp}/authorized_keys\n"
                "PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n"
                "Subsystem sftp internal-sftp\nLogLevel ERROR\n")
    with open(os.path.join(tmp, "known_hosts"), "w") as f:
        f.write(f"[127.0.0.1]:{port} " + open(os.path.join(tmp, "host.pub")).read())
    with open(os.path.join(tmp, "ssh_config"), "w") as f:
        f.write(f"Host *\n  IdentityFile {tmp}/user\n  IdentitiesOnly yes\n  UserKnownHostsFile {tmp}/known_hosts\n  BatchMode yes\n")
    if os.getuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)
    server = subprocess.Popen([sshd, "-D", "-e", "-f", os.path.join(tmp, "sshd_config")], stderr=subprocess.DEVNULL)
    agent = subprocess.check_output(["ssh-agent", "-s", "-a", os.path.join(tmp, "agent.sock")]).decode()
    agent_pid = int(agent.split("SSH_AGENT_PID=")[1].split(";")[0])
    env = dict(os.environ, LAYERSCOPE_SSH_COMMAND=f"ssh -F {tmp}/ssh_config", SSH_AUTH_SOCK=os.path.join(tmp, "agent.sock"))
    old_env = dict(os.environ)
    try:
        sh("ssh-add", "-q", os.path.join(tmp, "user"), env=env)
        os.environ.update(env)
        wait_for(lambda: subprocess.run(["ssh", "-F", f"{tmp}/ssh_config", "-p", str(port), "127.0.0.1", "true"]).returncode == 0, "sshd")
        uri = f"ssh://127.0.0.1:{port}{top}"
        names = ["top.qcow2", "l2.qcow2", "l1.qcow2", "base.qcow2"]
        # The chain for qemu-img map: the top spelled out in JSON, each
        # backing layer given only its host-key-check. qemu opens a
        # backing file from the name in its overlay's header (resolved
        # against the overlay's ssh:// URL) and parses that URL for the
        # server and path; server.* or path given as options as well fail
        # ("Option 'server.host' cannot be used with a file name"), and the
        # URL's ?host_key_check=no form cannot be a base directory.
        spec = None
        for n in reversed(names):
            file = {"driver": "ssh", "host-key-check": {"mode": "none"}}
            if n == names[0]:
                file.update({"server": {"host": "127.0.0.1", "port": str(port)}, "path": os.path.join(WORK, n)})
            layer = {"driver": "qcow2", "file": file}
            if spec is not None:
                layer["backing"] = spec
            spec = layer
        qjson = "json:" + json.dumps(spec)
        # qemu-img info opens the top layer only: the ssh driver's URL
        # form with host_key_check=no opens it (libssh reads the
        # known_hosts of the passwd entry's home, not ours). The URL form
        # cannot open a chain ("Cannot generate a base directory with
        # host_key_check set"), so map takes the JSON spelling.
        qurl = f"ssh://{pwd.getpwuid(os.getuid()).pw_name}@127.0.0.1:{port}{top}?host_key_check=no"
        try:
            theirs = timed(["qemu-img", "info", qurl], runs=3)
            # layerscope keeps its ssh connection a minute for the next
            # command (ControlMaster, as Ansible does): after the warm-up
            # run the timed runs share it. qemu-img connects anew each
            # time; so does layerscope with LAYERSCOPE_SSH_SHARE=0 (the
            # "new connection" rows).
            row("ssh:// info (superblock), shared conn.", timed([BIN, "info", uri], runs=3),
                theirs, "qemu-img info (qemu ssh driver, top only)", "<= 1x")
            os.environ["LAYERSCOPE_SSH_SHARE"] = "0"
            row("ssh:// info, new connection each run", timed([BIN, "info", uri], runs=3),
                theirs, "qemu-img info (same run as above)", "<= 1x")
            del os.environ["LAYERSCOPE_SSH_SHARE"]
            # OpenSSH (9.0+) prefers the post-quantum sntrup761x25519 key
            # exchange, whose key generation costs the ssh client ~0.2 s
            # of CPU here; libssh before 0.11 (qemu's driver) cannot
            # offer it and settles on curve25519-sha256. The same
            # exchange on both sides compares the tools, not the crypto.
            kex = dict(env, LAYERSCOPE_SSH_COMMAND=f"ssh -F {tmp}/ssh_config -o KexAlgorithms=curve25519-sha256",
                       LAYERSCOPE_SSH_SHARE="0")
            os.environ.update(kex)
            ours = timed([BIN, "info", uri], runs=3)
            # Back to env: the rows below share the connection again
            # (update alone left LAYERSCOPE_SSH_SHARE=0 from kex set, so
            # the map and "shared conn." ls -R rows connected anew).
            os.environ.update(env)
            os.environ.pop("LAYERSCOPE_SSH_SHARE", None)
            row("ssh:// info, curve25519 as libssh", ours, theirs, "qemu-img info (same run as above)", "<= 1x")
            # The floor under the rows above: the ssh client alone
            # starting the SFTP subsystem (stdin empty: it ends at once).
            bare = timed(["sh", "-c", f"ssh -F {tmp}/ssh_config -o KexAlgorithms=curve25519-sha256 -p {port} "
                          f"-s 127.0.0.1 sftp < /dev/null"], runs=3)
            print(f"{'  (ssh -s sftp alone, curve25519)':<44} {bare[0] * 1000:7.1f} ms: "
                  f"{bare[0] / theirs[0]:.2f}x qemu-img info")
        except subprocess.CalledProcessError as e:
            why = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-3:-2]
            print(f"(ssh info row skipped: qemu's ssh driver failed: {' '.join(why)})")
        try:
            row("ssh:// map --json (2 GiB chain)", timed([BIN, "map", "--json", uri], runs=3),
                timed(["qemu-img", "map", "--output=json", qjson], runs=3), "qemu-img map (qemu ssh driver)", "<= 1x")
        except subprocess.CalledProcessError as e:
            # The oracle, not layerscope: say so and go on to the next row.
            # (The last two stderr lines are /usr/bin/time's: "Command
            # exited with non-zero status" and the peak RSS; qemu's own
            # message is the line before.)
            why = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-3:-2]
            print(f"(ssh map row skipped: qemu's ssh driver failed: {' '.join(why)})")
        dest = tempfile.mkdtemp(prefix="layerscope-bench-scp-", dir="/dev/shm" if os.path.isdir("/dev/shm") else WORK)
        srcs = " ".join(f"127.0.0.1:{os.path.join(WORK, n)}" for n in names)
        copy_ls = ["sh", "-c", f"scp -q -F {tmp}/ssh_config -P {port} {srcs} {dest}/ && {BIN} ls -R {dest}/top.qcow2"]
        scp_ls = timed(copy_ls, runs=1)
        row("ssh:// ls -R / (~20k files), shared conn.", timed([BIN, "ls", "-R", uri], runs=3), scp_ls,
            "scp the chain + ls -R the copy", "<= 0.1x")
        os.environ["LAYERSCOPE_SSH_SHARE"] = "0"
        new_ls = timed([BIN, "ls", "-R", uri], runs=3)
        row("ssh:// ls -R /, new connection", new_ls, scp_ls,
            "scp the chain + ls -R the copy (same)", "<= 0.1x")
        del os.environ["LAYERSCOPE_SSH_SHARE"]
        # What OpenSSH's own start costs with the kex this row used (the
        # default, as in ~/.ssh/config-less use): the ssh client starting
        # the SFTP subsystem and ending at once. The row above is this
        # plus the walk over the link (the shared row's time).
        bare = timed(["sh", "-c", f"ssh -F {tmp}/ssh_config -p {port} -s 127.0.0.1 sftp < /dev/null"], runs=3)
        print(f"{'  (ssh -s sftp alone, default kex)':<44} {bare[0] * 1000:7.1f} ms: "
              f"{bare[0] / scp_ls[0]:.3f}x scp + ls -R; the new-connection row minus it: "
              f"{(new_ls[0] - bare[0]) * 1000:.1f} ms")
        shutil.rmtree(dest)
    finally:
        os.environ.clear()
        os.environ.update(old_env)
        server.terminate()
        server.wait()
        os.kill(agent_pid, 15)
        shutil.rmtree(tmp, ignore_errors=True)


def journal_bench(rebuild=False):
    """A live snapshot: a 2 GiB ext4 of ~20k files (base.qcow2) and an
    overlay whose journal holds 1000 committed transactions of 4 inode
    table blocks each, written with debugfs's journal_write (copies of the
    blocks as they are, so the trees stay equal), needs_recovery set.
    Rows: `journal` vs `debugfs -R logdump` on the flat raw image; `ls -R`
    replaying vs `--no-replay` (the replay's cost); `ls /` of the snapshot
    vs what a user would otherwise run (copy it out with qemu-img convert,
    e2fsck -fy the copy to replay, debugfs ls); the quick `diff` of the
    replayed layers vs `diff --full`."""
    d = os.path.join(WORK, "journal")
    base, top, flat = (os.path.join(d, n) for n in ("base.qcow2", "dirty.qcow2", "dirty.raw"))
    if rebuild or not os.path.exists(top):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        t0 = time.time()
        tree = os.path.join(d, "tree")
        build_tree(tree, files=20000, seed=7)
        raw = os.path.join(d, "base.raw")
        sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-J", "size=64", "-d", tree, raw, "2G")
        shutil.rmtree(tree)
        sh("qemu-img", "convert", "-q", "-O", "qcow2", raw, base)
        sh("cp", "--sparse=always", raw, flat)
        os.remove(raw)
        # Inode table blocks of group 0, as they are.
        out = subprocess.check_output(["dumpe2fs", flat], stderr=subprocess.DEVNULL).decode()
        first = int(out.split("Inode table at ")[1].split("-")[0])
        blocks = [first + i for i in range(4000)]
        with open(flat, "rb") as f:
            data = []
            for b in blocks:
                f.seek(b * 4096)
                data.append(f.read(4096))
        cmds = ["jo"]
        for t in range(1000):
            part = os.path.join(d, f"t{t}.bin")
            with open(part, "wb") as f:
                f.write(b"".join(data[t * 4:t * 4 + 4]))
            cmds.append(f"jw -b {','.join(str(b) for b in blocks[t * 4:t * 4 + 4])} {part}")
        cmds.append("jc")
        script = os.path.join(d, "journal.cmds")
        with open(script, "w") as f:
            f.write("\n".join(cmds) + "\n")
        sh("debugfs", "-w", "-f", script, flat, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for t in range(1000):
            os.remove(os.path.join(d, f"t{t}.bin"))
        # The overlay holds exactly the clusters that differ from the base.
        thin_overlay(flat, base, top)
        print(f"  built in {time.time() - t0:.0f}s", flush=True)
    n = subprocess.run([BIN, "journal", "--json", top], capture_output=True, check=True).stdout
    print(f"\njournal: {len(json.loads(n)['transactions'])} transactions in {top}\n")
    row("journal (1000 transactions)", timed([BIN, "journal", top], runs=3),
        timed(["debugfs", "-R", "logdump", flat], runs=3), "debugfs logdump (flat raw)", "<= 1x")
    row("ls -R, journal replayed", timed([BIN, "ls", "-R", top], runs=3),
        timed([BIN, "ls", "-R", "--no-replay", top], runs=3), "layerscope ls -R --no-replay", "<= 1.2x")
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else d
    copy = os.path.join(shm, "layerscope-bench-journal.raw")
    theirs = ["sh", "-c", f"qemu-img convert -O raw {top} {copy} && (e2fsck -fy {copy} >/dev/null 2>&1; true) "
              f"&& debugfs -R 'ls -l /' {copy} && rm -f {copy}"]
    row("ls / of the dirty snapshot", timed([BIN, "ls", "-l", top, "/"], runs=3), timed(theirs, runs=1),
        "convert + e2fsck -fy + debugfs ls", "<= 0.1x")
    row("diff of the replayed layers", timed([BIN, "diff", top], runs=3),
        timed([BIN, "diff", "--full", top], runs=1), "layerscope diff --full", "<= 0.1x")


def build_gpt_chain(d, name, size, files):
    """A GPT disk of `size` bytes: a 64 MiB FAT32 ESP and an ext4 root
    over the rest (with `files` files), as a qcow2 base and a thin overlay
    that rewrites a few files. Returns (top, root partition's offset)."""
    top = os.path.join(d, f"{name}-top.qcow2")
    root_at = 133120 * 512
    if os.path.exists(top):
        return top, root_at
    raw = os.path.join(d, f"{name}.raw")
    with open(raw, "wb") as f:
        f.truncate(size)
    script = ("label: gpt\nstart=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=ESP\n"
              "start=133120, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n")
    subprocess.run(["sfdisk", "-q", raw], input=script.encode(), check=True)
    sh("mkfs.vfat", "-F", "32", "-n", "ESP", "--offset", "2048", raw, str(65536), stdout=subprocess.DEVNULL)
    tree = os.path.join(d, f"{name}-tree")
    shutil.rmtree(tree, ignore_errors=True)
    for i in range(files):
        sub = os.path.join(tree, f"d{i % 20:02d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:05d}.txt"), "wb") as f:
            f.write(b"%d\n" % i * (i % 50 + 1))
    root_len = (size - root_at - (1 << 20)) // 4096
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "root", "-d", tree,
       "-E", f"offset={root_at},lazy_itable_init=1,lazy_journal_init=1", raw, str(root_len))
    shutil.rmtree(tree)
    base = os.path.join(d, f"{name}-base.qcow2")
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, base)
    os.remove(raw)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.basename(base), "-F", "qcow2", top)
    # In the upper half of the root, clear of its metadata at the start.
    half = (size - root_at) >> 21
    cmds = [f"write -P {i + 1} {root_at + (half + i * 7919 % (half - 1)) * (1 << 20)} 64k" for i in range(16)]
    sh("qemu-io", "-f", "qcow2", *sum((["-c", c] for c in cmds), []), top, stdout=subprocess.DEVNULL)
    return top, root_at


def first_frame_interactive(image, markers, runs=RUNS):
    """The interactive UI in a pseudo-terminal of 120x40: the time from
    start until every marker has been drawn (the first full frame), and
    until it has exited after a scripted `q` sent then. Medians."""
    import pty
    import select
    import struct
    import fcntl
    import termios
    firsts, totals = [], []
    for k in range(runs + 1):
        t0 = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(BIN, [BIN, image])
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        seen, first, deadline = b"", None, time.time() + 30
        while time.time() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if not r:
                continue
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if first is None and all(m.encode() in seen for m in markers):
                first = time.perf_counter() - t0
                os.write(fd, b"q")
        os.waitpid(pid, 0)
        total = time.perf_counter() - t0
        os.close(fd)
        if first is None:
            raise RuntimeError(f"{image}: the frame never showed {markers}")
        if k:  # the first run warms the caches
            firsts.append(first)
            totals.append(total)
    return statistics.median(firsts), statistics.median(totals)


def tui_first_frame_bench():
    """Time to the first full frame (the tree titled with the root
    partition's filesystem, the hit map's legend) of the TUI on GPT qcow2 chains: 2 GiB with a
    FAT ESP and an ext4 root, 64 GiB and 1 TiB (sparse), headless
    (`render`) and interactive in a pty with a scripted `q`, against what
    a user runs otherwise for that picture: `qemu-img info
    --backing-chain`, then (qcow2 being unreadable to sfdisk and
    dumpe2fs) `qemu-img convert` to a sparse raw file, `sfdisk -d` and
    `dumpe2fs -h` at the root partition's offset. The tools' sum is shown
    with and without the flattening."""
    d = os.path.join(WORK, "tui-first")
    os.makedirs(d, exist_ok=True)
    for name, size, files in (("gpt2g", 2 << 30, 2000), ("gpt64g", 64 << 30, 200), ("gpt1t", 1 << 40, 200)):
        top, root_at = build_gpt_chain(d, name, size, files)
        render = timed([BIN, "render", top, "--size", "120x40"])
        ff, total = first_frame_interactive(top, ["· p2 ext4", "none:"])
        flat = os.path.join(d, f"{name}-flat.raw")
        info = timed(["qemu-img", "info", "--backing-chain", top], runs=3)
        conv = timed(["qemu-img", "convert", "-O", "raw", top, flat], runs=3)
        sfd = timed(["sfdisk", "-d", flat], runs=3)
        dump = timed(["dumpe2fs", "-h", f"{flat}?offset={root_at}"], runs=3)
        os.remove(flat)
        tools = info[0] + sfd[0] + dump[0]
        label = f"TUI first frame, GPT chain {size >> 30} GiB"
        print(f"{label:<44} render {render[0] * 1000:7.1f} ms, interactive {ff * 1000:7.1f} ms (q: exit at {total * 1000:.1f} ms), RSS {render[1] / 1024:.1f} MiB")
        print(f"{'':<44} vs qemu-img info --backing-chain + sfdisk -d + dumpe2fs -h: {tools * 1000:7.1f} ms "
              f"(ratio {ff / tools:5.2f}x); with qemu-img convert to raw first: {(tools + conv[0]) * 1000:8.1f} ms (ratio {ff / (tools + conv[0]):5.3f}x)")


if __name__ == "__main__":
    sys.exit(main())
