"""The agent installs without the broker's server stack: no module of it imports one."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    BLOCKED = {
        "pydantic", "pydantic_core", "pydantic_settings", "fastapi", "starlette",
        "sqlalchemy", "sqlmodel", "alembic", "redis", "cryptography", "celery", "kombu",
        "typer", "uvicorn", "psycopg", "argon2", "broker", "cache",
    }

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"the agent must not import {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    import agents
    names = [m.name for m in pkgutil.walk_packages(agents.__path__, "agents.")]
    for name in names:
        if name != "agents.__main__":
            importlib.import_module(name)
    consent = [m for m in sys.modules if m.startswith("consent.")]
    # The catalogue and its msgspec types: pure, shared with the broker, nothing else.
    assert sorted(consent) == ["consent.areas", "consent.record_types"], consent
    from agents.cli import main
    code = main(["--help"])
    print("IMPORTED", len(names), "HELP", code)
    """
)


def test_every_agent_module_imports_without_server_packages() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: misbroker-agent" in done.stdout
    imported = done.stdout.split("IMPORTED")[1].split()
    assert int(imported[0]) >= 20
    assert imported[-1] == "0"
