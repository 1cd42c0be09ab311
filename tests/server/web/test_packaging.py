"""The wheel ships every template, translation and static asset of the web app."""

from __future__ import annotations

import tomllib
from pathlib import Path

from dashboards import STATIC_DIR, TEMPLATES_DIR, TRANSLATIONS_DIR

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = ROOT / "dashboards"


def test_packaging_package_data_covers_every_web_asset() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["dashboards"]
    shipped = {path for pattern in patterns for path in DASHBOARDS.glob(pattern) if path.is_file()}
    assets = {
        path
        for folder in (STATIC_DIR, TEMPLATES_DIR, TRANSLATIONS_DIR)
        for path in folder.rglob("*")
        if path.is_file() and path.suffix != ".pot"
    }
    assert assets - shipped == set()
