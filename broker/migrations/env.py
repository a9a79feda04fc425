"""Alembic environment: runs against the engine the broker hands it (never a global URL)."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Engine
from sqlmodel.sql.sqltypes import AutoString

from broker.models import metadata


def render_item(kind: str, obj: Any, _ctx: AutogenContext) -> str | Literal[False]:
    """Render SQLModel's AutoString as plain sa.String, so migrations need no sqlmodel."""
    if kind == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False


engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - misuse guard
    raise RuntimeError("run migrations through broker.db.upgrade(), which passes an engine")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
