#!/usr/bin/env python3
"""A recursive listing of an XFS image with xfs_db alone, what one runs
without layerscope: `xfs_db -r -c 'ls DIR' ...`, one xfs_db process per
level of the tree (all directories of a level in one run), printing every
entry as `path inode type`.

    python3 bench/xfs_db_ls.py IMAGE
"""
import subprocess
import sys


def main(image):
    level = ["/"]
    out = sys.stdout
    while level:
        cmds = []
        for d in level:
            cmds += ["-c", f"ls {d}"]
        text = subprocess.run(["xfs_db", "-r"] + cmds + [image], capture_output=True, check=True).stdout
        nxt, current = [], None
        for line in text.decode("utf-8", "surrogateescape").splitlines():
            if line.endswith(":") and not line[:1].isdigit():
                current = line[:-1]
                continue
            w = line.split(None, 5)
            if len(w) < 6 or current is None:
                continue
            # offset ino type hash namelen name (good)
            name = w[5][: int(w[4])]
            if name in (".", ".."):
                continue
            path = current.rstrip("/") + "/" + name
            out.write(f"{path} {w[1]} {w[2]}\n")
            if w[2] == "directory":
                nxt.append(path)
        level = nxt


if __name__ == "__main__":
    main(sys.argv[1])
