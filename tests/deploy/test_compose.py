"""deploy/compose.yaml: valid Compose, the topology of the design, no secret in the file.

The schema is the Compose Specification's own, vendored in tests/deploy/data (its source and
version are in the README there), so the check needs no network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy.manifests import (
    Document,
    compose,
    of_kind,
    secret_setting_names,
    setting_names,
)

SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
BROKER_SERVICES = ("migrate", "api", "worker", "beat")
INTERPOLATION = re.compile(r"\$\{[A-Z_][A-Z0-9_]*(:?[-?][^}]*)?\}")


def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def service(name: str) -> Document:
    found: Document = compose()["services"][name]
    return found


def test_the_compose_file_follows_the_compose_specification() -> None:
    errors = sorted(validator().iter_errors(compose()), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []


def test_the_schema_check_is_not_a_rubber_stamp() -> None:
    broken: dict[str, Any] = compose()
    broken["services"]["api"]["restart_policy"] = "always"  # not a service key
    assert list(validator().iter_errors(broken)) != []


def test_the_topology_of_the_design() -> None:
    services = compose()["services"]
    assert {
        "postgres",
        "redis-cache",
        "redis-queue",
        "seaweedfs",
        "api",
        "worker",
        "beat",
    } <= set(services)
    assert services["api"]["deploy"]["replicas"] >= 2
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["beat"]["deploy"]["replicas"] == 1


def test_the_queue_redis_is_separate_and_never_evicts() -> None:
    queue = service("redis-queue")["command"]
    cache = service("redis-cache")["command"]
    assert queue[queue.index("--maxmemory-policy") + 1] == "noeviction"
    assert cache[cache.index("--maxmemory-policy") + 1] != "noeviction"
    for name in BROKER_SERVICES:
        env = service(name)["environment"]
        assert "@redis-cache:" in env["MISBROKER_REDIS_URL"]
        assert "@redis-queue:" in env["MISBROKER_CELERY_BROKER_URL"]


def test_the_cold_tier_is_the_seaweedfs_bucket() -> None:
    bucket_flag = next(a for a in service("seaweedfs")["command"] if a.startswith("-bucket="))
    for name in BROKER_SERVICES:
        env = service(name)["environment"]
        bucket = env["MISBROKER_BLOB_URL"].removeprefix("s3://").split("/")[0]
        assert bucket_flag == f"-bucket={bucket}"
        assert env["MISBROKER_BLOB_ENDPOINT_URL"] == "http://seaweedfs:8333"


def test_no_secret_is_written_in_the_file() -> None:
    secrets, known = secret_setting_names(), setting_names()
    for name in BROKER_SERVICES:
        for variable, value in service(name)["environment"].items():
            assert variable in known, f"{name}: {variable} is not a setting"
            if variable in secrets:
                assert INTERPOLATION.search(str(value)), f"{name}: {variable} is a literal"
    for name, value in service("seaweedfs")["environment"].items():
        assert INTERPOLATION.fullmatch(value), name
    assert INTERPOLATION.fullmatch(service("postgres")["environment"]["POSTGRES_PASSWORD"])


def test_broker_containers_run_as_non_root_on_a_read_only_filesystem() -> None:
    for name in BROKER_SERVICES:
        assert service(name)["read_only"] is True
        assert not str(service(name)["user"]).startswith("0")


@pytest.mark.parametrize("name", ["api", "worker", "beat"])
def test_compose_and_kubernetes_run_the_same_commands(name: str) -> None:
    (workload,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == f"misbroker-{name}"]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert service(name)["command"] == container["command"]


def test_tls_terminates_at_the_proxy() -> None:
    proxy = service("proxy")
    assert "443:443" in proxy["ports"]
    assert "api:8080" in proxy["command"]
    assert "ports" not in service("api")  # the API is reached through the proxy only
    assert service("api")["environment"]["MISBROKER_HSTS"] == "true"
