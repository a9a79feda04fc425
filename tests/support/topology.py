"""The distributed topology of deploy/compose.yaml, run as local processes.

Commands and environment are read from the compose file, so the test and the deployment
cannot drift apart.  What differs is only what must: `${VAR}` takes a value made here,
service names become 127.0.0.1 and a free port, container paths (`/data`, `/tmp`) become
temporary directories, and there are as many API and worker processes as asked for
(compose scales them with `deploy.replicas`).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import redis
from sqlalchemy import create_engine, text

from broker.embedded_redis import answers, find_server_binary
from tests.deploy.manifests import compose
from tests.support.seaweedfs import SeaweedFS
from tests.support.servers import PostgresServer, free_port, spawn_logged, stop_logged, wait_until

_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}")
START_TIMEOUT = 180.0
ROOT = Path(__file__).resolve().parents[2]


def interpolate(value: str, variables: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: variables[m.group(1)], value)


@dataclass
class RedisProcess:
    """A Valkey started with the compose service's own flags, on a local port."""

    name: str
    flags: list[str]
    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            str(find_server_binary()),
            *self.flags,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root)),
        ]
        self.process = spawn_logged(argv, self.root / "valkey.log")
        assert wait_until(self.answers, START_TIMEOUT, 0.05), f"{self.name} did not start"

    def answers(self) -> bool:
        password = self.flags[self.flags.index("--requirepass") + 1]
        return answers(redis.Redis(port=self.port, password=password, socket_timeout=1))

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            process.wait(timeout=60)


@dataclass
class Topology:
    root: Path
    apis: int = 2
    workers: int = 2
    variables: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    postgres: PostgresServer | None = None
    cache_redis: RedisProcess | None = None
    queue_redis: RedisProcess | None = None
    seaweedfs: SeaweedFS | None = None
    api_ports: list[int] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def services(self) -> dict[str, Any]:
        found: dict[str, Any] = compose()["services"]
        return found

    def command(self, service: str) -> list[str]:
        return [
            self._local(interpolate(arg, self.variables))
            for arg in self.services[service]["command"]
        ]

    def _local(self, value: str) -> str:
        """A compose value with service addresses and container paths made local."""
        assert self.postgres is not None
        assert self.cache_redis is not None
        assert self.queue_redis is not None
        assert self.seaweedfs is not None
        ports = {
            "postgres:5432": self.postgres.port,
            "redis-cache:6379": self.cache_redis.port,
            "redis-queue:6379": self.queue_redis.port,
            "seaweedfs:8333": int(self.seaweedfs.endpoint.rsplit(":", 1)[1]),
        }
        for address, port in ports.items():
            value = value.replace(address, f"127.0.0.1:{port}")
        return re.sub(r"^/tmp(?=/|$)", str(self.root / "tmp"), value)

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        self.variables = {
            "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
            "REDIS_PASSWORD": secrets.token_urlsafe(18),
            "MISBROKER_KEK": base64.b64encode(secrets.token_bytes(32)).decode(),
            "S3_ACCESS_KEY_ID": "mb" + secrets.token_hex(8),
            "S3_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
            "MISBROKER_PUBLIC_HOST": "broker.topology.test",
        }
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self._start_postgres()
        self.cache_redis = self._redis("redis-cache")
        self.queue_redis = self._redis("redis-queue")
        self._start_seaweedfs()
        self.env = self._broker_env()
        migrate = subprocess.run(
            self._argv(self.command("migrate")),
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stderr.decode()[-2000:]
        self.api_ports = [free_port() for _ in range(self.apis)]
        for index, port in enumerate(self.api_ports):
            self.spawn(f"api-{index + 1}", self._api_command(port))
        for index in range(self.workers):
            self.spawn(f"worker-{index + 1}", self.command("worker"))
        self.spawn("beat", self.command("beat"))
        for port in self.api_ports:
            assert wait_until(lambda p=port: self.ready(p), START_TIMEOUT, 0.2), self.logs()

    def _start_postgres(self) -> None:
        self.postgres = PostgresServer()
        self.postgres.start()
        password = self.variables["POSTGRES_PASSWORD"]
        admin = create_engine(self.postgres.url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f"CREATE ROLE misbroker LOGIN PASSWORD '{password}'"))
                conn.execute(text("CREATE DATABASE misbroker OWNER misbroker"))
        finally:
            admin.dispose()

    def _redis(self, service: str) -> RedisProcess:
        argv = [interpolate(arg, self.variables) for arg in self.services[service]["command"]]
        assert argv[0] == "valkey-server"
        server = RedisProcess(service, argv[1:], self.root / service)
        server.start()
        return server

    def _start_seaweedfs(self) -> None:
        service = self.services["seaweedfs"]
        assert service["command"][0] == "mini"
        credentials = (
            interpolate(service["environment"]["AWS_ACCESS_KEY_ID"], self.variables),
            interpolate(service["environment"]["AWS_SECRET_ACCESS_KEY"], self.variables),
        )
        bucket = next(f for f in service["command"] if f.startswith("-bucket=")).split("=")[1]
        self.seaweedfs = SeaweedFS(
            self.root / "seaweedfs", bucket, flags=service["command"], credentials=credentials
        )
        self.seaweedfs.start()

    def _broker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MISBROKER_")}
        for name, value in self.services["api"]["environment"].items():
            env[name] = self._local(interpolate(str(value), self.variables))
        Path(env["MISBROKER_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        return env

    def _api_command(self, port: int) -> list[str]:
        argv = self.command("api")
        argv[argv.index("--port") + 1] = str(port)
        # Bound to loopback: compose binds all of a container's interfaces, not a host's.
        argv[argv.index("--host") + 1] = "127.0.0.1"
        return argv

    @staticmethod
    def _argv(command: list[str]) -> list[str]:
        """`python`, `misbroker` and `celery` of this virtual environment."""
        if command[0] == "python":
            return [sys.executable, *command[1:]]
        return [str(Path(sys.executable).parent / command[0]), *command[1:]]

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        process = spawn_logged(self._argv(command), self.root / f"{name}.log", self.env, ROOT)
        self.processes[name] = process
        return process

    # -- looking at it -------------------------------------------------------------------

    def url(self, api: int) -> str:
        return f"http://127.0.0.1:{self.api_ports[api - 1]}"

    def ready(self, port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def logs(self) -> str:
        tails = []
        for path in sorted(self.root.glob("*.log")):
            tails.append(f"== {path.name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(tails)

    def in_environment(self) -> Any:
        """Settings of this process as those of the deployment (for setup and checks)."""
        return mock.patch.dict(
            os.environ, {k: v for k, v in self.env.items() if k.startswith("MISBROKER_")}
        )

    def database_url(self) -> str:
        return self.env["MISBROKER_DATABASE_URL"]

    # -- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        for name in sorted(self.processes, key=lambda n: (not n.startswith("api"), n)):
            stop_logged(self.processes.pop(name))
        for server in (self.cache_redis, self.queue_redis):
            if server is not None:
                server.stop()
        if self.seaweedfs is not None:
            self.seaweedfs.stop()
        if self.postgres is not None:
            self.postgres.remove()
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
