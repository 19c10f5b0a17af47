"""`make run`: the embedded Redis (unless RQFLOW_REDIS_URL is set), then the Procfile's processes,
all under supervisord, which restarts whatever dies and stops everything on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from app.embedded import redis_server_binary
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def read_procfile(path: Path) -> dict[str, str]:
    processes = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            processes[name.strip()] = command.strip()
    return processes


def program(name: str, command: str, priority: int) -> str:
    # Workers get SIGTERM alone, not their work-horses: they stop taking tasks and give the running
    # one RQFLOW_SHUTDOWN_GRACE_S to finish before requeueing it; whatever is left is killed as a group.
    as_group = "false" if name == "worker" else "true"
    # supervisord splits `command` itself and interpolates %(...)s, so hand the Procfile line to a
    # shell (for its $VARIABLES) with exec, and double every %.
    shell = f"/bin/sh -c {shlex.quote('exec ' + command)}".replace("%", "%%")
    return f"""
[program:{name}]
command={shell}
directory={ROOT}
priority={priority}
autostart=true
autorestart=true
startsecs=1
startretries=1000
stopasgroup={as_group}
killasgroup=true
stopwaitsecs=40
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
redirect_stderr=true
"""


def supervisord_conf(programs: dict[str, str], var_dir: Path) -> str:
    conf = f"""[supervisord]
nodaemon=true
logfile={var_dir / "supervisord.log"}
pidfile={var_dir / "supervisord.pid"}
childlogdir={var_dir}
loglevel=info
"""
    for name, command in programs.items():
        conf += program(name, command, priority=1 if name == "redis" else 10)
    return conf


def main() -> None:
    settings = Settings()
    var_dir = settings.var_dir if settings.var_dir.is_absolute() else Path.cwd() / settings.var_dir
    var_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    programs: dict[str, str] = {}
    if settings.redis_url is None:
        redis_conf = ROOT / "deploy" / "redis.conf"
        programs["redis"] = (
            f"{shlex.quote(redis_server_binary())} {shlex.quote(str(redis_conf))}"
            f" --port {settings.embedded_redis_port} --dir {shlex.quote(str(var_dir))}"
        )
        env["RQFLOW_REDIS_URL"] = settings.effective_redis_url
    procfile = read_procfile(ROOT / "Procfile")
    unknown = [name for name in settings.processes if name not in procfile]
    if unknown:
        sys.exit(f"RQFLOW_PROCESSES names processes the Procfile does not have: {', '.join(unknown)}")
    programs.update((name, procfile[name]) for name in settings.processes)
    conf = var_dir / "supervisord.conf"
    conf.write_text(supervisord_conf(programs, var_dir))
    # The Procfile's commands (python, rq, rqscheduler) come from this virtualenv.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    print(
        f"rqflow: API on http://{settings.host}:{settings.port}, Redis at {env.get('RQFLOW_REDIS_URL')}",
        flush=True,
    )
    os.execve(sys.executable, [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], env)


if __name__ == "__main__":
    main()
