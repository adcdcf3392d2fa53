"""LiteLLM's proxy as a point of comparison for `bench_overhead.py`, in its own throwaway venv.

`ensure_litellm()` installs `litellm[proxy]` (pinned: later releases depend on a package the
registry does not serve) into `build/bench/litellm-venv` once and reuses it afterwards; it never
touches the project's venv. `start_proxy()` writes a config (one worker, a master key, no
database, the given models pointing at vLLM-API servers), starts `litellm` on loopback with
telemetry, the cost-map download and logging off, and waits for `/health/liveliness`.

    .venv/bin/python loadtests/litellm_env.py   # install (or check) only, and print the version
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "build" / "bench" / "litellm-venv"
VERSION = "1.80.0"
REQUIREMENT = f"litellm[proxy]=={VERSION}"


_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {"uvicorn.access": {"level": "WARNING", "propagate": False}},
}


class LiteLLMUnavailable(RuntimeError):
    """LiteLLM could not be installed or started; the message says why."""


def installed_version(venv: Path = VENV) -> str | None:
    python = venv / "bin" / "python"
    if not (python.exists() and (venv / "bin" / "litellm").exists()):
        return None
    r = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        return None
    return r.stdout.strip() or None


def ensure_litellm(venv: Path = VENV, *, log: Callable[[str], object] = print) -> Path:
    """The `litellm` executable of the pinned release, installing it first where needed."""
    if installed_version(venv) == VERSION:
        return venv / "bin" / "litellm"
    venv.parent.mkdir(parents=True, exist_ok=True)
    install_log = venv.parent / "litellm-install.log"
    log(f"installing {REQUIREMENT} into {venv.relative_to(ROOT)} (once; log: {install_log.name})")
    steps = [
        ["python3", "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", REQUIREMENT],
    ]
    with install_log.open("w") as out:
        for cmd in steps:
            r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
            if r.returncode != 0:
                raise LiteLLMUnavailable(
                    f"`{' '.join(cmd[-3:])}` failed: {_last_error(install_log)}"
                )
    if installed_version(venv) != VERSION:
        raise LiteLLMUnavailable(f"{REQUIREMENT} did not install ({install_log})")
    return venv / "bin" / "litellm"


def _last_error(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1].strip()[:200]


def write_config(path: Path, models: dict[str, tuple[str, str]], api_key: str, master: str) -> None:
    """`models`: the name clients ask for -> (the upstream's model id, its `/v1` base URL)."""
    lines = ["model_list:"]
    for name, (upstream_model, api_base) in models.items():
        lines += [
            f"  - model_name: {name}",
            "    litellm_params:",
            f'      model: "openai/{upstream_model}"',
            f'      api_base: "{api_base}"',
            f'      api_key: "{api_key}"',
        ]
    lines += [
        "litellm_settings:",
        "  telemetry: false",
        "  drop_params: true",
        "  set_verbose: false",
        "  json_logs: false",
        "general_settings:",
        f'  master_key: "{master}"',
        "  disable_spend_logs: true",
        "  disable_adding_master_key_hash_to_db: true",
    ]
    path.write_text("\n".join(lines) + "\n")


def proxy_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DATABASE_"))}
    env.update(
        {
            "LITELLM_LOG": "ERROR",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no cost-map download at start
            "LITELLM_TELEMETRY": "False",
            "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
            "DISABLE_SCHEMA_UPDATE": "True",
            "STORE_MODEL_IN_DB": "False",
            "NO_DOCS": "True",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env


def start_proxy(
    exe: Path,
    config: Path,
    port: int,
    log_path: Path,
    *,
    timeout: float = 180,
) -> subprocess.Popen[bytes]:
    """Start the proxy (one uvicorn worker) and wait until it answers its liveliness probe.

    Uvicorn's access log is off (as it is in the gateway): a log line per request is a cost of
    the deployment, not of the proxy."""
    log_config = config.parent / "litellm-logging.json"
    log_config.write_text(json.dumps(_LOGGING))
    cmd = [
        str(exe),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
        "--log_config",
        str(log_config),
    ]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=config.parent,
            env=proxy_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/health/liveliness"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise LiteLLMUnavailable(f"the proxy exited ({proc.returncode}): {' | '.join(tail)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    stop(proc)
    raise LiteLLMUnavailable(f"the proxy did not answer {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    try:
        print(ensure_litellm(), installed_version())
    except LiteLLMUnavailable as exc:
        sys.exit(f"LiteLLM unavailable: {exc}")
