"""Request dependencies: the service, the settings, the directory and who is asking.

A bearer token is either a service account's from the settings (``REMON_API_TOKENS``: admin
role, sees everything) or a staff member's (issued by ``PUT /staff/{id}``, stored as SHA-256).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud_ingest.care import CareDirectory, Principal
from cloud_ingest.clinical_settings import ClinicalSettings
from cloud_ingest.service import IngestService
from cloud_ingest.settings import IngestSettings

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")


def get_service(request: Request) -> IngestService:
    service: IngestService = request.app.state.service
    return service


def get_settings(request: Request) -> IngestSettings:
    settings: IngestSettings = request.app.state.settings
    return settings


def get_care(request: Request) -> CareDirectory:
    care: CareDirectory = request.app.state.care
    return care


def get_clinical(request: Request) -> ClinicalSettings:
    clinical: ClinicalSettings = request.app.state.clinical
    return clinical


def get_principal(
    settings: Annotated[IngestSettings, Depends(get_settings)],
    care: Annotated[CareDirectory, Depends(get_care)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Who a valid bearer token belongs to; 401 otherwise."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers=challenge,
        )
    principal = care.resolve_token(credentials.credentials, settings.api_tokens)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown or revoked bearer token", headers=challenge
        )
    return principal


def get_actor(principal: Annotated[Principal, Depends(get_principal)]) -> str:
    """The name recorded in audit trails for this request."""
    return principal.actor


ServiceDep = Annotated[IngestService, Depends(get_service)]
ActorDep = Annotated[str, Depends(get_actor)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
CareDep = Annotated[CareDirectory, Depends(get_care)]
ClinicalDep = Annotated[ClinicalSettings, Depends(get_clinical)]
