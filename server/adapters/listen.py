"""The HTTP listening socket, bound before anything else starts."""

from __future__ import annotations

import errno
import socket


class PortTakenError(OSError):
    """The HTTP port is in use or cannot be bound; the message says what to do."""


def bind_http(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (for uvicorn), or PortTakenError at once, before
    a broker, a server or controllers start and before anything says "running"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortTakenError(
                f"port {port} on {host} is already in use: stop what uses it or pick another "
                "port (--port, or FABLAB_HTTP_PORT)"
            ) from None
        raise PortTakenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock
