"""The Helm chart (deploy/helm/tunegate): lint, render, Kubernetes schemas, and what it says.

Runs `helm` from the virtual environment (the `helm-binary` package in the dev extras) and
validates every rendered object against the Kubernetes JSON schemas of `kubernetes-validate`.
No cluster needed.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tunegate"
CONFIG_VALUES = CHART / "config-values.yaml"
SYNC_SCRIPT = ROOT / "deploy" / "helm" / "sync-config.py"
K8S_VERSION = "1.33.0"
NAMESPACE = "tunegate"
RELEASE = "tg"
FULLNAME = "tg-tunegate"
DEMO_KEY_SHA256 = "419dec7876460e0752c0b191d8bcc1ee9259bd2b80640d6eed3d2b0f991c7afb"

POOL = (
    "engine.kind=pool",
    "metrics.serviceMonitor.enabled=true",
    "autoscaling.enabled=true",
    "networkPolicy.enabled=true",
    "ingress.enabled=true",
    "models.existingClaim=tunegate-models",
)
EXTERNAL_REDIS = ("redis.enabled=false", "redis.externalUrl=redis://:s3cret@redis.example:6379/0")
EXISTING_SECRET = ("secrets.existingSecret=tunegate-keys", "engine.kind=pool")
SCENARIOS = {
    "defaults": (),
    "pool": POOL,
    "external-redis": EXTERNAL_REDIS,
    "existing-secret": EXISTING_SECRET,
}


def _helm() -> str:
    found = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")
    if found is None:
        pytest.fail("helm not found: install the dev extras (the helm-binary package)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_helm(), *args], capture_output=True, text=True, timeout=60, check=False)


@functools.cache
def render(*sets: str, files: tuple[str, ...] = ()) -> tuple[dict[str, Any], ...]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for s in sets:
        args += ["--set", s]
    for f in files:
        args += ["--set-file", f]
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(
        f"no {kind}/{name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    )


def kinds(docs: tuple[dict[str, Any], ...]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def env_value(c: dict[str, Any], name: str) -> str:
    return env(c)[name]["value"]


def volume_for_mount(deployment: dict[str, Any], mount_path: str) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    (mount,) = [
        m for c in spec["containers"] for m in c["volumeMounts"] if m["mountPath"] == mount_path
    ]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    return volume


def repo_tunes() -> dict[str, str]:
    return {
        p.parent.name: p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("tunes/*/tune.yaml"))
    }


def repo_policies() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("policies/*.yaml"))}


# --- lint and schemas -------------------------------------------------------------------------


@pytest.mark.parametrize("sets", [(), POOL], ids=["defaults", "pool-servicemonitor-hpa"])
def test_helm_lint(sets: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = _run(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _check_service_monitor(doc: dict[str, Any]) -> None:
    """ServiceMonitor is a CRD (not in the Kubernetes schemas): check its shape by hand."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = doc["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert isinstance(spec["selector"]["matchLabels"], dict) and spec["selector"]["matchLabels"]
    assert spec["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert spec["endpoints"]
    for ep in spec["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert isinstance(ep["port"], str) and ep["path"].startswith("/")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_document_is_valid_kubernetes(scenario: str) -> None:
    docs = render(*SCENARIOS[scenario])
    assert docs
    for doc in docs:
        assert doc["metadata"]["name"].startswith(FULLNAME), doc["metadata"]["name"]
        if doc["kind"] == "ServiceMonitor":
            _check_service_monitor(doc)
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --- what the default (in-process engine) install holds ---------------------------------------


def test_defaults_in_process_engine() -> None:
    docs = render()
    assert ("Deployment", f"{FULLNAME}-vllm") not in kinds(docs)
    assert ("HorizontalPodAutoscaler", FULLNAME) not in kinds(docs)
    assert ("ServiceMonitor", FULLNAME) not in kinds(docs)
    gw = find(docs, "Deployment", FULLNAME)
    assert gw["spec"]["replicas"] == 2
    c = container(gw, "gateway")
    assert c["command"] == ["tunegate", "serve"]
    assert env_value(c, "TUNEGATE_ENGINE__KIND") == "inprocess"
    assert env_value(c, "TUNEGATE_HOST") == "0.0.0.0"
    assert env_value(c, "TUNEGATE_REPLICAS") == "2"
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    # The in-process engine runs on the gateway pod's GPU.
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["cpu"]  # the HPA needs a CPU request

    svc = find(docs, "Service", FULLNAME)
    assert svc["spec"]["ports"][0]["port"] == 8000
    assert svc["spec"]["selector"].items() <= gw["spec"]["template"]["metadata"]["labels"].items()
    pdb = find(docs, "PodDisruptionBudget", FULLNAME)
    assert pdb["spec"]["selector"]["matchLabels"] == gw["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1

    redis = find(docs, "Deployment", f"{FULLNAME}-redis")
    assert container(redis, "redis")["image"].startswith("redis:7")
    assert find(docs, "Service", f"{FULLNAME}-redis")["spec"]["ports"][0]["port"] == 6379
    secret = find(docs, "Secret", FULLNAME)
    assert base64.b64decode(secret["data"]["redis-url"]).decode() == (
        f"redis://{FULLNAME}-redis:6379/0"
    )
    assert env(c)["TUNEGATE_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": FULLNAME,
        "key": "redis-url",
    }
    # No admin token given: the admin API stays off.
    assert "TUNEGATE_ADMIN_TOKEN" not in env(c)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_run_as_non_root_with_read_only_root(scenario: str) -> None:
    for doc in render(*SCENARIOS[scenario]):
        if doc["kind"] != "Deployment":
            continue
        spec = doc["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]


def test_gateway_writable_paths_are_volumes() -> None:
    gw = find(render(), "Deployment", FULLNAME)
    c = container(gw, "gateway")
    audit_dir = env_value(c, "TUNEGATE_AUDIT_DIR")
    assert "emptyDir" in volume_for_mount(gw, audit_dir)
    assert "emptyDir" in volume_for_mount(gw, "/tmp")
    claimed = find(render("audit.existingClaim=audit-logs"), "Deployment", FULLNAME)
    assert volume_for_mount(claimed, audit_dir)["persistentVolumeClaim"] == {
        "claimName": "audit-logs"
    }


# --- tunes and policies -----------------------------------------------------------------------


def test_configmaps_hold_the_repository_config_byte_for_byte() -> None:
    docs = render()
    tunes = repo_tunes()
    policies = repo_policies()
    assert tunes and "tenants.yaml" in policies
    tunes_cm = find(docs, "ConfigMap", f"{FULLNAME}-tunes")["data"]
    assert tunes_cm == {f"{name}.tune.yaml": text for name, text in tunes.items()}
    policies_cm = find(docs, "ConfigMap", f"{FULLNAME}-policies")["data"]
    assert policies_cm == policies

    gw = find(docs, "Deployment", FULLNAME)
    c = container(gw, "gateway")
    tunes_dir = env_value(c, "TUNEGATE_TUNES_DIR")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for name in tunes:
        # One file per tune, so relative adapter paths resolve from <tunes dir>/<name>/.
        mount = mounts[f"{tunes_dir}/{name}/tune.yaml"]
        assert mount["subPath"] == f"{name}.tune.yaml" and mount["readOnly"] is True
        assert volume_for_mount(gw, mount["mountPath"])["configMap"]["name"] == f"{FULLNAME}-tunes"
    policies_dir = env_value(c, "TUNEGATE_POLICIES_DIR")
    assert volume_for_mount(gw, policies_dir)["configMap"]["name"] == f"{FULLNAME}-policies"


def test_repository_adapter_paths_land_on_the_models_volume() -> None:
    docs = render("models.existingClaim=tunegate-models")
    gw = find(docs, "Deployment", FULLNAME)
    c = container(gw, "gateway")
    tunes_dir = Path(env_value(c, "TUNEGATE_TUNES_DIR"))
    models = next(m for m in c["volumeMounts"] if m["name"] == "models")
    assert models["readOnly"] is True
    assert volume_for_mount(gw, models["mountPath"])["persistentVolumeClaim"]["claimName"] == (
        "tunegate-models"
    )
    root = Path(models["mountPath"])
    for name, text in repo_tunes().items():
        adapter = Path(yaml.safe_load(text)["adapter_path"])
        resolved = Path(*(tunes_dir / name / adapter).parts)
        # Resolve `..` lexically, as the real (non-symlinked) folder layout does.
        parts: list[str] = []
        for part in resolved.parts:
            if part == "..":
                parts.pop()
            else:
                parts.append(part)
        assert Path(*parts).is_relative_to(root), (name, Path(*parts))
    assert Path(env_value(c, "TUNEGATE_ENGINE__MODEL_PATH")).is_relative_to(root)


def test_values_add_replace_and_drop_config(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants: []\n  # odd: spacing, 'quotes' and \"more\"\t\n", encoding="utf-8")
    docs = render("tunes.legal=", files=(f"policies.tenants\\.yaml={tenants}",))
    tunes_cm = find(docs, "ConfigMap", f"{FULLNAME}-tunes")["data"]
    assert "legal.tune.yaml" not in tunes_cm and "support.tune.yaml" in tunes_cm
    assert find(docs, "ConfigMap", f"{FULLNAME}-policies")["data"] == {
        "tenants.yaml": tenants.read_text(encoding="utf-8")
    }
    gw = container(find(docs, "Deployment", FULLNAME), "gateway")
    assert not any("/legal/" in m["mountPath"] for m in gw["volumeMounts"])

    empty = render("config.bundled=false")
    assert not find(empty, "ConfigMap", f"{FULLNAME}-tunes").get("data")


def test_config_change_rolls_the_pods(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants: []\n", encoding="utf-8")

    def annotations(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
        return find(docs, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["annotations"]

    base = annotations(render())
    changed = annotations(render(files=(f"policies.tenants\\.yaml={tenants}",)))
    assert base["checksum/config"] != changed["checksum/config"]
    assert base["checksum/secret"] == changed["checksum/secret"]
    rekeyed = annotations(render("secrets.adminToken=another-token"))
    assert base["checksum/secret"] != rekeyed["checksum/secret"]


def _load_sync_script() -> Any:
    spec = importlib.util.spec_from_file_location("tunegate_sync_config", SYNC_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_values_are_in_sync_with_the_repository() -> None:
    sync = _load_sync_script()
    assert CONFIG_VALUES.read_text(encoding="utf-8") == sync.render(ROOT), (
        "deploy/helm/tunegate/config-values.yaml is out of date: "
        "run python deploy/helm/sync-config.py"
    )
    values = yaml.safe_load(CONFIG_VALUES.read_text(encoding="utf-8"))
    assert values == {"tunes": repo_tunes(), "policies": repo_policies()}
    proc = subprocess.run(
        [sys.executable, str(SYNC_SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_sync_script_output_round_trips_awkward_text(tmp_path: Path) -> None:
    sync = _load_sync_script()
    (tmp_path / "tunes" / "a").mkdir(parents=True)
    (tmp_path / "policies").mkdir()
    awkward = "name: a  \n\n\tdescription: 'x'  # trailing spaces, a tab, no final newline"
    (tmp_path / "tunes" / "a" / "tune.yaml").write_text(awkward, encoding="utf-8")
    (tmp_path / "policies" / "tenants.yaml").write_text("tenants: []\n\n\n", encoding="utf-8")
    values = yaml.safe_load(sync.render(tmp_path))
    assert values == {"tunes": {"a": awkward}, "policies": {"tenants.yaml": "tenants: []\n\n\n"}}


# --- secrets ----------------------------------------------------------------------------------

SECRET_SETS = (
    "secrets.adminToken=admin-tok-3c1f9a",
    "secrets.upstreamApiKey=upstream-key-77d2b0",
    "engine.kind=pool",
    *EXTERNAL_REDIS,
)
SECRET_VALUES = {
    "admin-token": "admin-tok-3c1f9a",
    "upstream-api-key": "upstream-key-77d2b0",
    "redis-url": "redis://:s3cret@redis.example:6379/0",
}


def test_secrets_never_appear_in_plain_text() -> None:
    docs = render(*SECRET_SETS)
    for doc in docs:
        text = json.dumps(doc)
        for value in SECRET_VALUES.values():
            assert value not in text, (doc["kind"], doc["metadata"]["name"])
            assert "s3cret" not in text
    secret = find(docs, "Secret", FULLNAME)
    assert "stringData" not in secret
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == SECRET_VALUES

    gw = container(find(docs, "Deployment", FULLNAME), "gateway")
    refs = {
        "TUNEGATE_ADMIN_TOKEN": "admin-token",
        "TUNEGATE_ENGINE__UPSTREAM_API_KEY": "upstream-api-key",
        "TUNEGATE_REDIS_URL": "redis-url",
    }
    for name, key in refs.items():
        assert "value" not in env(gw)[name]
        assert env(gw)[name]["valueFrom"]["secretKeyRef"] == {"name": FULLNAME, "key": key}
    vllm = container(find(docs, "Deployment", f"{FULLNAME}-vllm"), "vllm")
    assert env(vllm)["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": FULLNAME,
        "key": "upstream-api-key",
    }
    assert "--api-key=$(VLLM_API_KEY)" in vllm["args"]


def test_pool_mode_generates_an_upstream_key_when_none_is_given() -> None:
    secret = find(render("engine.kind=pool"), "Secret", FULLNAME)
    assert len(base64.b64decode(secret["data"]["upstream-api-key"])) >= 32


def test_existing_secret() -> None:
    docs = render(*EXISTING_SECRET)
    assert not [d for d in docs if d["kind"] == "Secret"]
    gw_dep = find(docs, "Deployment", FULLNAME)
    assert "checksum/secret" not in gw_dep["spec"]["template"]["metadata"]["annotations"]
    gw = env(container(gw_dep, "gateway"))
    assert gw["TUNEGATE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "tunegate-keys",
        "key": "admin-token",
        "optional": True,
    }
    assert gw["TUNEGATE_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "tunegate-keys"
    assert gw["TUNEGATE_ENGINE__UPSTREAM_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "tunegate-keys",
        "key": "upstream-api-key",
    }
    vllm = env(container(find(docs, "Deployment", f"{FULLNAME}-vllm"), "vllm"))
    assert vllm["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "tunegate-keys"


def test_external_redis() -> None:
    docs = render(*EXTERNAL_REDIS)
    assert ("Deployment", f"{FULLNAME}-redis") not in kinds(docs)
    assert ("Service", f"{FULLNAME}-redis") not in kinds(docs)
    secret = find(docs, "Secret", FULLNAME)
    assert base64.b64decode(secret["data"]["redis-url"]).decode() == SECRET_VALUES["redis-url"]


# --- pool mode --------------------------------------------------------------------------------


def test_pool_mode_vllm_deployment_and_headless_service() -> None:
    docs = render(*POOL)
    vllm_dep = find(docs, "Deployment", f"{FULLNAME}-vllm")
    vllm = container(vllm_dep, "vllm")
    assert vllm["image"].startswith("vllm/vllm-openai:")
    assert vllm["command"] == ["vllm", "serve"]
    args = vllm["args"]
    assert args[0] == "/app/build/demo/base"
    assert "--enable-lora" in args and "--max-lora-rank=16" in args
    assert "--port=8000" in args and "--served-model-name=tunegate-demo-base" in args
    assert env_value(vllm, "VLLM_ALLOW_RUNTIME_LORA_UPDATING") == "True"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert vllm[probe]["httpGet"]["path"] == "/health"

    headless = find(docs, "Service", f"{FULLNAME}-vllm-headless")
    assert headless["spec"]["clusterIP"] == "None"
    pod_labels = vllm_dep["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= pod_labels.items()

    gw_dep = find(docs, "Deployment", FULLNAME)
    gw = container(gw_dep, "gateway")
    assert env_value(gw, "TUNEGATE_ENGINE__KIND") == "pool"
    assert env_value(gw, "TUNEGATE_ENGINE__POOL_DNS") == (
        f"{FULLNAME}-vllm-headless.{NAMESPACE}.svc.cluster.local:8000"
    )
    assert "nvidia.com/gpu" not in gw["resources"].get("limits", {})
    # The same models volume at the same path in both: adapter paths mean the same thing.
    gw_models = next(m for m in gw["volumeMounts"] if m["name"] == "models")
    vllm_models = next(m for m in vllm["volumeMounts"] if m["name"] == "models")
    assert gw_models["mountPath"] == vllm_models["mountPath"] == "/app/build"
    assert volume_for_mount(vllm_dep, "/app/build")["persistentVolumeClaim"]["claimName"] == (
        "tunegate-models"
    )
    assert volume_for_mount(vllm_dep, "/dev/shm")["emptyDir"]["medium"] == "Memory"

    # Only the gateway may reach the vLLM servers and Redis.
    for name in (f"{FULLNAME}-vllm", f"{FULLNAME}-redis"):
        policy = find(docs, "NetworkPolicy", name)
        (rule,) = policy["spec"]["ingress"]
        assert (
            rule["from"][0]["podSelector"]["matchLabels"]
            == gw_dep["spec"]["selector"]["matchLabels"]
        )


def test_hpa_targets_the_gateway_deployment() -> None:
    docs = render(*POOL)
    gw = find(docs, "Deployment", FULLNAME)
    hpa = find(docs, "HorizontalPodAutoscaler", FULLNAME)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": gw["metadata"]["name"],
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert "replicas" not in gw["spec"]  # the HPA owns the count
    # The local rate-limit fallback divides by the most replicas there can be.
    assert env_value(container(gw, "gateway"), "TUNEGATE_REPLICAS") == str(
        hpa["spec"]["maxReplicas"]
    )


def test_service_monitors_scrape_metrics() -> None:
    docs = render(*POOL)
    for name, service in (
        (FULLNAME, FULLNAME),
        (f"{FULLNAME}-vllm", f"{FULLNAME}-vllm-headless"),
    ):
        sm = find(docs, "ServiceMonitor", name)
        (endpoint,) = sm["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        svc = find(docs, "Service", service)
        assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        others = [
            d
            for d in docs
            if d["kind"] == "Service"
            and d["metadata"]["name"] != service
            and sm["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()
        ]
        assert not others


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("engine.kind=remote",), "engine"),
        (("gateway.workers=2",), "workers"),
        (("redis.enabled=false",), "Redis"),
        (("redis.externalUrl=redis://elsewhere:6379/0",), "redis.enabled=false"),
        (("gateway.env.ADMIN_TOKEN=plain",), "ADMIN_TOKEN"),
    ],
)
def test_bad_values_are_refused(sets: tuple[str, ...], message: str) -> None:
    args = ["template", RELEASE, str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = _run(*args)
    assert proc.returncode != 0
    assert message in proc.stderr


def _notes(tmp_path: Path, *sets: str) -> str:
    """NOTES.txt as `helm install` prints it (rendered through a probe template in a copy)."""
    chart = tmp_path / "tunegate"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n"
        '  notes: {{ include (print $.Template.BasePath "/NOTES.txt") . | toJson }}\n',
        encoding="utf-8",
    )
    args = ["template", RELEASE, str(chart), "-n", NAMESPACE, "--show-only"]
    args += ["templates/zz-notes-probe.yaml"]
    for s in sets:
        args += ["--set", s]
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr
    return str(yaml.safe_load(proc.stdout)["data"]["notes"])


def test_notes(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    assert f"port-forward svc/{FULLNAME} 8000:8000" in notes
    assert "Tunes: " + ", ".join(sorted(repo_tunes())) in notes
    if DEMO_KEY_SHA256 in repo_policies().get("tenants.yaml", ""):
        assert "demo tenant's key" in notes
    assert "models.existingClaim is empty" in notes
    assert "admin API is off" in notes
    own = _notes(
        tmp_path / "own",
        "models.existingClaim=m",
        "secrets.adminToken=t",
        "policies.tenants\\.yaml=x: 1",
    )
    assert "demo tenant" not in own and "existingClaim is empty" not in own
    assert "admin API is off" not in own
