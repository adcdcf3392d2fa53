"""The gateway's listening sockets: several on one port, so a storm of new connections is
accepted as fast as it comes.

uvicorn serves on uvloop, and uvloop's libuv accepts one connection per turn of the event loop
on each listening socket (libuv 1.45 stopped accepting in a loop). A loaded gateway turns its
loop a few hundred times a second, so a burst of new connections waits in the kernel's accept
queue: on the bench machine at twice the saturating load, 800 clients connecting at once sat
there for up to 2 s, and their requests (refusals included) waited as long. With `count`
sockets bound to the same address (`SO_REUSEPORT`: the kernel spreads new connections over
them), each turn accepts up to `count`; measured on that storm, no request waited 0.5 s.
asyncio's own loop accepts in a loop, but costs the gateway about 50 µs more CPU per request.
"""

from __future__ import annotations

import socket

__all__ = ["ACCEPT_SOCKETS", "listening_sockets"]

ACCEPT_SOCKETS = 16


def listening_sockets(host: str, port: int, count: int = ACCEPT_SOCKETS) -> list[socket.socket]:
    """`count` TCP sockets bound to `host:port` (the port the first one gets, when 0), not yet
    listening (the server calls `listen` with its backlog). One socket where the platform has no
    `SO_REUSEPORT`."""
    if not hasattr(socket, "SO_REUSEPORT"):
        count = 1
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if count > 1:
        # Sockets that all set SO_REUSEPORT share a port: a second gateway started on the port
        # of a running one (same user) would bind too and take half its connections. A plain
        # bind first fails on a port in use, as it would without the option.
        with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # the others join the port the first one got
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
