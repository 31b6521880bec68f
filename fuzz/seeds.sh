#!/usr/bin/env bash
# Builds the fuzzers' seed corpus with the real tools: small images of each
# format (qcow2 with internal snapshots and dirty bitmaps, VMDK, VHD,
# VHDX, VDI), disks with MBR, GPT and LVM, and ext2/3/4 (with a journal
# holding transactions to replay, htree and inline directories, xattrs),
# XFS and FAT volumes, so that libFuzzer starts from structures the tools
# write. Volumes that are mostly zeros enter in the sparse form of
# src/fuzzing/sparse.rs (sparse.py), a few KiB each. The corpus is not
# committed (fuzz/corpus is ignored); what is committed is the distilled
# set in fuzz/regressions/ (see ../README.md), which
# tests/it/fuzz_corpus.rs replays.
#
#   bash fuzz/seeds.sh && cargo +nightly fuzz run image -- -max_len=262144
#   SEEDS_OUT=/tmp/seeds bash fuzz/seeds.sh     # elsewhere than corpus/
set -euo pipefail
export LVM_SUPPRESS_FD_WARNINGS=1
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=${SEEDS_OUT:-corpus}
mkdir -p "$out/image" "$out/disk" "$out/filesystem" "$out/ext" "$out/xfs" "$out/fat" "$out/nbd"
sparse() { python3 sparse.py "$1" "$2"; }
src=$work/src
mkdir -p "$src/dir/sub"
printf 'hello\n' > "$src/dir/hello.txt"
head -c 20000 /dev/urandom > "$src/dir/sub/blob"
ln -s dir/hello.txt "$src/link"

# Filesystems (raw volumes), each as small as its mkfs allows.
truncate -s 256K "$work/ext2.raw"; mke2fs -q -t ext2 -b 1024 -d "$src" "$work/ext2.raw"
truncate -s 512K "$work/ext4.raw"; mke2fs -q -t ext4 -b 1024 -O ^has_journal -d "$src" "$work/ext4.raw"
# A journal of 1024 blocks needs ~2.5 MiB; debugfs writes transactions
# (data blocks, a revoke) and leaves the filesystem needing recovery.
truncate -s 2500K "$work/ext4j.raw"; mke2fs -q -t ext4 -b 1024 -J size=1 -d "$src" "$work/ext4j.raw"
head -c 2048 /dev/urandom > "$work/blk"
printf 'jo\njw -b 300,301 %s\njw -r 302\njc\njo -c\njw -b 310 %s\njc\njo\njw -b 320 %s\n' \
  "$work/blk" "$work/blk" "$work/blk" | debugfs -w -f - "$work/ext4j.raw" >/dev/null 2>&1
# htree (e2fsck -D indexes the directory of 300 names), inline data,
# xattrs in the inode and in a block.
mkdir -p "$work/src2/many" "$work/src2/tiny"
for i in $(seq 300); do printf 'x' > "$work/src2/many/file-with-a-long-name-$i"; done
printf 'inline' > "$work/src2/tiny/a"
truncate -s 2M "$work/ext4h.raw"
mke2fs -q -t ext4 -b 1024 -I 256 -N 512 -O ^has_journal,inline_data -d "$work/src2" "$work/ext4h.raw"
e2fsck -fyD "$work/ext4h.raw" >/dev/null 2>&1 || true
printf 'ea_set /tiny/a user.short v\nea_set /tiny user.long %s\n' "$(printf 'v%.0s' $(seq 300))" |
  debugfs -w -f - "$work/ext4h.raw" >/dev/null 2>&1
truncate -s 20M "$work/fat16.raw"; mkfs.vfat -F 16 "$work/fat16.raw" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -i "$work/fat16.raw" "$src/dir" "$work/src2/tiny" ::/
truncate -s 256K "$work/fat12.raw"; mkfs.vfat -F 12 "$work/fat12.raw" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -i "$work/fat12.raw" "$src/dir" ::/
truncate -s 40M "$work/fat32.raw"; mkfs.vfat -F 32 "$work/fat32.raw" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -i "$work/fat32.raw" "$src/dir" ::/
printf '/dev/null\n0 0\nd--755 0 0\nhello.txt ---644 0 0 %s\nsub d--755 0 0\nblob ---644 0 0 %s\n$\n$\n' \
  "$src/dir/hello.txt" "$src/dir/sub/blob" > "$work/proto"
truncate -s 300M "$work/xfs.raw"; mkfs.xfs -q -f -p "$work/proto" "$work/xfs.raw"
for f in ext2 ext4 ext4j ext4h fat12 fat16 fat32 xfs; do sparse "$work/$f.raw" "$out/filesystem/$f"; done
# The same volumes for the one-kind targets (ext, xfs, fat).
for f in ext2 ext4 ext4j ext4h; do cp "$out/filesystem/$f" "$out/ext/"; done
cp "$out/filesystem/xfs" "$out/xfs/"
for f in fat12 fat16 fat32; do cp "$out/filesystem/$f" "$out/fat/"; done

# Disks: MBR with a logical partition, GPT, LVM.
truncate -s 1M "$work/mbr.raw"
printf 'label: dos\n64,512,83\n600,,5\n640,,83\n' | sfdisk -q "$work/mbr.raw"
dd if="$work/ext2.raw" of="$work/mbr.raw" bs=512 seek=64 conv=notrunc status=none
sparse "$work/mbr.raw" "$out/disk/mbr"
truncate -s 1M "$work/gpt.raw"
printf 'label: gpt\nfirst-lba: 34\n34,512,L\n600,,U\n' | sfdisk -q "$work/gpt.raw"
dd if="$work/fat12.raw" of="$work/gpt.raw" bs=512 seek=600 conv=notrunc status=none count=400
sparse "$work/gpt.raw" "$out/disk/gpt"
truncate -s 16M "$work/lvm.raw"
lvm_cfg='devices { scan_lvs = 0 } global { activation = 0 }'
lo=$(losetup -f --show "$work/lvm.raw" 2>/dev/null || true)
if [ -n "$lo" ]; then
  pvcreate -q --config "$lvm_cfg" "$lo" >/dev/null
  vgcreate -q --config "$lvm_cfg" -s 1M fz "$lo" >/dev/null
  lvcreate -q --config "$lvm_cfg" -an -Zn -L 4M -n a fz >/dev/null
  lvcreate -q --config "$lvm_cfg" -an -Zn -L 4M -n b fz >/dev/null
  vgremove -q -f --config "$lvm_cfg" fz >/dev/null 2>&1 || true
  losetup -d "$lo"
  # LV a starts at 1 MiB (the first extent): an ext2 in it.
  dd if="$work/ext2.raw" of="$work/lvm.raw" bs=1M seek=1 conv=notrunc status=none
  sparse "$work/lvm.raw" "$out/disk/lvm"
fi

# Image formats, each of a small disk.
# (VHDX is left out: its smallest file is 4 MiB of mostly zeros.)
for fmt in qcow2 vmdk vpc vdi; do
  qemu-img convert -q -O $fmt "$work/mbr.raw" "$work/mbr.$fmt"
  sparse "$work/mbr.$fmt" "$out/image/mbr.$fmt"
done
qemu-img convert -q -O vhdx "$work/mbr.raw" "$work/mbr.vhdx"
sparse "$work/mbr.vhdx" "$out/image/mbr.vhdx"
# qcow2 with internal snapshots and dirty bitmaps with dirty clusters.
q=$work/snap.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096 "$q" 1M
qemu-img bitmap --add "$q" b1
qemu-io -c "write -P 0x55 0 8k" -c "write 512k 4k" "$q" >/dev/null
qemu-img snapshot -c s1 "$q"
qemu-io -c "write -P 0x66 0 4k" "$q" >/dev/null
qemu-img snapshot -c "two words" "$q"
qemu-img bitmap --add -g 64k "$q" b2
qemu-io -c "write 256k 4k" "$q" >/dev/null
cp "$q" "$out/image/snapshots-bitmaps.qcow2"
qemu-img convert -q -c -O qcow2 -o cluster_size=4096 "$work/xfs.raw" "$out/image/xfs.qcow2"
qemu-img convert -q -c -O qcow2 -o cluster_size=512 "$work/ext4j.raw" "$out/image/ext4j-512.qcow2"
qemu-img convert -q -O vmdk -o subformat=streamOptimized "$work/gpt.raw" "$out/image/gpt-stream.vmdk"
qemu-img create -q -f qcow2 -u -b base -F qcow2 "$out/image/overlay.qcow2" 4M
# NBD: what qemu-nbd and nbdkit say to the client in whole sessions
# (handshake, block status, reads), recorded through a relay.
bin=${LAYERSCOPE:-../target/release/layerscope}
if [ -x "$bin" ]; then
  qemu-img convert -q -O qcow2 "$work/mbr.raw" "$work/mbr.qcow2"
  qemu-nbd -r -t -k "$work/qnbd.sock" -x disk -f qcow2 "$work/mbr.qcow2" &
  qpid=$!
  nbdkit -U "$work/kit.sock" -e disk memory 1M &
  kpid=$!
  for _ in $(seq 50); do [ -S "$work/qnbd.sock" ] && [ -S "$work/kit.sock" ] && break; sleep 0.2; done
  for server in qnbd kit; do
    python3 record_nbd.py "$work/relay.sock" "$work/$server.sock" "$out/nbd/$server" &
    rpid=$!
    for _ in $(seq 50); do [ -S "$work/relay.sock" ] && break; sleep 0.2; done
    uri="nbd+unix:///disk?socket=$work/relay.sock"
    timeout 20 "$bin" map --json "$uri" >/dev/null 2>&1 || true
    timeout 20 "$bin" read --offset 512 --length 4096 "$uri" >/dev/null 2>&1 || true
    timeout 20 "$bin" info "$uri" >/dev/null 2>&1 || true
    sleep 0.5
    kill $rpid 2>/dev/null || true
    wait $rpid 2>/dev/null || true
    rm -f "$work/relay.sock"
  done
  kill $qpid $kpid 2>/dev/null || true
  wait 2>/dev/null || true
else
  echo "no $bin: build it (cargo build --release) for the nbd seeds" >&2
fi
ls -l "$out"/*/ | awk '{s+=$5} END {print "seed corpus:", NR, "entries,", s, "bytes"}'
