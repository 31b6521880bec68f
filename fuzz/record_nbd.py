#!/usr/bin/env python3
"""Records what a real NBD server says, for the `nbd` fuzz target's seeds.

    record_nbd.py LISTEN_SOCKET SERVER_SOCKET OUT_PREFIX

Listens on LISTEN_SOCKET; each client connection is relayed to the
server's unix socket, and everything the server sends on it is written
to OUT_PREFIX-N (N counts connections). The client's bytes are relayed
but not kept: the fuzz target replays only the server's side. Stops after
30 s without a connection."""
import os
import socket
import sys
import threading


def pump(src, dst, keep=None):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            if keep is not None:
                keep.append(b)
            dst.sendall(b)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main():
    listen, server, prefix = sys.argv[1:4]
    if os.path.exists(listen):
        os.remove(listen)
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(listen)
    ls.listen(4)
    ls.settimeout(30)
    n = 0
    while True:
        try:
            c, _ = ls.accept()
        except socket.timeout:
            break
        s = socket.socket(socket.AF_UNIX)
        s.connect(server)
        said = []
        up = threading.Thread(target=pump, args=(c, s))
        up.start()
        pump(s, c, said)
        up.join()
        c.close()
        s.close()
        with open(f"{prefix}-{n}", "wb") as f:
            f.write(b"".join(said))
        n += 1


if __name__ == "__main__":
    main()
