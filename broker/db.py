"""Database engine, sessions and migrations for SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseNotMigratedError(RuntimeError):
    pass


def _sqlite_pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the CLI, the API and the workers use one file at once; busy_timeout makes a
    # writer wait for another instead of failing at once.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _no_auto_checkpoint(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


def make_engine(
    url: str,
    *,
    auto_checkpoint: bool = True,
    pre_ping: bool = True,
    pool_size: int = 10,
    max_overflow: int = 20,
) -> Engine:
    """An engine for `url`; on SQLite, `auto_checkpoint=False` leaves checkpointing the WAL
    to someone else (a `WalCheckpointer`), so commits through it never pay for one.  On
    PostgreSQL `pre_ping=False` saves a round trip per checkout, for a user that handles a
    connection found dead itself (the access-log writer)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        if not auto_checkpoint:
            event.listen(engine, "connect", _no_auto_checkpoint)
        return engine
    return create_engine(
        parsed, pool_pre_ping=pre_ping, pool_size=pool_size, max_overflow=max_overflow
    )


def is_sqlite_file(engine: Engine) -> bool:
    """A SQLite database in a file (another engine on the same URL sees the same data)."""
    return engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")


class WalCheckpointer:
    """Checkpoints a SQLite WAL from a background thread every `interval` seconds.

    A commit that crosses SQLite's automatic checkpoint threshold copies the WAL into the
    database and syncs it before it returns: on the partner read path (the access log)
    that stalled every read waiting for the batch, at times by hundreds of milliseconds.
    PASSIVE never blocks a writer, and costs next to nothing when there is nothing new; a
    checkpoint that cannot finish (a reader holds an old snapshot) is retried next tick.

    Under a steady stream of commits a PASSIVE checkpoint never catches up with the last
    frame, and SQLite only starts the WAL over once one has: the file would grow without
    end.  Past `max_wal_bytes` a TRUNCATE checkpoint waits for the writer's transaction,
    copies what is left (little: PASSIVE did the rest) and empties the file.  That brief
    stall comes once per `max_wal_bytes` written, not once per 4 MB.
    """

    def __init__(
        self, engine: Engine, *, interval: float = 0.5, max_wal_bytes: int = 64 << 20
    ) -> None:
        self.engine = engine
        self.interval = interval
        self.max_wal_bytes = max_wal_bytes
        database = engine.url.database
        self.wal_path = Path(f"{database}-wal") if database else None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def run_once(self) -> tuple[int, int, int]:
        """(busy, WAL frames, frames checkpointed), as `PRAGMA wal_checkpoint` reports."""
        mode = "TRUNCATE" if self.wal_bytes() > self.max_wal_bytes else "PASSIVE"
        with self.engine.connect() as conn:
            busy, frames, done = conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})").one()
            return int(busy), int(frames), int(done)

    def wal_bytes(self) -> int:
        try:
            return self.wal_path.stat().st_size if self.wal_path is not None else 0
        except FileNotFoundError:
            return 0

    async def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="wal-checkpointer")

    async def stop(self) -> None:
        if self._task is not None:
            # Not `cancel()`: cancelling `to_thread` abandons its thread, not the checkpoint
            # running in it, which would then race the last checkpoint below (and lose).
            self._stopping.set()
            await self._task  # it never ends with an error: _run catches them
            self._task = None
        try:
            await asyncio.to_thread(self.run_once)
        except Exception as exc:  # shutdown goes on: SQLite checkpoints at its next open
            log.warning("could not checkpoint the SQLite WAL at shutdown: %s", exc)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)
                return
            try:
                await asyncio.to_thread(self.run_once)
            except Exception as exc:  # a busy pool, a locked file: try again next tick
                log.warning("SQLite WAL checkpoint failed: %s", exc)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """The one place that commits: a unit of work is applied whole or not at all."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    _collapse_branch_stamps(engine)
    command.upgrade(alembic_config(engine), revision)


def _collapse_branch_stamps(engine: Engine) -> None:
    """Turn the stamps of releases before 0.3.0, one per branch, into the one linear head.

    Before 0.3.0 each context's migrations branched off 0001, and `upgrade` applied every head,
    so a database's `alembic_version` held one row per branch. The chain is linear now, and
    those rows all lie on it: the newest of them says the others were applied too. Left as
    they are, Alembic would refuse the overlapping rows.
    """
    with engine.begin() as conn:
        stamps = MigrationContext.configure(conn).get_current_heads()
        if len(stamps) < 2:
            return
        scripts = ScriptDirectory.from_config(alembic_config(engine))
        chain = [rev.revision for rev in scripts.walk_revisions("base", "heads")]
        if not set(stamps) <= set(chain):
            raise DatabaseNotMigratedError(
                f"the database is stamped with revisions this release does not know: {stamps}"
            )
        newest = min(stamps, key=chain.index)  # walk_revisions runs from the head down
        conn.execute(text("DELETE FROM alembic_version"))
        conn.execute(
            text("INSERT INTO alembic_version (version_num) VALUES (:rev)"), {"rev": newest}
        )
        log.info("collapsed %d branch stamps into the linear head %s", len(stamps), newest)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def head_revision(engine: Engine) -> str | None:
    """The newest revision; comma-joined heads would mean a branch, which a test forbids."""
    heads = ScriptDirectory.from_config(alembic_config(engine)).get_heads()
    return ",".join(sorted(heads)) or None


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return ",".join(sorted(heads)) or None


def ensure_migrated(engine: Engine) -> None:
    if current_revision(engine) != head_revision(engine):
        raise DatabaseNotMigratedError(
            "the database schema is not up to date: run `misbroker db upgrade`"
        )


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
