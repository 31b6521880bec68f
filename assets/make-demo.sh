#!/usr/bin/env bash
# Regenerates the demo chain embedded in the layerscope binary:
#
#   assets/demo/base.qcow2    ext4, 16 MiB, 64 KiB clusters (mke2fs -d)
#   assets/demo/update.qcow2  overlay of base.qcow2, clusters compressed (zlib)
#   assets/demo/top.qcow2     overlay of update.qcow2, plain clusters + one zero cluster
#
# What each overlay does to the filesystem:
#   update: adds /srv/www/index.html, /srv/www/logo.bin (200 KB) and
#           /srv/www/app.js (150 KB), changes
#           /etc/hostname (demo-base -> demo-update) and /etc/motd,
#           deletes /tmp/scratch.txt, makes the directory /var/log/app.
#   top:    changes /etc/hostname (-> demo-top), appends a line to
#           /var/log/app/... (adds /var/log/app/app.log), deletes
#           /srv/www/logo.bin, adds /home/user/notes.txt; and writes one
#           zero cluster over free space near the end of the disk (a qcow2
#           zero cluster: the layer holds "reads as zeros").
#
# Overlays are thin: each is created empty over its backing file
# (qemu-img create -b NAME -F qcow2, a relative name), the flat image is
# edited with debugfs -w, the flat before and after are compared per 64 KiB
# cluster, and only the clusters that differ are written, in one qemu-io run
# (write -c -s / write -s, one file per cluster). qemu-io runs the writes in
# order, so the output is the same on every run (rebase -c is not: its
# compressed clusters land in completion order). Times are pinned
# (E2FSPROGS_FAKE_TIME, touch, and the ctimes mke2fs -d copies), the UUID
# and hash seed fixed: the same e2fsprogs and qemu give the same bytes, which
# tests/it/demo.rs checks.
#
# Usage: assets/make-demo.sh [OUTDIR]   (default: assets/demo)
# Needs: mke2fs, debugfs (e2fsprogs), qemu-img, qemu-io (qemu-utils), python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:-$here/demo}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

export E2FSPROGS_FAKE_TIME=1700000000 SOURCE_DATE_EPOCH=1700000000
stamp=202311142213.20

tree=$work/tree
mkdir -p "$tree"/{etc,srv,tmp,var/log,home/user,usr/share/doc/layerscope,bin}
echo demo-base > "$tree/etc/hostname"
printf 'Welcome to the layerscope demo disk.\nThis is the base image.\n' > "$tree/etc/motd"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$tree/etc/hosts"
for i in $(seq 1 24); do printf 'user%02d:x:%d:%d::/home/user%02d:/bin/sh\n' "$i" $((1000 + i)) $((1000 + i)) "$i"; done > "$tree/etc/passwd"
printf 'scratch data\n' > "$tree/tmp/scratch.txt"
for i in $(seq 1 200); do echo "line $i of the layerscope demo README: layers, clusters, inodes."; done > "$tree/usr/share/doc/layerscope/README"
# A small "binary": bytes of every class (NUL, ASCII, whitespace, high).
python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 64)' > "$tree/bin/tool"
ln -s ../usr/share/doc/layerscope/README "$tree/home/user/README.link"
find "$tree" -exec touch -h -t "$stamp" {} +

raw=$work/base.raw
mke2fs -q -t ext4 -b 4096 -L demo -U 5c0a7e5c-0a7e-4c0a-8e5c-0a7e5c0a7e5c \
    -E hash_seed=1a2b3c4d-1a2b-3c4d-1a2b-3c4d1a2b3c4d,root_owner=0:0 -d "$tree" "$raw" 16M
# mke2fs -d copies each file's ctime, which touch cannot set: pin them (the
# root, lost+found at 11, then one inode per entry of the tree).
entries=$(find "$tree" | wc -l)
for ino in 2 $(seq 11 $((10 + entries))); do echo "sif <$ino> ctime $stamp"; done |
    debugfs -w -f - "$raw" >/dev/null 2>&1
mkdir -p "$out"
rm -f "$out"/*.qcow2
qemu-img convert -O qcow2 -o cluster_size=65536 "$raw" "$out/base.qcow2"

# thin OVERLAY BACKING OLD NEW [WRITE-FLAGS] [EXTRA-QEMU-IO-COMMAND...]:
# create OVERLAY over BACKING (its name as the header keeps it, relative to
# OVERLAY's directory), then write into it only the 64 KiB clusters where the
# flat image NEW differs from OLD (the flat contents of BACKING), with
# `write WRITE-FLAGS -s CLUSTER-FILE OFFSET 65536`, all in one qemu-io run.
thin() {
    local overlay=$1 backing=$2 old=$3 new=$4 flags=${5:-}
    shift $(($# < 5 ? $# : 5))
    (cd "$(dirname "$overlay")" &&
        qemu-img create -q -f qcow2 -o cluster_size=65536 -b "$backing" -F qcow2 "$(basename "$overlay")")
    local pieces=$work/pieces.$(basename "$overlay")
    mkdir -p "$pieces"
    local cmds=()
    for idx in $(python3 - "$old" "$new" <<'PY'
import sys
cs = 65536
with open(sys.argv[1], 'rb') as a, open(sys.argv[2], 'rb') as b:
    i = 0
    while True:
        x, y = a.read(cs), b.read(cs)
        if not x and not y:
            break
        if x != y:
            print(i)
        i += 1
PY
    ); do
        dd if="$new" of="$pieces/$idx" bs=65536 skip="$idx" count=1 status=none
        cmds+=(-c "write -q $flags -s $pieces/$idx $((idx * 65536)) 65536")
    done
    for extra in "$@"; do cmds+=(-c "$extra"); done
    # (qemu-io without -c would read commands from stdin)
    [ "${#cmds[@]}" -eq 0 ] || qemu-io -f qcow2 "${cmds[@]}" "$overlay"
}

dfs() { debugfs -w -f - "$1" >/dev/null 2>&1; }

flat1=$work/update.raw
cp --sparse=always "$raw" "$flat1"
printf 'demo-update\n' > "$work/hostname1"
printf 'Welcome to the layerscope demo disk.\nUpdated by the update layer.\n' > "$work/motd1"
printf '<html><body><h1>served from the update layer</h1></body></html>\n' > "$work/index.html"
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 7 + i // 251) % 256 for i in range(200000)))' > "$work/logo.bin"
for i in $(seq 1 3000); do echo "function step$i() { return $i * 2; }"; done | head -c 150000 > "$work/app.js"
dfs "$flat1" <<CMDS
rm /etc/hostname
write $work/hostname1 /etc/hostname
rm /etc/motd
write $work/motd1 /etc/motd
rm /tmp/scratch.txt
mkdir /srv/www
write $work/index.html /srv/www/index.html
write $work/logo.bin /srv/www/logo.bin
write $work/app.js /srv/www/app.js
mkdir /var/log/app
CMDS
thin "$out/update.qcow2" base.qcow2 "$raw" "$flat1" -c

flat2=$work/top.raw
cp --sparse=always "$flat1" "$flat2"
printf 'demo-top\n' > "$work/hostname2"
printf 'app started\napp ready\n' > "$work/app.log"
printf 'notes written in the top layer\n' > "$work/notes.txt"
dfs "$flat2" <<CMDS
rm /etc/hostname
write $work/hostname2 /etc/hostname
write $work/app.log /var/log/app/app.log
rm /srv/www/logo.bin
write $work/notes.txt /home/user/notes.txt
CMDS
# One zero cluster over free space near the end of the disk (checked free).
zero_at=$((15 * 1024 * 1024))
if debugfs -R "testb $((zero_at / 4096)) 16" "$flat2" 2>/dev/null | grep "marked in use" >/dev/null; then
    echo "make-demo: blocks at $zero_at are in use; pick another zero cluster" >&2
    exit 1
fi
thin "$out/top.qcow2" update.qcow2 "$flat1" "$flat2" "" "write -q -z $zero_at 64k"

# The tools that made these bytes (tests/it/demo.rs compares bytes only
# when its machine has the same ones).
# (sed, not head: head would stop reading, and under pipefail the writer's
# SIGPIPE would fail the script now and then.)
{ qemu-img --version | sed -n 1p; mke2fs -V 2>&1 | sed -n 1p; } > "$out/TOOLS"

ls -l "$out"
qemu-img info --backing-chain "$out/top.qcow2" | grep -E '^(image|backing file):'
