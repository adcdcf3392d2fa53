"""Typed settings for the gateway, read from `TUNEGATE_*` variables or passed as arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["EngineSettings", "Settings"]


class EngineSettings(BaseModel):
    """The engine (nested: `TUNEGATE_ENGINE__MAX_LORAS=8`): the in-process vLLM engine, or a
    pool of remote vLLM OpenAI servers (`kind: pool`; the model path then only gives the
    tokenizer, and adapter paths must be readable by the servers)."""

    kind: Literal["inprocess", "pool"] = "inprocess"
    model_path: Path = Path("build/demo/base")
    served_model_name: str = "tunegate-demo-base"
    dtype: str = "float32"
    max_model_len: int = Field(512, ge=16)
    max_loras: int = Field(4, ge=1)
    max_cpu_loras: int = Field(8, ge=1)
    max_lora_rank: int = Field(16, ge=1)
    max_num_seqs: int = Field(64, ge=1)
    kv_cache_gib: float = Field(1.0, gt=0)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    enforce_eager: bool = True
    process_nice: int = Field(
        10, ge=0, le=19, description="how much nicer the in-process engine's processes run"
    )
    seed: int = 0
    # Pool mode: the servers, as URLs or a headless Service's `host:port` resolved to its pods.
    pool_urls: list[str] = Field(default_factory=list)
    pool_dns: str | None = None
    upstream_api_key: SecretStr | None = None  # the servers' `--api-key`
    pool_adapters_per_server: int = Field(4, ge=1, description="adapter budget per server")
    pool_saturation: int = Field(16, ge=1, description="in-flight before a tune loads elsewhere")
    pool_health_interval_s: float = Field(2.0, gt=0)
    pool_connect_timeout_s: float = Field(2.0, gt=0)
    pool_read_timeout_s: float = Field(300.0, gt=0, description="longest wait between chunks")
    pool_connections: int = Field(256, ge=1, description="keep-alive connections per server")
    pool_whole_answers: bool = Field(
        True, description="ask a server for the whole answer when the client does not stream"
    )


class Settings(BaseSettings):
    """All gateway settings. Built once in `__main__`/CLI and passed down."""

    model_config = SettingsConfigDict(
        env_prefix="TUNEGATE_", env_nested_delimiter="__", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    tunes_dir: Path = Path("tunes")
    policies_dir: Path = Path("policies")
    admin_token: SecretStr | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_inflight: int = Field(512, ge=1, description="requests in flight before a fast 503")
    first_token_timeout_s: float = Field(60.0, gt=0, description="504 when no output by then")
    request_timeout_s: float = Field(600.0, gt=0, description="504 when the answer takes longer")
    drain_timeout_s: float = Field(
        30.0, ge=0, description="on SIGTERM, how long requests in flight may finish"
    )
    log_level: str = "info"
    log_format: Literal["json", "text"] = "json"
    workers: int = Field(1, ge=1, description="uvicorn worker processes (pool engine only)")
    redis_url: SecretStr | None = None
    redis_prefix: str = "tg:"
    store_timeout_s: float = Field(0.25, gt=0)
    rate_limit_fallback: Literal["fail_closed", "local"] = "fail_closed"
    replicas: int = Field(1, ge=1, description="gateway replicas sharing Redis (local fallback)")
    early_start: bool = Field(
        True, description="start on the engine while Redis admits, where the tenant has room"
    )
    slot_lease_s: float = Field(600.0, gt=0, description="a crashed request's slot frees after")
    version_check_s: float = Field(2.0, gt=0)
    audit_dir: Path = Path(".tunegate/audit")
    audit_sink: Literal["file", "redis"] = "file"
    audit_stream: str | None = Field(None, description="Redis stream; default <prefix>audit:<host>")
    audit_mode: Literal["spool", "fail_closed"] = "spool"
    audit_max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    audit_timeout_s: float = Field(1.0, gt=0)
    audit_commit_interval_s: float = Field(
        0.001, ge=0, le=0.05, description="least time between two commits' starts (group commit)"
    )
    engine: EngineSettings = EngineSettings()
