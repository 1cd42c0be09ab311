"""Loading and validating the controller's TOML config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pi_helpers import KEY, KEY_HEX, make_config

from firmware_pi import __version__
from firmware_pi.config import ConfigError, ControllerConfig
from protocol import BrokerAddress

EXAMPLE = Path(__file__).parents[2] / "firmware_pi" / "example-config.toml"

MINIMAL_TOML = f"""
controller_id = "ctrl-1"
site = "lab"
machine = "cnc"
broker_url = "mqtt://broker.local"
key_hex = "{KEY_HEX}"
data_dir = "state"
"""


def minimal(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "controller_id": "ctrl-1",
        "site": "lab",
        "machine": "cnc",
        "broker_url": "mqtt://broker.local:1883",
        "key_hex": KEY_HEX,
        "data_dir": "/tmp/fablab",
    }
    values.update(overrides)
    return values


def test_config_loads_example_file() -> None:
    config = ControllerConfig.load(EXAMPLE)

    assert (config.site, config.machine, config.relay_pin) == ("mainlab", "laser-cutter", 17)


def test_config_applies_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL_TOML)

    config = ControllerConfig.load(path)

    assert config.reader == "simulated"
    assert (config.relay_pin, config.green_led_pin, config.red_led_pin) == (17, 27, 22)
    assert config.relay_active_high is True
    assert config.firmware_version == __version__
    assert config.username is None and config.password is None


def test_config_resolves_relative_data_dir_next_to_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL_TOML)

    config = ControllerConfig.load(path)

    assert config.data_dir == tmp_path / "state"
    assert config.outbox_path == tmp_path / "state" / "outbox.sqlite3"
    assert config.snapshot_path == tmp_path / "state" / "snapshot.json"


def test_config_decodes_key() -> None:
    assert ControllerConfig.from_dict(minimal()).key == KEY


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.local", BrokerAddress("broker.local", 1883, tls=False)),
        ("mqtt://10.0.0.2:1884", BrokerAddress("10.0.0.2", 1884, tls=False)),
        ("mqtts://broker.local", BrokerAddress("broker.local", 8883, tls=True)),
    ],
)
def test_config_parses_broker_url(url: str, expected: BrokerAddress) -> None:
    assert ControllerConfig.from_dict(minimal(broker_url=url)).broker == expected


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"site": "Main Lab"}, "site"),
        ({"machine": ""}, "machine"),
        ({"controller_id": "ctrl/1"}, "controller_id"),
        ({"broker_url": "http://broker"}, "broker_url"),
        ({"broker_url": "mqtt://"}, "broker_url"),
        ({"broker_url": "mqtt://host:99999"}, "broker_url"),
        ({"key_hex": "zz"}, "key_hex"),
        ({"key_hex": "00" * 31}, "key_hex"),
        ({"reader": "pn532"}, "reader"),
        ({"relay_pin": True}, "relay_pin"),
        ({"relay_active_high": "yes"}, "relay_active_high"),
        ({"red_led_pin": 17}, "red_led_pin"),
        ({"username": 7}, "username"),
        ({"relay_pn": 17}, "relay_pn"),
    ],
)
def test_config_error_names_bad_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ControllerConfig.from_dict(minimal(**overrides))

    assert excinfo.value.key == key
    assert key in str(excinfo.value)


def test_config_error_names_missing_key() -> None:
    values = minimal()
    del values["key_hex"]

    with pytest.raises(ConfigError, match="key_hex: is required"):
        ControllerConfig.from_dict(values)


def test_config_error_reports_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("site = ")

    with pytest.raises(ConfigError, match="not valid TOML"):
        ControllerConfig.load(path)


def test_config_error_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ControllerConfig.load(tmp_path / "absent.toml")


def test_config_hides_secrets_in_repr(tmp_path: Path) -> None:
    config = make_config(tmp_path, password="hunter2")

    assert "hunter2" not in repr(config)
    assert KEY_HEX not in repr(config)
