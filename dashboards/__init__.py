"""Templates, translations and static assets of the web pages the server serves."""

from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"
