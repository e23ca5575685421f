"""The care team's HTTP API (FastAPI): thin handlers over :class:`IngestService`.

Every route but ``/api/v1/health`` needs ``Authorization: Bearer <token>``: a service account's
from :attr:`IngestSettings.api_tokens` (admin) or a staff member's (see :mod:`cloud_ingest.care`
for routing: staff see only their teams' patients). Service exceptions map to HTTP statuses in
one place (:func:`_install_error_handlers`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from cloud_ingest.api.routers import (
    alerts,
    clinical,
    dead_letters,
    directory,
    events,
    health,
    observations,
    patients,
    sites,
    stats,
)
from cloud_ingest.care import CareDirectory, DirectoryError, ForbiddenError, UnknownEntryError
from cloud_ingest.clinical_settings import ClinicalSettings, SettingsError
from cloud_ingest.service import (
    AlertNotFoundError,
    AssignmentError,
    ConflictError,
    IngestService,
    InvalidTransitionError,
    RuleError,
    SnoozeRefusedError,
    StorageError,
    UnknownConditionError,
)
from cloud_ingest.settings import IngestSettings

log = logging.getLogger("remon.ingest.api")

API_PREFIX = "/api/v1"


def create_app(service: IngestService, settings: IngestSettings) -> FastAPI:
    app = FastAPI(
        title="remon cloud ingest API",
        version="1",
        description="Readings, device events, alerts and their audit trail for the care team.",
    )
    app.state.service = service
    app.state.settings = settings
    app.state.care = CareDirectory(service.storage)
    app.state.clinical = ClinicalSettings(
        service.storage, {t.condition: t for t in service.thresholds()}
    )
    routers = (
        health,
        observations,
        events,
        alerts,
        dead_letters,
        stats,
        patients,
        sites,
        directory,
        clinical,
    )
    for module in routers:
        app.include_router(module.router, prefix=API_PREFIX)
    _install_error_handlers(app)
    return app


def _error(code: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=code, content={"detail": detail})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DirectoryError)
    def _directory(_r: Request, exc: DirectoryError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(SettingsError)
    def _settings_error(_r: Request, exc: SettingsError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(AssignmentError)
    def _assignment(_r: Request, exc: AssignmentError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(UnknownEntryError)
    def _unknown_entry(_r: Request, exc: UnknownEntryError) -> JSONResponse:
        return _error(status.HTTP_404_NOT_FOUND, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(ForbiddenError)
    def _forbidden(_r: Request, exc: ForbiddenError) -> JSONResponse:
        return _error(status.HTTP_403_FORBIDDEN, str(exc))

    @app.exception_handler(AlertNotFoundError)
    def _not_found(_r: Request, exc: AlertNotFoundError) -> JSONResponse:
        return _error(status.HTTP_404_NOT_FOUND, f"alert {exc.args[0]} not found")

    @app.exception_handler(SnoozeRefusedError)
    def _snooze_refused(_r: Request, exc: SnoozeRefusedError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(InvalidTransitionError)
    def _conflict(_r: Request, exc: InvalidTransitionError) -> JSONResponse:
        return _error(status.HTTP_409_CONFLICT, str(exc))

    @app.exception_handler(ConflictError)
    def _race(_r: Request, exc: ConflictError) -> JSONResponse:
        return _error(status.HTTP_409_CONFLICT, str(exc))

    @app.exception_handler(UnknownConditionError)
    def _unknown_condition(_r: Request, exc: UnknownConditionError) -> JSONResponse:
        return _error(status.HTTP_404_NOT_FOUND, str(exc))

    @app.exception_handler(RuleError)
    def _rule(_r: Request, exc: RuleError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(StorageError)
    def _storage(_r: Request, exc: StorageError) -> JSONResponse:
        # the driver's message can name hosts, users and databases: log it, do not return it
        log.error("database error while serving a request: %s", exc)
        return _error(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable")


__all__ = ["API_PREFIX", "create_app"]
