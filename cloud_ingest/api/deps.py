"""Request dependencies: the service, the settings and the bearer-token actor."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud_ingest.service import IngestService
from cloud_ingest.settings import IngestSettings

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")


def get_service(request: Request) -> IngestService:
    service: IngestService = request.app.state.service
    return service


def get_settings(request: Request) -> IngestSettings:
    settings: IngestSettings = request.app.state.settings
    return settings


def get_actor(
    settings: Annotated[IngestSettings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The actor name of a valid bearer token; 401 otherwise."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers=challenge,
        )
    token = credentials.credentials.encode()
    actor: str | None = None
    for known, name in settings.api_tokens.items():
        if hmac.compare_digest(known.encode(), token):
            actor = name
    if actor is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown or revoked bearer token", headers=challenge
        )
    return actor


ServiceDep = Annotated[IngestService, Depends(get_service)]
ActorDep = Annotated[str, Depends(get_actor)]
