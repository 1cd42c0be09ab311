"""The web app: server-rendered pages (dashboards/ templates) over the service layer.

Pages are an entrypoint like the API routes: they read through repositories and change
things only by handing commands to the message bus.
"""

from __future__ import annotations

from fastapi import FastAPI

from server.web import (
    accounts,
    docs,
    floor,
    maker,
    manager,
    monitoring,
    stats,
    trainer,
    treasurer,
)
from server.web.docs import install_openapi_security
from server.web.errors import install_error_pages
from server.web.floor import notifier_of

# manager before trainer: /members/new and /members/import before /members/{id}.
PAGE_MODULES = (docs, accounts, floor, maker, manager, trainer, stats, treasurer, monitoring)


def install(app: FastAPI) -> None:
    """Add the pages, the offline API docs and the HTML error pages to the app."""
    for module in PAGE_MODULES:
        app.include_router(module.router)
    install_error_pages(app)
    install_openapi_security(app)
    notifier_of(app.state.runtime)
