"""`tunegate demo --pool N`: the demo over N vLLM OpenAI servers started on loopback.

Each server is vLLM's own OpenAI server on the demo base model with runtime LoRA updating and a
fresh API key; the gateway runs in pool mode in front of them and loads the demo tunes onto them
as requests need. The servers stop when the gateway does.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gateway.settings import EngineSettings

__all__ = ["start_servers", "stop_servers", "vllm_server_command"]


def vllm_server_command(engine: EngineSettings, port: int) -> list[str]:
    """vLLM's OpenAI server for the gateway's pool, with the engine settings' model and limits."""
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(engine.model_path), "--served-model-name", engine.served_model_name,
        "--dtype", engine.dtype, "--max-model-len", str(engine.max_model_len),
        "--enable-lora", "--max-loras", str(min(engine.max_loras, 2)),
        "--max-cpu-loras", str(engine.pool_adapters_per_server),
        "--max-lora-rank", str(engine.max_lora_rank),
        *(["--enforce-eager"] if engine.enforce_eager else []),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def vllm_server_env(api_key: str) -> dict[str, str]:
    """The key goes in the environment (`VLLM_API_KEY`), never on a command line."""
    return {
        **os.environ,
        "VLLM_API_KEY": api_key,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",  # the gateway loads tunes at run time
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }


def _die_with_parent() -> None:
    """In the child: SIGTERM when the gateway process ends, however it ends (Linux). A clean
    stop goes through `stop_servers`, called as the gateway shuts down."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_servers(
    engine: EngineSettings, n: int, log_dir: Path, timeout: float = 600
) -> tuple[list[subprocess.Popen[bytes]], list[str], str]:
    """Start `n` servers, wait until each answers `/health`; (processes, URLs, API key)."""
    key = "tg-upstream-" + secrets.token_urlsafe(16)
    log_dir.mkdir(parents=True, exist_ok=True)
    procs, urls = [], []
    for i in range(n):
        port = _free_port()
        with (log_dir / f"vllm-{i}.log").open("ab") as log:
            procs.append(
                subprocess.Popen(
                    vllm_server_command(engine, port),
                    env=vllm_server_env(key),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            )
        urls.append(f"http://127.0.0.1:{port}")
    print(f"Starting {n} vLLM servers (logs in {log_dir}/) ...", flush=True)
    deadline = time.monotonic() + timeout
    for proc, url in zip(procs, urls, strict=True):
        while True:
            if proc.poll() is not None:
                stop_servers(procs)
                raise RuntimeError(f"a vLLM server exited with {proc.returncode}; see {log_dir}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                stop_servers(procs)
                raise RuntimeError(f"the vLLM servers did not start; see {log_dir}")
            time.sleep(0.5)
    print(f"vLLM servers ready: {', '.join(urls)}", flush=True)
    return procs, urls, key


def stop_servers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
