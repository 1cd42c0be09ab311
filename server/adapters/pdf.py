"""Printable HTML laid out as PDF by WeasyPrint (pango), with nothing fetched.

WeasyPrint is imported on the first PDF, so that a server without pango still starts
and serves everything else; its PDF routes then answer 503 (PdfUnavailableError).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


class PdfUnavailableError(RuntimeError):
    """WeasyPrint or the pango library it needs is not installed."""


def html_to_pdf(html: str, *, stylesheets: Sequence[Path] = ()) -> bytes:
    """The PDF of an HTML document; `stylesheets` are local CSS files applied to it.

    No URL is ever fetched (no protocol is allowed): a link in the page to a stylesheet,
    image or font is ignored, so give the page's stylesheets here."""
    try:
        from weasyprint import CSS, HTML
        from weasyprint.urls import URLFetcher
    except (ImportError, OSError) as exc:  # OSError: pango's shared library is missing
        raise PdfUnavailableError(f"PDF rendering is not installed: {exc}") from exc
    fetcher = URLFetcher(allowed_protocols=())
    styles = [
        CSS(string=path.read_text(encoding="utf-8"), url_fetcher=fetcher) for path in stylesheets
    ]
    pdf: bytes = HTML(string=html, url_fetcher=fetcher).write_pdf(stylesheets=styles)
    return pdf
