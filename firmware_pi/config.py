"""The controller's configuration: one flat TOML file, validated into a frozen dataclass."""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from firmware_pi import __version__
from protocol import ProtocolError, check_segment

MIN_KEY_BYTES = 32
READER_KINDS = ("simulated",)
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class ConfigError(ValueError):
    """A configuration that cannot be used; `key` names the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config {key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class BrokerAddress:
    """Where the MQTT broker listens, parsed from `mqtt://host:port` or `mqtts://host:port`."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError("broker_url", f"not a valid URL ({exc})") from None
        if parts.scheme not in _DEFAULT_PORTS:
            raise ConfigError("broker_url", "must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ConfigError("broker_url", "has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError("broker_url", "must be only mqtt://host:port")
        if parts.username or parts.password:
            raise ConfigError("broker_url", "put credentials in username/password, not the URL")
        return cls(
            host=parts.hostname,
            port=port if port is not None else _DEFAULT_PORTS[parts.scheme],
            tls=parts.scheme == "mqtts",
        )


@dataclass(frozen=True)
class ControllerConfig:
    """Everything one controller needs to know about itself, its machine and its broker."""

    controller_id: str
    site: str
    machine: str
    broker_url: str
    key_hex: str = field(repr=False)
    data_dir: Path
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    reader: str = "simulated"
    relay_pin: int | str = 17
    relay_active_high: bool = True
    green_led_pin: int | str = 27
    red_led_pin: int | str = 22
    firmware_version: str = __version__

    def __post_init__(self) -> None:
        for key in ("controller_id", "site", "machine"):
            try:
                check_segment(getattr(self, key), key)
            except ProtocolError as exc:
                raise ConfigError(key, exc.message) from None
        BrokerAddress.parse(self.broker_url)
        _decode_key(self.key_hex)
        if self.reader not in READER_KINDS:
            raise ConfigError("reader", f"must be one of: {', '.join(READER_KINDS)}")
        pins = {"relay_pin": self.relay_pin, "green_led_pin": self.green_led_pin,
                "red_led_pin": self.red_led_pin}
        seen: dict[int | str, str] = {}
        for key, pin in pins.items():
            if pin in seen:
                raise ConfigError(key, f"uses the same pin as {seen[pin]}")
            seen[pin] = key
        if not self.firmware_version:
            raise ConfigError("firmware_version", "must not be empty")

    @property
    def key(self) -> bytes:
        """The per-controller HMAC key that signs snapshots and hides badge UIDs."""
        return _decode_key(self.key_hex)

    @property
    def broker(self) -> BrokerAddress:
        return BrokerAddress.parse(self.broker_url)

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.sqlite3"

    @property
    def snapshot_path(self) -> Path:
        return self.data_dir / "snapshot.json"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ControllerConfig:
        """Build from a mapping of field names; ConfigError names the first bad key."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(unknown[0], "unknown setting")
        values: dict[str, Any] = {}
        for name in known:
            if name not in d:
                if known[name].default is MISSING:
                    raise ConfigError(name, "is required")
                continue
            values[name] = _check_type(name, d[name])
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> ControllerConfig:
        """Read a TOML file; a relative `data_dir` is taken relative to the file's folder."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                d = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError("file", f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("file", f"{path} is not valid TOML: {exc}") from None
        if isinstance(d.get("data_dir"), str):
            data_dir = Path(d["data_dir"]).expanduser()
            d["data_dir"] = data_dir if data_dir.is_absolute() else path.parent / data_dir
        return cls.from_dict(d)


def _decode_key(key_hex: str) -> bytes:
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise ConfigError("key_hex", "must be hexadecimal") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError("key_hex", f"must decode to at least {MIN_KEY_BYTES} bytes")
    return key


def _check_type(name: str, value: Any) -> Any:
    """Check one TOML value's type for its field (TOML gives str, int, bool, ...)."""
    if name in ("relay_pin", "green_led_pin", "red_led_pin"):
        # gpiozero accepts a BCM number or a name such as "GPIO17" or "BOARD11".
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(name, "must be a GPIO number or a pin name")
        return value
    if name == "relay_active_high":
        if not isinstance(value, bool):
            raise ConfigError(name, "must be true or false")
        return value
    if name == "data_dir":
        if not isinstance(value, str | Path) or not str(value):
            raise ConfigError(name, "must be a path")
        return Path(value)
    if name in ("username", "password") and value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(name, "must be a string")
    return value
