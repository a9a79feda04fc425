"""Settings of the school console."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

IN_TREE_ASSETS = (
    Path(__file__).parent / "frontend" / "node_modules" / "govuk-frontend" / "dist" / "govuk"
)


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISBROKER_", extra="ignore")

    # GOV.UK Frontend's `dist/govuk` folder.  `make install` puts it in the source tree; an
    # image built without the tree (deploy/Dockerfile) copies it elsewhere and says where.
    console_assets_dir: Path = IN_TREE_ASSETS
