"""The database layer on SQLite and on PostgreSQL: migrations, types, constraints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from broker.db import (
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    session_scope,
    upgrade,
)
from broker.models import metadata
from broker.schools.models import School, SchoolStatus


def test_migrations_upgrade_downgrade_and_upgrade_again(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    assert {"schools", "agents", "school_admins", "partners"} <= set(
        inspect(engine).get_table_names()
    )
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert "schools" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    engine.dispose()


def test_migrations_form_one_linear_chain() -> None:
    """A release's new migration must follow the last one: a second head fails here."""
    scripts = ScriptDirectory.from_config(alembic_config(make_engine("sqlite://")))
    assert len(scripts.get_heads()) == 1, scripts.get_heads()
    for rev in scripts.walk_revisions("base", "heads"):
        assert not rev.is_merge_point, f"{rev.revision} merges branches"
        assert not rev.is_branch_point, f"{rev.revision} is branched from"


def test_branch_stamps_of_older_releases_collapse_into_the_linear_head(database_url: str) -> None:
    """Before 0.3.0 a database held one stamp per branch; upgrading it must just work."""
    engine = make_engine(database_url)
    upgrade(engine, "0007_held_deletions")  # the schema of the last branched release
    older_heads = [
        "0002_cache",
        "0002_events",
        "0003_consent",
        "0005_webhooks",
        "0006_console",
        "0007_held_deletions",
    ]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
        for rev in older_heads:
            conn.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": rev})
    assert current_revision(engine) != head_revision(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    engine.dispose()


def test_models_and_migrations_agree(database_url: str) -> None:
    """A model changed without a migration fails here, on both databases."""
    engine = make_engine(database_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_times_come_back_as_aware_utc(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    created = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=1)))
    with session_scope(engine) as session:
        session.add(School(id="sch_1", name="A", dfe_number="3024012", created_at=created))
    with Session(engine) as session:
        school = session.exec(select(School)).one()
    assert school.created_at == created
    assert school.created_at.tzinfo is UTC
    assert school.status is SchoolStatus.ACTIVE
    engine.dispose()


def test_naive_times_are_refused(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    naive = datetime(2026, 1, 1)
    session = Session(engine)
    session.add(School(id="sch_1", name="A", dfe_number="3024012", created_at=naive))
    with pytest.raises(Exception, match="timezone-aware"):
        session.flush()
    session.close()
    engine.dispose()


def test_dfe_number_is_unique_and_a_failed_unit_of_work_leaves_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with session_scope(engine) as session:
        session.add(School(id="sch_1", name="A", dfe_number="3024012", created_at=now))

    def register_two() -> None:
        with session_scope(engine) as session:
            session.add(School(id="sch_2", name="B", dfe_number="3024013", created_at=now))
            session.flush()
            session.add(School(id="sch_3", name="C", dfe_number="3024012", created_at=now))

    with pytest.raises(IntegrityError):
        register_two()
    with Session(engine) as session:
        assert [s.id for s in session.exec(select(School))] == ["sch_1"]
    engine.dispose()
