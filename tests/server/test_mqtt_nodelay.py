"""The server's broker connection sends small packets at once (Nagle off)."""

from __future__ import annotations

import socket

from server.adapters.mqtt import ServerMqttLink
from tests.fixtures.mosquitto import MosquittoServer


def test_server_link_socket_has_tcp_nodelay(mosquitto: MosquittoServer) -> None:
    link = ServerMqttLink(
        mosquitto.url, client_id="nodelay-test", subscriptions=[], on_message=lambda t, p: None
    )
    link.start(wait=10)
    try:
        assert link.connected
        sock = link._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        link.stop()
