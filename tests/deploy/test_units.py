"""deploy/: the systemd units (checked by systemd-analyze where it exists) and the compose file
(checked by `docker compose config` where docker has compose), and both in step with the Procfile."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.launch import read_procfile
from tests.support import ROOT

SYSTEMD = ROOT / "deploy" / "systemd"
UNITS = ["rqflow-api.service", "rqflow-worker@.service", "rqflow-scheduler.service"]
HARDENING = {
    "NoNewPrivileges": "true",
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "KillMode": "control-group",
    "User": "rqflow",
    "EnvironmentFile": "/etc/rqflow/rqflow.env",
}


def settings_of(unit: Path) -> dict[str, str]:
    found = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            name, _, value = line.partition("=")
            found[name.strip()] = value.strip()
    return found


@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_is_hardened_restarts_and_stops_its_whole_group(unit: str) -> None:
    given = settings_of(SYSTEMD / unit)
    assert {k: given.get(k) for k in HARDENING} == HARDENING
    assert given["Restart"] == "always"


Command = tuple[str, dict[str, str | None], list[str]]
"""A command line as (program's name, its options with their values, its other arguments)."""

SWITCHES = {"--with-scheduler", "--burst", "--verbose", "--quiet"}
"""Options of rq's commands that take no value."""


def command(words: list[str]) -> Command:
    program, *rest = words
    options: dict[str, str | None] = {}
    arguments = []
    given = iter(rest)
    for word in given:
        if word.startswith("--"):
            options[word] = None if word in SWITCHES else next(given)
        else:
            arguments.append(word)
    return Path(program).name, options, arguments


def environment_file() -> dict[str, str]:
    """The example /etc/rqflow/rqflow.env the units read."""
    lines = (SYSTEMD / "rqflow.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def procfile_command(name: str) -> Command:
    """The Procfile's line as its shell hands it to the program, in the units' environment."""
    line = read_procfile(ROOT / "Procfile")[name]
    words = subprocess.run(
        ["/bin/sh", "-c", f"printf '%s\\0' {line}"], env=environment_file(), capture_output=True, check=True
    ).stdout
    return command(words.decode().split("\0")[:-1])


def unit_command(unit: str) -> Command:
    """The unit's ExecStart as systemd hands it to the program, in the same environment."""
    words = shlex.split(settings_of(SYSTEMD / unit)["ExecStart"])
    return command([word.replace("${RQFLOW_REDIS_URL}", environment_file()["RQFLOW_REDIS_URL"]) for word in words])


def test_the_units_run_what_the_procfile_runs() -> None:
    assert unit_command("rqflow-api.service") == procfile_command("web")
    assert unit_command("rqflow-scheduler.service") == procfile_command("scheduler")
    # A worker unit's instances are the pool's workers: `rq worker` each, under a name of its own, and
    # with RQ's scheduler, which a pool's workers always run: it queues a retry when its backoff ends.
    program, options, (pool, *queues) = procfile_command("worker")
    assert pool == "worker-pool" and options.pop("--num-workers")
    one_of_the_pool = (program, {**options, "--with-scheduler": None}, ["worker", *queues])
    program, options, arguments = unit_command("rqflow-worker@.service")
    assert options.pop("--name") == "%H-%i"
    assert (program, options, arguments) == one_of_the_pool


def _installed(tmp_path: Path, text_of: dict[str, str]) -> list[str]:
    """The units as installed here: /opt/rqflow is this checkout, the environment file ours."""
    names = []
    for name, text in text_of.items():
        text = text.replace("/opt/rqflow/venv", str(ROOT / ".venv")).replace("/opt/rqflow", str(ROOT))
        text = text.replace("/etc/rqflow/rqflow.env", str(SYSTEMD / "rqflow.env"))
        installed = name.replace("@.service", "@1.service")
        (tmp_path / installed).write_text(text)
        names.append(f"./{installed}")
    return names


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_finds_nothing_wrong_with_the_units(tmp_path: Path) -> None:
    names = _installed(tmp_path, {unit: (SYSTEMD / unit).read_text() for unit in UNITS})
    verified = subprocess.run(["systemd-analyze", "verify", *names], cwd=tmp_path, capture_output=True, text=True)
    assert verified.returncode == 0 and not verified.stderr.strip() and not verified.stdout.strip(), verified.stderr
    # And the check can fail: a unit with a mistake is reported.
    broken = (SYSTEMD / "rqflow-api.service").read_text().replace("[Service]", "[Service]\nRestartt=always")
    names = _installed(tmp_path, {"broken.service": broken})
    reported = subprocess.run(["systemd-analyze", "verify", *names], cwd=tmp_path, capture_output=True, text=True)
    assert "Restartt" in reported.stderr


def _compose() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    )


@pytest.mark.skipif(not _compose(), reason="docker with the compose plugin is not installed")
def test_docker_compose_accepts_the_compose_file() -> None:
    checked = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "deploy" / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={"RQFLOW_API_KEYS": "compose-check-key", "PATH": "/usr/local/bin:/usr/bin:/bin"},
    )
    assert checked.returncode == 0, checked.stderr
