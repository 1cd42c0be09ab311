"""The broker address both sides are configured with: `mqtt://host:port` or `mqtts://…`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from protocol.errors import ProtocolError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


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
