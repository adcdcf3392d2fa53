"""Operator commands (`tunegate tenants|keys|policy ...`): the admin API, or Redis with --redis."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

__all__ = ["CliError", "add_admin_commands"]


class CliError(Exception):
    """A clear, one-line reason to exit non-zero."""


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[str(r.get(c, "")) if r.get(c) is not None else "-" for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


class AdminApi:
    def __init__(self, url: str, token: str | None) -> None:
        if not token:
            raise CliError("no admin token: set TUNEGATE_ADMIN_TOKEN or pass --admin-token")
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "X-Tunegate-Actor": getpass.getuser(),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = exc.reason
            raise CliError(f"{exc.code}: {message}") from None
        except urllib.error.URLError as exc:
            raise CliError(f"cannot reach the gateway at {self.url} ({exc.reason})") from None


class RedisAdmin:
    """The same operations straight on the shared store (no gateway needed)."""

    def __init__(self, url: str) -> None:
        from gateway.catalogue import TuneCatalogue
        from gateway.policy import load_policy
        from gateway.settings import Settings
        from gateway.store.redis_store import RedisStore
        from gateway.yamlconfig import ConfigError

        settings = Settings()
        try:
            catalogue = TuneCatalogue.load(settings.tunes_dir, settings.engine.served_model_name)
            self.policy = load_policy(settings.policies_dir, set(catalogue.names()))
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        self.base_model = settings.engine.served_model_name
        self.store = RedisStore(url, prefix=settings.redis_prefix, op_timeout_s=2.0)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        from gateway.store import StoreUnavailable

        try:
            return asyncio.run(self._call(method, path, body or {}))
        except StoreUnavailable as exc:
            raise CliError(f"cannot reach Redis ({exc})") from None

    async def _call(self, method: str, path: str, body: dict[str, Any]) -> Any:
        import time

        from gateway.auth import hash_key, new_key
        from gateway.store import BindingChange, StoredKey

        parts = path.strip("/").split("/")[1:]  # drop "admin"
        try:
            if parts == ["tenants"]:
                return {"data": [await self._tenant(n) for n in sorted(self.policy.tenants)]}
            tenant = self.policy.tenants.get(parts[1]) if len(parts) > 1 else None
            if tenant is None:
                raise CliError(f"404: No tenant named `{parts[1] if len(parts) > 1 else ''}`.")
            if len(parts) == 2:
                view = await self._tenant(tenant.name)
                view["keys"] = [vars_key(k) for k in await self.store.list_keys(tenant.name)]
                view["switches"] = [
                    {"from": c.from_tune, "to": c.to_tune, "actor": c.actor, "at": c.at}
                    for c in await self.store.binding_history(tenant.name)
                ]
                return view
            if parts[2] == "tune":
                tune = body["tune"]
                if tune != self.base_model and tune not in tenant.tunes:
                    raise CliError(f"400: Tenant `{tenant.name}` may not use tune `{tune}`.")
                before = await self.store.get_binding(tenant.name) or tenant.default_tune
                change = BindingChange(tenant.name, before, tune, getpass.getuser(), time.time())
                await self.store.set_binding(change)
                await self.store.publish({"kind": "binding", "tenant": tenant.name})
                return {"tenant": tenant.name, "from": before, "to": tune, "actor": change.actor}
            keys = await self.store.list_keys(tenant.name)
            if method == "GET":
                return {"data": [vars_key(k) for k in keys]}
            if method == "POST":
                key_id = body.get("id") or f"{tenant.name}-{len(keys) + 1}"
                if any(k.key_id == key_id for k in keys):
                    raise CliError(f"400: Tenant `{tenant.name}` already has a key `{key_id}`.")
                key = new_key()
                await self.store.put_key(StoredKey(hash_key(key), key_id, tenant.name, time.time()))
                return {"id": key_id, "tenant": tenant.name, "key": key}
            match = [k for k in keys if k.key_id == parts[3] and not k.revoked]
            if not match:
                raise CliError(f"404: Tenant `{tenant.name}` has no active key `{parts[3]}`.")
            await self.store.revoke_key(tenant.name, parts[3])
            await self.store.publish({"kind": "key", "hash": match[0].key_hash})
            return {"id": parts[3], "tenant": tenant.name, "revoked": True}
        finally:
            await self.store.close()

    async def _tenant(self, name: str) -> dict[str, Any]:
        t = self.policy.tenants[name]
        bound = await self.store.get_binding(name)
        return {
            "name": name,
            "tune": bound if bound in t.tunes else t.default_tune,
            "default_tune": t.default_tune,
            "tunes": sorted(t.tunes),
            "limits": {k: getattr(t.limits, k) for k in t.limits.__slots__},
        }


def vars_key(k: Any) -> dict[str, Any]:
    return {
        "id": k.key_id,
        "tenant": k.tenant,
        "created_at": k.created_at,
        "revoked": k.revoked,
        "source": k.source,
    }


def _client(args: argparse.Namespace) -> AdminApi | RedisAdmin:
    if getattr(args, "redis", None):
        return RedisAdmin(args.redis)
    return AdminApi(args.url, args.admin_token)


def _limits(view: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in view["limits"].items() if v is not None) or "none"


def _run(args: argparse.Namespace) -> int:
    api = _client(args)
    what = args.admin_command
    if what == "tenants-list":
        rows = api.call("GET", "/admin/tenants")["data"]
        for r in rows:
            r["tunes"] = ",".join(r["tunes"])
            r["limits"] = _limits(r)
        print(table(rows, ["name", "tune", "default_tune", "tunes", "limits"]))
    elif what == "tenants-show":
        view = api.call("GET", f"/admin/tenants/{args.tenant}")
        print(f"tenant: {view['name']}\ntune: {view['tune']} (default {view['default_tune']})")
        print(f"tunes: {', '.join(view['tunes'])}\nlimits: {_limits(view)}\n")
        print(table(view["keys"], ["id", "source", "revoked", "created_at"]) + "\n")
        print(table(view["switches"], ["at", "actor", "from", "to"]))
    elif what == "tenants-bind":
        r = api.call("PUT", f"/admin/tenants/{args.tenant}/tune", {"tune": args.tune})
        print(f"tenant {r['tenant']}: {r['from']} -> {r['to']} (by {r['actor']})")
    elif what == "keys-create":
        r = api.call(
            "POST", f"/admin/tenants/{args.tenant}/keys", {"id": args.id} if args.id else {}
        )
        print(f"key id: {r['id']}\nkey: {r['key']}\n(shown once: only its hash is kept)")
    elif what == "keys-list":
        print(
            table(
                api.call("GET", f"/admin/tenants/{args.tenant}/keys")["data"],
                ["id", "source", "revoked", "created_at"],
            )
        )
    elif what == "keys-revoke":
        api.call("DELETE", f"/admin/tenants/{args.tenant}/keys/{args.key_id}")
        print(f"revoked key {args.key_id} of tenant {args.tenant}")
    elif what == "tunes-list":
        print(
            table(
                api.call("GET", "/admin/tunes")["data"],
                ["name", "version", "status", "loaded", "canary_weight", "eval_score"],
            )
        )
    elif what in ("tunes-promote", "tunes-canary", "tunes-rollback"):
        action = what.split("-")[1]
        body: dict[str, Any] = {}
        if action != "rollback":
            body["version"] = args.version
        if action == "promote":
            body["force"] = args.force
        if action == "canary":
            body["weight"] = args.weight
        r = api.call("POST", f"/admin/tunes/{args.tune}/{action}", body)
        after = r["after"]
        canary = f", canary {after['canary']} at {after['weight']}%" if after["canary"] else ""
        print(f"tune {r['tune']}: live {after['live']}{canary} (by {r['actor']})")
    elif what == "policy-reload":
        r = AdminApi(args.url, args.admin_token).call("POST", "/admin/policy/reload")
        print(f"policy reloaded: {r['tenants']} tenants")
    return 0


def run_admin(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except CliError as exc:
        print(f"tunegate: {exc}", file=sys.stderr)
        return 1


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.tune_eval import main_eval

    tunes_dir = Path(os.environ.get("TUNEGATE_TUNES_DIR", "tunes"))
    return main_eval(args.target, args.cases, args.url, args.api_key, tunes_dir)


def _build_spec(spec: str) -> int:
    from gateway.tunebuild.spec_build import main_build_spec

    return main_build_spec(spec)


def add_admin_commands(sub: Any) -> None:
    port = os.environ.get("TUNEGATE_PORT", "8000")

    def common(p: argparse.ArgumentParser, redis: bool = True) -> None:
        p.add_argument("--url", default=os.environ.get("TUNEGATE_URL", f"http://127.0.0.1:{port}"))
        p.add_argument("--admin-token", default=os.environ.get("TUNEGATE_ADMIN_TOKEN"))
        if redis:
            p.add_argument("--redis", default=None, help="talk to Redis directly (redis://...)")
        p.set_defaults(func=run_admin)

    tenants = sub.add_parser("tenants", help="list, show and bind tenants").add_subparsers(
        dest="tenants_command", required=True
    )
    p = tenants.add_parser("list")
    common(p)
    p.set_defaults(admin_command="tenants-list")
    p = tenants.add_parser("show")
    p.add_argument("tenant")
    common(p)
    p.set_defaults(admin_command="tenants-show")
    p = tenants.add_parser("bind", help="switch the tune a tenant's `default` model runs on")
    p.add_argument("tenant")
    p.add_argument("tune")
    common(p)
    p.set_defaults(admin_command="tenants-bind")

    tunes = sub.add_parser("tunes", help="list tunes; promote, canary, roll back").add_subparsers(
        dest="tunes_command", required=True
    )
    p = tunes.add_parser("build", help="train a tune version from demonstrations (a spec file)")
    p.add_argument("spec", help="the build spec (YAML): name, version, data, lora, train")
    p.set_defaults(func=lambda a: _build_spec(a.spec))
    p = tunes.add_parser("eval", help="run evaluation cases through the gateway; store the score")
    p.add_argument("target", help="NAME or NAME@VERSION")
    p.add_argument("cases", help="JSONL cases: messages and checks")
    p.add_argument("--url", default=os.environ.get("TUNEGATE_URL", f"http://127.0.0.1:{port}"))
    p.add_argument("--api-key", default=os.environ.get("TUNEGATE_API_KEY"))
    p.set_defaults(func=_eval)
    p = tunes.add_parser("list", help="every tune and version: status, loaded, canary weight")
    common(p, redis=False)
    p.set_defaults(admin_command="tunes-list")
    p = tunes.add_parser("promote", help="make a version live on every replica")
    p.add_argument("tune")
    p.add_argument("version")
    p.add_argument("--force", action="store_true")
    common(p, redis=False)
    p.set_defaults(admin_command="tunes-promote")
    p = tunes.add_parser("canary", help="send a share of end users to a version (sticky)")
    p.add_argument("tune")
    p.add_argument("version")
    p.add_argument("--weight", type=int, required=True, help="percent of end users, 0 stops")
    common(p, redis=False)
    p.set_defaults(admin_command="tunes-canary")
    p = tunes.add_parser("rollback", help="end a canary, or return to the previous live version")
    p.add_argument("tune")
    common(p, redis=False)
    p.set_defaults(admin_command="tunes-rollback")

    keys = sub.add_parser("keys", help="create, list and revoke API keys").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("create")
    p.add_argument("tenant")
    p.add_argument("--id", default=None)
    common(p)
    p.set_defaults(admin_command="keys-create")
    p = keys.add_parser("list")
    p.add_argument("tenant")
    common(p)
    p.set_defaults(admin_command="keys-list")
    p = keys.add_parser("revoke")
    p.add_argument("tenant")
    p.add_argument("key_id")
    common(p)
    p.set_defaults(admin_command="keys-revoke")
