"""The controller's broker connection sends small packets at once (Nagle off)."""

from __future__ import annotations

import socket

from firmware_pi.link import MqttLink
from protocol import BrokerAddress
from tests.fixtures.mosquitto import MosquittoServer

TIMEOUT = 10.0


def test_pi_link_socket_has_tcp_nodelay(mosquitto: MosquittoServer) -> None:
    link = MqttLink(
        broker=BrokerAddress.parse(mosquitto.url), controller_id="laser", site="lab",
        machine="laser", firmware_version="test", boot_id="boot",
    )  # fmt: skip
    link.start()
    try:
        assert link._connected.wait(TIMEOUT)
        sock = link._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        link.stop()
