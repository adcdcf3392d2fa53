"""Live gateway processes on the real vLLM engine (CPU build) and the demo model and tunes.

The demo build is made once (cached in build/demo by its input hash); gateway processes are
started on free loopback ports with their own tenants and keys.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gateway.auth import hash_key, new_key
from loadtests.background import run_in_background

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "demo"
READY_TIMEOUT_S = 300
LIVE_DEFAULT = """default:
  safety:
    input: [{id: secrets-in, kind: api_key, action: block}]
    output:
      - {id: email-out, kind: email, action: redact}
      - {id: no-paris, kind: deny_terms, terms: [Paris], action: block}
"""


@dataclass
class LiveGateway:
    url: str
    keys: dict[str, str]
    admin_token: str
    tunes_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def headers(self, tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run the `tunegate` CLI against this gateway's admin API."""
        env = {
            **os.environ,
            "TUNEGATE_URL": self.url,
            "TUNEGATE_ADMIN_TOKEN": self.admin_token,
            **{k: v for k, v in self.env.items() if k.endswith(("_DIR", "MODEL_PATH"))},
        }
        # A CLI call that runs past its time dumps every thread's stack (faulthandler on
        # SIGABRT) so the failure says where it stood, next to the gateway's log.
        env["PYTHONFAULTHANDLER"] = "1"
        cmd = [sys.executable, "-m", "gateway", *args]
        with subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGABRT)
                out, err = proc.communicate()
                raise AssertionError(
                    f"`tunegate {' '.join(args)}` ran past {timeout}s.\nstdout: {out}\n"
                    f"stderr: {err}\nthe gateway's log:\n{self.log_tail()}"
                ) from None
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def catalogue_copy(dest: Path) -> Path:
    """The repository's catalogue with absolute adapter paths, in a folder tests may add to."""
    for manifest in sorted((ROOT / "tunes").glob("*/tune.yaml")):
        target = dest / manifest.parent.name
        target.mkdir(parents=True, exist_ok=True)
        text = manifest.read_text().replace(
            "adapter_path: ../../build/demo", f"adapter_path: {BUILD}"
        )
        (target / "tune.yaml").write_text(text)
    return dest


def policy_text(keys: dict[str, str], extra: str = "", default: str = "") -> str:
    return (
        default + "tenants:\n"
        f"  - name: acme\n    keys: [{{id: acme-1, sha256: {hash_key(keys['acme'])}}}]\n"
        "    tunes: [support, legal, extract]\n    default_tune: support\n"
        f"  - name: narrow\n    keys: [{{id: narrow-1, sha256: {hash_key(keys['narrow'])}}}]\n"
        "    tunes: [legal]\n    default_tune: legal\n" + extra
    )


def write_setup(
    root: Path, keys: dict[str, str], extra_policy: str = "", default: str = ""
) -> tuple[Path, Path]:
    tunes = catalogue_copy(root / "tunes")
    policies = root / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "tenants.yaml").write_text(policy_text(keys, extra_policy, default))
    return tunes, policies


@contextmanager
def gateway_process(
    root: Path,
    tunes: Path,
    policies: Path,
    keys: dict[str, str],
    admin: str,
    extra_env: dict[str, str] | None = None,
    name: str = "gateway",
) -> Iterator[LiveGateway]:
    port = free_port()
    env = {
        **os.environ,
        "TUNEGATE_PORT": str(port),
        "TUNEGATE_TUNES_DIR": str(tunes),
        "TUNEGATE_POLICIES_DIR": str(policies),
        "TUNEGATE_ADMIN_TOKEN": admin,
        "TUNEGATE_ENGINE__MODEL_PATH": str(BUILD / "base"),
        "TUNEGATE_MAX_BODY_BYTES": "65536",
        "TUNEGATE_AUDIT_DIR": str(root / f"audit-{name}"),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        **(extra_env or {}),
    }
    log_path = root / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run_in_background(proc.pid)
    gw = LiveGateway(
        f"http://127.0.0.1:{port}",
        keys,
        admin,
        tunes,
        log_path,
        {k: v for k, v in env.items() if k.startswith("TUNEGATE_")},
        proc,
    )
    try:
        wait_ready(gw, proc)
        yield gw
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def wait_ready(gw: LiveGateway, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"gateway exited with {proc.returncode}:\n{gw.log_tail()}")
        try:
            if httpx.get(f"{gw.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gateway not ready after {READY_TIMEOUT_S}s:\n{gw.log_tail()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def live_gateway(
    demo_build: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    root = tmp_path_factory.mktemp("live")
    keys = {"acme": new_key(), "narrow": new_key()}
    tunes, policies = write_setup(root, keys, default=LIVE_DEFAULT)
    debug = {"TUNEGATE_LOG_LEVEL": "debug"}  # the secret canary reads this gateway's log
    with gateway_process(root, tunes, policies, keys, new_key(), extra_env=debug) as gw:
        yield gw
