"""The broker address both sides are configured with: `mqtt://host:port` or `mqtts://…`."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from protocol.errors import ProtocolError

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def set_tcp_nodelay(_client: object, _userdata: object, sock: object) -> None:
    """Turn Nagle's algorithm off on a just-opened broker socket (paho's `on_socket_open`).

    Why: with QoS 1 a request and its answer are small packets each waiting for the
    peer's delayed ACK (~40 ms per hop) while Nagle is on. A socket that is not TCP
    (a Unix socket, a websocket wrapper) is left as it is.
    """
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is None:
        return
    try:
        setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # not a TCP socket: nothing to turn off
        logger.debug("TCP_NODELAY not set on %r: %s", sock, exc)


@dataclass(frozen=True)
class BrokerAddress:
    """Where the MQTT broker listens; `tls` for `mqtts://`."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse a broker URL; ProtocolError("broker_url", …) says what is wrong with it."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ProtocolError("broker_url", f"not a valid URL ({exc})") from None
        if parts.scheme not in DEFAULT_PORTS:
            raise ProtocolError("broker_url", "must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ProtocolError("broker_url", "has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ProtocolError("broker_url", "must be only mqtt://host:port")
        if parts.username or parts.password:
            raise ProtocolError("broker_url", "put credentials in username/password, not the URL")
        return cls(
            host=parts.hostname,
            port=port if port is not None else DEFAULT_PORTS[parts.scheme],
            tls=parts.scheme == "mqtts",
        )
