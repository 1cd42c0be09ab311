"""FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request

from server.bootstrap import ServerRuntime
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork


def get_runtime(request: Request) -> ServerRuntime:
    runtime: ServerRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[ServerRuntime, Depends(get_runtime)]


def get_uow(runtime: RuntimeDep) -> Iterator[SqlAlchemyUnitOfWork]:
    """A read-side unit of work for the request."""
    with runtime.new_uow() as uow:
        yield uow


UowDep = Annotated[SqlAlchemyUnitOfWork, Depends(get_uow)]
