"""deploy/Dockerfile and every command deploy/ runs, checked against the project without Docker.

No image is built here (CI has no Docker).  What can drift is checked instead: the files the
Dockerfile copies exist, the extras it installs are declared, it runs as the user the
manifests expect, its settings are settings, and every command that the Dockerfile,
compose and Kubernetes start (probes included) names a real command with real options.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator

import pytest
from celery.bin.celery import celery as celery_cli
from typer.testing import CliRunner

from broker.cli.main import app as misbroker_cli
from tests.deploy.manifests import (
    DOCKERFILE,
    ROOT,
    Document,
    compose,
    of_kind,
    pod_templates,
    setting_names,
)

Instruction = tuple[str, str]


def instructions() -> list[Instruction]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        found.append((keyword.upper(), rest.strip()))
        pending = ""
    return found


def final_stage() -> list[Instruction]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def exec_form(arguments: str) -> list[str]:
    parsed: list[str] = json.loads(arguments)
    return parsed


def env_pairs(arguments: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(arguments))


def test_every_file_copied_from_the_context_exists() -> None:
    copies = [args for keyword, args in instructions() if keyword == "COPY"]
    checked = 0
    for args in copies:
        parts = args.split()
        if any(p.startswith("--from=") for p in parts):
            continue
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            checked += 1
    assert checked >= 5


def test_the_extras_it_installs_are_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    extras = [word for word in runs.split("--extra ")[1:]]
    assert extras, "the image installs the server extra"
    for extra in extras:
        assert extra.split()[0] in project["optional-dependencies"]
    assert "--frozen" in runs  # the image gets exactly the lock file's versions


def test_it_runs_as_the_non_root_user_the_manifests_expect() -> None:
    stage = final_stage()
    (user,) = [args for keyword, args in stage if keyword == "USER"]
    created = next(args for keyword, args in stage if keyword == "RUN" and "useradd" in args)
    uid = int(created.split("--uid")[1].split()[0])
    gid = int(created.split("--gid")[1].split()[0])
    assert user in created
    assert uid != 0
    for _, pod in pod_templates():
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod["securityContext"]["runAsGroup"] == gid
    for name in ("migrate", "api", "worker", "beat"):
        assert compose()["services"][name]["user"] == f"{uid}:{gid}"


def test_its_settings_are_settings_and_match_the_manifests() -> None:
    env: dict[str, str] = {}
    for keyword, args in final_stage():
        if keyword == "ENV":
            env.update(env_pairs(args))
    names = setting_names()
    assert {name for name in env if name.startswith("MISBROKER_")} <= names
    (config_map,) = of_kind("ConfigMap")
    assert env["MISBROKER_CONSOLE_ASSETS_DIR"] == config_map["data"]["MISBROKER_CONSOLE_ASSETS_DIR"]
    copied = [args for keyword, args in final_stage() if keyword == "COPY"]
    assert any(args.endswith(" " + env["MISBROKER_CONSOLE_ASSETS_DIR"]) for args in copied)


def test_it_serves_on_the_port_the_manifests_use() -> None:
    (exposed,) = [args for keyword, args in final_stage() if keyword == "EXPOSE"]
    (api,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "misbroker-api"]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [int(exposed)]
    assert compose()["services"]["api"]["expose"] == [exposed]


def deployed_commands() -> Iterator[tuple[str, list[str]]]:
    """(where, argv) of every command deploy/ starts."""
    (cmd,) = [args for keyword, args in final_stage() if keyword == "CMD"]
    yield "Dockerfile CMD", exec_form(cmd)
    for name, service in compose()["services"].items():
        if "build" in service or service.get("image", "").startswith("misbroker"):
            yield f"compose {name}", service["command"]
    for workload, pod in pod_templates():
        for container in pod["containers"]:
            where = f"k8s {workload['metadata']['name']}"
            yield where, container["command"]
            for probe in ("readinessProbe", "livenessProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command")
                if command:
                    yield f"{where} {probe}", command


def options_of(command: Document | object) -> set[str]:
    return {opt for param in getattr(command, "params", []) for opt in param.opts}


def check_celery(argv: list[str]) -> None:
    group_options = options_of(celery_cli)
    at = 1
    while argv[at].startswith("-"):
        assert argv[at] in group_options, argv[at]
        if argv[at] in {"-A", "--app"}:
            module = argv[at + 1]
            assert hasattr(importlib.import_module(module), "celery_app"), module
            at += 1
        at += 1
    subcommand = celery_cli.commands[argv[at]]  # KeyError: no such celery command
    allowed = options_of(subcommand)
    for word in argv[at + 1 :]:
        if word.startswith("-"):
            assert word.split("=")[0] in allowed, f"celery {argv[at]} has no {word}"


def check_misbroker(argv: list[str]) -> None:
    result = CliRunner().invoke(misbroker_cli, [*argv[1:], "--help"])
    assert result.exit_code == 0, result.output


@functools.cache
def module_help(module: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def check_python_module(argv: list[str]) -> None:
    assert argv[1] == "-m"
    module = argv[2]
    assert importlib.util.find_spec(module) is not None, module
    shown = module_help(module)
    for word in argv[3:]:
        if word.startswith("--"):
            assert word.split("=")[0] in shown, f"{module} has no {word}"


def check(argv: list[str]) -> None:
    if argv[:2] == ["sh", "-c"]:
        inner = shlex.split(argv[2])
        if inner[0] == "celery":
            check_celery(inner)
        else:
            assert inner[0] in {"test", "find"}, argv  # the beat's file probe
        return
    checks = {"celery": check_celery, "misbroker": check_misbroker, "python": check_python_module}
    checks[argv[0]](argv)


@pytest.mark.parametrize(
    ("where", "argv"), list(deployed_commands()), ids=[w for w, _ in deployed_commands()]
)
def test_every_deployed_command_exists_with_its_options(where: str, argv: list[str]) -> None:
    check(argv)


def test_the_command_check_catches_a_misspelt_option() -> None:
    with pytest.raises(AssertionError):
        check(["celery", "-A", "broker.worker", "worker", "--concurency", "4"])
    with pytest.raises(KeyError):
        check(["celery", "-A", "broker.worker", "wroker"])
    with pytest.raises(AssertionError):
        check(["misbroker", "db", "upgrde"])


def test_the_console_script_is_declared() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["misbroker"] == "broker.cli.main:run"
