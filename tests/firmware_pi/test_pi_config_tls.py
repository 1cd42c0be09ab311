"""The controller's `ca_file`: the lab CA that signed the broker's certificate."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_pi.config import ConfigError, ControllerConfig

BASE = (
    'controller_id = "laser"\nsite = "lab"\nmachine = "laser"\n'
    f'key_hex = "{"ab" * 32}"\ndata_dir = "data"\n'
)


def _load(tmp_path: Path, extra: str) -> ControllerConfig:
    path = tmp_path / "controller.toml"
    path.write_text(BASE + extra)
    return ControllerConfig.load(path)


def test_pi_config_ca_file_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    config = _load(tmp_path, 'broker_url = "mqtts://broker:8883"\nca_file = "ca.crt"\n')
    assert config.ca_file == str(tmp_path / "ca.crt")


def test_pi_config_ca_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, 'broker_url = "mqtts://broker:8883"\nca_file = "/nowhere/ca.crt"\n')
    assert raised.value.key == "ca_file"
    assert "/nowhere/ca.crt" in str(raised.value)


def test_pi_config_ca_file_only_with_tls(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("")
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, 'broker_url = "mqtt://broker:1883"\nca_file = "ca.crt"\n')
    assert raised.value.key == "ca_file"
