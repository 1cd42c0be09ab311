"""The broker socket option both sides set through paho's `on_socket_open`."""

from __future__ import annotations

import socket

from protocol import set_tcp_nodelay


def test_set_tcp_nodelay_turns_nagle_off_on_a_tcp_socket() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        set_tcp_nodelay(None, None, client)
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_set_tcp_nodelay_leaves_a_unix_socket_alone() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        set_tcp_nodelay(None, None, left)  # no TCP option on it: nothing raised
        left.sendall(b"x")
        assert right.recv(1) == b"x"
