"""Settings: the one typed place that reads flags, environment variables and an optional .env.

Secrets (the API key and the URL-signing secret) are ``SecretStr``: their repr is masked, so
they cannot leak through logs, tracebacks or ``--json`` output by accident.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STREETVIEW_URL = "https://maps.googleapis.com/maps/api/streetview"


class Settings(BaseSettings):
    """Where the lake is, which API to call and with which credentials."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    lake: str = Field(default="./lake", validation_alias=AliasChoices("SVCLUSTER_LAKE", "lake"))
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GOOGLE_MAPS_API_KEY", "GSV_API_KEY", "api_key")
    )
    signing_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GOOGLE_MAPS_SIGNING_SECRET", "signing_secret")
    )
    streetview_url: str = Field(
        default=DEFAULT_STREETVIEW_URL,
        validation_alias=AliasChoices("SVCLUSTER_STREETVIEW_URL", "streetview_url"),
    )


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and ``.env``, with explicit (non-None) flag values on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
