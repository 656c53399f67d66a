"""``python tcp_pipe.py HOST PORT``: stdin → a TCP connection → stdout (an ssh ``ProxyCommand``).

Ray's cluster launcher has no SSH port option, only ``auth.ssh_proxy_command``; this is
the netcat it would call, so a test reaches its own sshd on a free port.
"""

from __future__ import annotations

import os
import socket
import sys
import threading


def main(host: str, port: int) -> None:
    sock = socket.create_connection((host, port))

    def upstream() -> None:
        while chunk := os.read(0, 65536):
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    out = sys.stdout.buffer
    while chunk := sock.recv(65536):
        out.write(chunk)
        out.flush()


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]))
    except (OSError, KeyboardInterrupt):
        sys.exit(1)
