#!/usr/bin/env python3
"""Writes an image in the fuzz targets' sparse form (src/fuzzing/sparse.rs):
its non-zero 512-byte sectors only, so that a volume of a few MiB of zeros
with a little metadata is a seed of a few KiB.

    python3 sparse.py IMAGE OUT
"""
import struct
import sys

SECTOR = 512
MAX_PIECE_SECTORS = 127  # 65,024 bytes, under the u16 length


def encode(data: bytes) -> bytes:
    if len(data) % SECTOR:
        data += bytes(SECTOR - len(data) % SECTOR)
    sectors = len(data) // SECTOR
    out = bytearray(b"LSFZSPRS" + struct.pack("<I", sectors))
    n = 0
    pieces = 0
    while n < sectors:
        if not any(data[n * SECTOR:(n + 1) * SECTOR]):
            n += 1
            continue
        start = n
        while (n < sectors and n - start < MAX_PIECE_SECTORS
               and any(data[n * SECTOR:(n + 1) * SECTOR])):
            n += 1
        piece = data[start * SECTOR:n * SECTOR].rstrip(b"\0")
        out += struct.pack("<IH", start, len(piece)) + piece
        pieces += 1
    if pieces > 4096:
        sys.exit(f"{pieces} pieces: the fuzz targets read the first 4096 only")
    return bytes(out)


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    with open(sys.argv[2], "wb") as f:
        f.write(encode(data))


if __name__ == "__main__":
    main()
