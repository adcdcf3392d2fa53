"""The gateway's listening sockets: several on one port, each taking connections."""

from __future__ import annotations

import socket

import pytest

from gateway.listen import listening_sockets


def test_sockets_share_the_port_the_first_one_got():
    sockets = listening_sockets("127.0.0.1", 0, count=4)
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(sockets) == 4 and len(ports) == 1 and ports != {0}
        for s in sockets:
            s.listen(16)
        (port,) = ports
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        accepted = 0
        for s in sockets:  # the kernel spreads the connections over the sockets
            s.setblocking(False)
            while True:
                try:
                    conn, _ = s.accept()
                except BlockingIOError:
                    break
                conn.close()
                accepted += 1
        assert accepted == 32
        for c in clients:
            c.close()
    finally:
        for s in sockets:
            s.close()


def test_a_port_another_program_holds_is_an_error_and_leaves_nothing_open():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        with pytest.raises(OSError):
            listening_sockets("127.0.0.1", holder.getsockname()[1], count=4)
    finally:
        holder.close()


def test_a_port_a_running_gateway_serves_is_an_error():
    first = listening_sockets("127.0.0.1", 0, count=2)
    try:
        for s in first:
            s.listen(4)
        with pytest.raises(OSError):  # bound with SO_REUSEPORT too, it would share the port
            listening_sockets("127.0.0.1", first[0].getsockname()[1], count=2)
    finally:
        for s in first:
            s.close()


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        sockets = listening_sockets("::1", 0, count=2)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert all(s.family == socket.AF_INET6 for s in sockets)
    for s in sockets:
        s.close()
