"""The controller's configuration: one flat TOML file, validated into a frozen dataclass."""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from firmware_pi import __version__
from firmware_pi.badge_sector import BadgeKeys
from protocol import BrokerAddress, ProtocolError, check_segment

MIN_KEY_BYTES = 32
READER_KINDS = ("simulated", "mfrc522", "keyboard")
_PIN_KEYS = ("relay_pin", "green_led_pin", "red_led_pin", "buzzer_pin", "busy_pin", "oops_pin")
_INT_KEYS = (
    "mfrc522_bus",
    "mfrc522_device",
    "mfrc522_rst_pin",
    "busy_mcp3008_channel",
    "snapshot_max_age_s",
    "outbox_max_events",
    "badge_sector",
)
_FLOAT_KEYS = ("busy_threshold", "auth_timeout_s")
_BOOL_KEYS = ("relay_active_high", "busy_active_high")


class ConfigError(ValueError):
    """A configuration that cannot be used; `key` names the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config {key}: {message}")
        self.key = key
        self.message = message


def parse_broker_url(url: str) -> BrokerAddress:
    """The broker address, or a ConfigError naming `broker_url`."""
    try:
        return BrokerAddress.parse(url)
    except ProtocolError as exc:
        raise ConfigError("broker_url", exc.message) from None


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
    # mqtts:// only: the lab CA that signed the broker's certificate (`fablab tls-ca`);
    # unset, the system's CA store is used.
    ca_file: str | None = None
    reader: str = "simulated"
    reader_device: str = "-"  # keyboard reader: evdev device path, or "-" for stdin
    mfrc522_bus: int = 0
    mfrc522_device: int = 0
    mfrc522_rst_pin: int = 25
    relay_pin: int | str = 17
    relay_active_high: bool = True
    green_led_pin: int | str = 27
    red_led_pin: int | str = 22
    buzzer_pin: int | str | None = None
    busy_pin: int | str | None = None
    busy_active_high: bool = True
    busy_mcp3008_channel: int | None = None
    busy_threshold: float = 0.2
    oops_pin: int | str | None = None
    snapshot_max_age_s: int = 0  # 0 = a snapshot never gets too old to grant
    auth_timeout_s: float = 1.5  # online check of unknown badges; 0 = never ask
    outbox_max_events: int = 20_000
    # Anti-cloning (MIFARE Classic on the MFRC522, docs/security.md): the site's badge
    # master key, the same on every controller of the site and on no snapshot; unset,
    # badges are plain (UID only). `badge_sector` is the card sector it protects. Only
    # the MFRC522 reader reads and writes the sector.
    badge_master_key_hex: str | None = field(default=None, repr=False)
    badge_sector: int = 1
    firmware_version: str = __version__

    def __post_init__(self) -> None:
        for key in ("controller_id", "site", "machine"):
            try:
                check_segment(getattr(self, key), key)
            except ProtocolError as exc:
                raise ConfigError(key, exc.message) from None
        broker = parse_broker_url(self.broker_url)
        if self.ca_file is not None:
            if not broker.tls:
                raise ConfigError("ca_file", "is used only with an mqtts:// broker_url")
            if not Path(self.ca_file).is_file():
                raise ConfigError(
                    "ca_file", f"{self.ca_file}: no such file (copy the lab's ca.crt there)"
                )
        _decode_key(self.key_hex)
        if self.reader not in READER_KINDS:
            raise ConfigError("reader", f"must be one of: {', '.join(READER_KINDS)}")
        pins: dict[str, int | str | None] = {key: getattr(self, key) for key in _PIN_KEYS}
        if self.reader == "mfrc522":
            pins["mfrc522_rst_pin"] = self.mfrc522_rst_pin
        seen: dict[int | str, str] = {}
        for key, pin in pins.items():
            if pin is None:
                continue
            if pin in seen:
                raise ConfigError(key, f"uses the same pin as {seen[pin]}")
            seen[pin] = key
        if not self.firmware_version:
            raise ConfigError("firmware_version", "must not be empty")
        if self.busy_mcp3008_channel is not None and not 0 <= self.busy_mcp3008_channel <= 7:
            raise ConfigError("busy_mcp3008_channel", "must be 0 to 7")
        if not 0.0 < self.busy_threshold < 1.0:
            raise ConfigError("busy_threshold", "must be between 0 and 1 (of full scale)")
        if not 0.0 <= self.auth_timeout_s <= 10.0:
            raise ConfigError("auth_timeout_s", "must be 0 to 10 seconds")
        if self.snapshot_max_age_s < 0:
            raise ConfigError("snapshot_max_age_s", "must be >= 0")
        if self.outbox_max_events < 100:
            raise ConfigError("outbox_max_events", "must be at least 100")
        self._check_badge_keys()

    def _check_badge_keys(self) -> None:
        if self.badge_master_key_hex is None:
            return
        try:
            key = bytes.fromhex(self.badge_master_key_hex)
        except ValueError:
            raise ConfigError("badge_master_key_hex", "must be hexadecimal") from None
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError("badge_master_key_hex",
                              f"must decode to at least {MIN_KEY_BYTES} bytes")
        if not 1 <= self.badge_sector <= 15:
            raise ConfigError("badge_sector", "must be 1 to 15 (sector 0 holds the UID)")

    @property
    def badge_keys(self) -> BadgeKeys | None:
        """The anti-cloning keys of the site's badges, if the lab protects them."""
        if self.badge_master_key_hex is None:
            return None
        return BadgeKeys(bytes.fromhex(self.badge_master_key_hex), self.badge_sector)

    @property
    def pins(self) -> dict[str, int | str | None]:
        """Every GPIO pin setting by name (None: the part is not fitted)."""
        return {key: getattr(self, key) for key in _PIN_KEYS}

    @property
    def key(self) -> bytes:
        """The per-controller HMAC key that signs snapshots and hides badge UIDs."""
        return _decode_key(self.key_hex)

    @property
    def broker(self) -> BrokerAddress:
        return parse_broker_url(self.broker_url)

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
        """Read a TOML file; a relative `data_dir` or `ca_file` is taken relative to the
        file's folder."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                d = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError("file", f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("file", f"{path} is not valid TOML: {exc}") from None
        for key in ("data_dir", "ca_file"):
            if isinstance(d.get(key), str):
                relative = Path(d[key]).expanduser()
                resolved = relative if relative.is_absolute() else path.parent / relative
                d[key] = resolved if key == "data_dir" else str(resolved)
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
    if name in _PIN_KEYS:
        # gpiozero accepts a BCM number or a name such as "GPIO17" or "BOARD11".
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(name, "must be a GPIO number or a pin name")
        return value
    if name in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise ConfigError(name, "must be true or false")
        return value
    if name in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, "must be an integer")
        return value
    if name in _FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, "must be a number")
        return float(value)
    if name == "data_dir":
        if not isinstance(value, str | Path) or not str(value):
            raise ConfigError(name, "must be a path")
        return Path(value)
    if name in ("username", "password", "ca_file", "badge_master_key_hex") and value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(name, "must be a string")
    return value
