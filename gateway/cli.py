"""The `tunegate` command: serve the gateway, build the demo, hash keys."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]


def _serve(
    args: argparse.Namespace, *, demo: bool = False, on_stop: Callable[[], None] | None = None
) -> int:
    from gateway.settings import Settings

    settings = Settings()
    updates: dict[str, object] = {}
    if args.port is not None:
        updates["port"] = args.port
    if getattr(args, "workers", None):
        updates["workers"] = args.workers
    if demo and "TUNEGATE_LOG_FORMAT" not in os.environ:
        updates["log_format"] = "text"  # the demo is read by people
    settings = settings.model_copy(update=updates)
    if settings.workers > 1 and settings.engine.kind == "inprocess":
        print(
            "tunegate: several workers need a remote engine (TUNEGATE_ENGINE__KIND=pool); "
            "the in-process engine lives in one process",
            file=sys.stderr,
        )
        return 2
    if settings.workers > 1:
        _multiprocess_metrics()  # before anything imports prometheus_client
    import uvicorn

    from gateway.api import create_app
    from gateway.api.door import HTTP_PROTOCOL
    from gateway.observability.logs import configure_logging
    from gateway.yamlconfig import ConfigError

    log_config = configure_logging(settings.log_level, settings.log_format)
    if settings.log_format == "json":
        _vllm_logs_as_json(log_config)
    try:
        # create_app validates the config files: a bad one fails here
        app = create_app(settings, on_stop=on_stop, drain_on_sigterm=True, freeze_heap=True)
    except ConfigError as exc:
        print(f"tunegate: {exc}", file=sys.stderr)
        return 2
    if demo:
        from gateway.demo import watch_ready

        if settings.host not in ("127.0.0.1", "localhost", "::1"):
            print("tunegate: the demo serves on loopback only", file=sys.stderr)
            return 2
        watch_ready(settings.host, settings.port)
    common: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": log_config,
        "access_log": False,
        "http": HTTP_PROTOCOL,  # refusals at the door, without the app
        "timeout_graceful_shutdown": 30,
    }
    from gateway.listen import listening_sockets

    try:  # several sockets on the port: a storm of new connections is accepted at once
        sockets = listening_sockets(settings.host, settings.port)
    except OSError as exc:
        print(f"tunegate: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("gateway").info(
        "listening",
        extra={
            "url": f"http://{settings.host}:{sockets[0].getsockname()[1]}",
            "sockets": len(sockets),
            "workers": settings.workers,
        },
    )
    try:
        if settings.workers > 1:  # each worker serves on every socket (what uvicorn.run does)
            from uvicorn.supervisors import Multiprocess

            os.environ["TUNEGATE_PORT"] = str(settings.port)
            factory = "gateway.api.factory:app_from_env"
            config = uvicorn.Config(factory, factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
            Multiprocess(config, sockets=sockets).run()
            return 0
        server = uvicorn.Server(uvicorn.Config(app, **common))  # type: ignore[arg-type]
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        return 0
    finally:
        for sock in sockets:
            sock.close()
    if not server.started:
        return 3  # the app did not start (uvicorn's own start-up failure code)
    return 0


def _multiprocess_metrics() -> None:
    """Workers share metrics through files in `PROMETHEUS_MULTIPROC_DIR` (emptied at start)."""
    import shutil
    import tempfile

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tunegate-metrics-")


def _vllm_logs_as_json(log_config: dict[str, object]) -> None:
    """vLLM (and its engine-core process) log through the same JSON configuration."""
    import json
    import tempfile

    if "VLLM_LOGGING_CONFIG_PATH" in os.environ:
        return
    with tempfile.NamedTemporaryFile(
        "w", prefix="tunegate-logging-", suffix=".json", delete=False
    ) as fh:
        json.dump(log_config, fh)
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = fh.name


def _demo(args: argparse.Namespace) -> int:
    if not args.pool:
        return _serve(args, demo=True)
    import json
    from pathlib import Path

    from gateway.demo_pool import start_servers, stop_servers
    from gateway.settings import Settings

    engine = Settings().engine
    procs, urls, key = start_servers(engine, args.pool, Path("build/demo-pool"))
    os.environ.update(
        {
            "TUNEGATE_ENGINE__KIND": "pool",
            "TUNEGATE_ENGINE__POOL_URLS": json.dumps(urls),
            "TUNEGATE_ENGINE__UPSTREAM_API_KEY": key,
        }
    )
    try:
        return _serve(args, demo=True, on_stop=lambda: stop_servers(procs))
    finally:
        stop_servers(procs)  # when the gateway did not start


def _build_demo(args: argparse.Namespace) -> int:
    from gateway.tunebuild.demo import main_build

    return main_build(["--out", args.out] + (["--force"] if args.force else []))


def _hash_key(args: argparse.Namespace) -> int:
    from gateway.auth import hash_key, new_key

    key = args.key or new_key()
    if not args.key:
        print(f"key (shown once): {key}")
    print(f"sha256: {hash_key(key)}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from gateway.catalogue import TuneCatalogue
    from gateway.policy import load_policy
    from gateway.settings import Settings
    from gateway.yamlconfig import ConfigError

    settings = Settings()
    try:
        catalogue = TuneCatalogue.load(settings.tunes_dir, settings.engine.served_model_name)
        policy = load_policy(settings.policies_dir, set(catalogue.names()))
    except ConfigError as exc:
        print(f"tunegate: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {len(catalogue)} tunes, {len(policy.tenants)} tenants")
    return 0


def _verify_audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.audit.verify import verify_lines, verify_path

    if args.path.startswith(("redis://", "rediss://", "unix://")):
        import asyncio

        from gateway.audit.redis_sink import read_stream

        if not args.stream:
            print("tunegate: --stream is required with a Redis URL", file=sys.stderr)
            return 2
        result = verify_lines(args.stream, asyncio.run(read_stream(args.path, args.stream)))
    else:
        result = verify_path(Path(args.path))
    print(result.message, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunegate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the gateway (settings from TUNEGATE_* variables)")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=None, help="worker processes")
    serve.set_defaults(func=_serve)
    run_demo = sub.add_parser("demo", help="serve the demo model and tunes on loopback")
    run_demo.add_argument("--port", type=int, default=None)
    run_demo.add_argument(
        "--pool", type=int, default=0, metavar="N", help="start N vLLM servers; serve over them"
    )
    run_demo.set_defaults(func=_demo)
    demo = sub.add_parser("build-demo", help="build the demo base model and tunes (cached)")
    demo.add_argument("--out", default="build/demo")
    demo.add_argument("--force", action="store_true")
    demo.set_defaults(func=_build_demo)
    keys = sub.add_parser("hash-key", help="hash an API key for policies/ (or make a new one)")
    keys.add_argument("key", nargs="?", default=None)
    keys.set_defaults(func=_hash_key)
    validate = sub.add_parser("validate", help="validate tunes/ and policies/")
    validate.set_defaults(func=_validate)
    from gateway.cli_admin import add_admin_commands, run_admin

    audit = sub.add_parser("audit", help="audit log tools").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser("verify", help="check the hash chain; exit 1 at the first break")
    verify.add_argument("path", help="the audit folder, one audit-*.jsonl file, or a Redis URL")
    verify.add_argument("--stream", default=None, help="the audit stream (with a Redis URL)")
    verify.set_defaults(func=_verify_audit)

    add_admin_commands(sub)
    policy = sub.add_parser("policy", help="validate or reload the policy").add_subparsers(
        dest="policy_command", required=True
    )
    policy.add_parser("validate", help="validate tunes/ and policies/ on disk").set_defaults(
        func=_validate
    )
    reload = policy.add_parser("reload", help="reload the policy on every replica")
    reload.add_argument(
        "--url",
        default=os.environ.get(
            "TUNEGATE_URL", f"http://127.0.0.1:{os.environ.get('TUNEGATE_PORT', '8000')}"
        ),
    )
    reload.add_argument("--admin-token", default=os.environ.get("TUNEGATE_ADMIN_TOKEN"))
    reload.set_defaults(func=run_admin, admin_command="policy-reload")
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
