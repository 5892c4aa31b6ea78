"""Settings: the one place configuration is read (environment variables prefixed `SEMANTEST_`).

`get_settings()` parses the environment once per process; every other module takes a
`Settings` instance rather than reading `os.environ` itself.
"""

from __future__ import annotations

import base64
import ipaddress
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from semantest.plans import PlanSpec, resolve_plans

#: Where Debian and most distributions put Chromium; checked in this order.
CHROMIUM_CANDIDATES = (
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
)

#: Features Playwright itself disables (1.65). Chromium keeps only the *last*
#: `--disable-features` switch, so ours must repeat Playwright's; a unit test reads the installed
#: driver and fails when a Playwright upgrade adds one.
PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose",
    "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable",
    "LensOverlay",
    "MediaRouter",
    "PaintHolding",
    "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin",
    "OptimizationHints",
    "NetworkTimeServiceQuerying",
    "AimEnabled",
    "PreconnectToSearch",
    "msForceBrowserSignIn",
    "msEdgeUpdateLaunchServicesPreferredVersion",
)
PLAYWRIGHT_ENABLED_FEATURES = ("CDPScreenshotNewSurface", "SkipListAccountsWithoutGaiaCookies")
#: What a headless worker does not need (measured on one agent, Chromium 156, PSS):
#: the omnibox popup WebUI renderer Chromium preloads even headless (-50 MB), the spare
#: renderer kept for the next cross-site navigation (-6 MB).
LEAN_DISABLED_FEATURES = (
    "WebUIOmniboxPopup",
    "WebUIOmniboxAimPopup",
    "WebUIOmniboxFullPopup",
    "PreloadTopChromeWebUI",
    "SpareRendererForSitePerProcess",
)
#: The network service inside the browser process instead of its own (-15 MB).
LEAN_ENABLED_FEATURES = ("NetworkServiceInProcess2",)

#: Flags every managed browser gets. Without the networking flags Chromium floods a closed
#: network with refused connections. `--in-process-gpu` saves a process (GPU is off anyway).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--in-process-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-features=" + ",".join(PLAYWRIGHT_DISABLED_FEATURES + LEAN_DISABLED_FEATURES),
    "--enable-features=" + ",".join(PLAYWRIGHT_ENABLED_FEATURES + LEAN_ENABLED_FEATURES),
)

Port = Annotated[int, Field(ge=1, le=65535)]


def find_chromium() -> str | None:
    """Return the path of an installed Chromium, or None when there is none."""
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Settings(BaseSettings):
    """Every setting of a Semantest deployment; env var = `SEMANTEST_` + upper-case name."""

    model_config = SettingsConfigDict(env_prefix="SEMANTEST_", extra="ignore")

    host: str = "127.0.0.1"
    port: Port = 8000
    #: Server processes of the controller (`python -m controller`, `semantest up`); each runs
    #: the whole app on the one port. Two on the 2-core machine: docs/performance.md.
    controller_workers: Annotated[int, Field(ge=1, le=32)] = 2
    #: Unset means "`semantest up` starts its own redis-server".
    redis_url: str | None = None
    #: Bootstrap API key of tenant `admin`. Unset: `semantest up` generates one per run.
    admin_key: SecretStr | None = None
    #: Webhook signing secret of the bootstrap tenant `admin` (`whsec_` + base64 of 24-64
    #: random bytes, Standard Webhooks' form). Unset: one is made when the tenant is first stored.
    webhook_secret: SecretStr | None = None
    #: JWT bearer tokens beside API keys: HS256 signed with this shared secret (32+ bytes)...
    jwt_secret: SecretStr | None = None
    #: ... and/or RS256 checked with this public key: a PEM file's path, or the PEM text ...
    jwt_public_key: str | None = None
    #: ... or with the keys of this JWKS file (picked by the token's `kid`; re-read on change).
    jwt_jwks_file: Path | None = None
    #: When set, a token's `aud` must name it.
    jwt_audience: str | None = None
    #: When set, a token's `iss` must be it.
    jwt_issuer: str | None = None
    #: Clock skew allowed when checking a token's `exp`, `nbf` and `iat` (seconds).
    jwt_leeway_s: Annotated[int, Field(ge=0, le=300)] = 30
    data_dir: Path = Path("data")
    chromium: str | None = Field(default_factory=find_chromium)
    sandbox_host: str = "127.0.0.1"
    sandbox_port: Port = 8001
    sandbox_latency_ms: Annotated[int, Field(ge=0, le=600_000)] = 0
    #: Public base URL of the controller, used in `statusUrl` and by extensions. Defaults to
    #: http://host:port.
    public_url: str | None = None
    #: Addon GETs need no key by default: extension installs fetch them.
    addons_public: bool = True
    #: Rate limits per tenant plan and endpoint (docs/architecture.md, "Rate limits"). `false`
    #: turns them off: for benchmarks and local development, never in production.
    rate_limits: bool = True
    #: Changes to the built-in plans (`standard`, `partner`) or new plans, as JSON, e.g.
    #: `{"partner": {"overall": {"count": 5000, "burst": 10000}}}` (semantest/plans.py).
    rate_limit_plans: dict[str, PlanSpec] = Field(default_factory=dict)
    #: Seconds one job may run before the agent gives up on it.
    job_timeout_s: Annotated[int, Field(ge=5, le=3600)] = 180
    #: Attempts for retryable failures (agent crash, provider timeout).
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    #: Seconds before retry 1, 2, ... (the last repeats); JSON list in the environment.
    retry_backoff_s: Annotated[list[Annotated[int, Field(ge=0, le=3600)]], Field(min_length=1)] = [
        2,
        10,
        30,
    ]
    #: Tab slots per agent browser: jobs one agent runs at once (one tab each).
    slots: Annotated[int, Field(ge=1, le=16)] = 1
    #: Seconds a draining agent (SIGTERM) lets running jobs finish before re-queuing them.
    drain_grace_s: Annotated[int, Field(ge=0, le=3600)] = 30
    #: An agent restarts its browser after this many jobs (0: never).
    recycle_after_jobs: Annotated[int, Field(ge=0)] = 500
    #: An agent restarts its browser when the memory of agent + driver + Chromium exceeds this
    #: many MB (PSS: a page shared by several of its processes counts once; 0: never).
    recycle_memory_mb: Annotated[int, Field(ge=0)] = 1536
    #: Jobs one provider account (browser profile) may run per hour; 0 means no budget.
    account_budget_per_hour: Annotated[int, Field(ge=0)] = 0
    #: Prepared profile new agent profiles are copied from (default: <data>/profiles/_template).
    profile_template: Path | None = None
    #: `/api/v1/pressure` turns unavailable at this many queued jobs per live slot, and available
    #: again below `pressure_resume_ratio` of that.
    pressure_queue_per_slot: Annotated[int, Field(ge=1)] = 20
    pressure_resume_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.8
    #: Seconds a chat session stays open after its last message: its browser tab is kept (and
    #: follow-ups accepted) that long, then the agent closes the tab and the chat ends.
    chat_idle_s: Annotated[int, Field(ge=10, le=24 * 3600)] = 600
    #: Seconds a live event stream (SSE, WebSocket) stays quiet before a heartbeat, which keeps
    #: it open through proxies that close idle connections.
    live_heartbeat_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    #: Live event streams (SSE streams, WebSocket subscriptions) one controller process keeps
    #: open at once; each holds one Redis connection. More are refused with 503 + Retry-After.
    live_streams_max: Annotated[int, Field(ge=1, le=10_000)] = 1000
    #: New jobs one lane (per provider) may hold waiting; beyond it a submission gets 503
    #: `UNAVAILABLE` with `Retry-After` instead of the queue growing without bound.
    lane_capacity: Annotated[int, Field(ge=1)] = 100_000
    #: Seconds a result stays in the opt-in result cache (`options.cache: true`).
    result_cache_ttl_s: Annotated[int, Field(ge=1)] = 24 * 3600
    #: Seconds an `Idempotency-Key` is remembered (its first answer is replayed).
    idempotency_ttl_s: Annotated[int, Field(ge=60)] = 24 * 3600
    #: Days audit entries are kept in Redis (the JSON lines file is rotated by the operator).
    audit_retention_days: Annotated[int, Field(ge=1, le=3650)] = 90
    #: Start URLs by provider, overriding the addon manifest's `startUrl` (JSON object), e.g.
    #: `{"chatgpt": "http://127.0.0.1:8001/replicas/chatgpt/"}` to point slots at a replica.
    provider_urls: dict[str, str] = Field(default_factory=dict)
    #: Failure evidence (screenshot, DOM, console log, addon state) of a job is deleted this
    #: many hours after it was kept (the controller's sweeper; 0 keeps it forever).
    artifact_retention_h: Annotated[int, Field(ge=0, le=24 * 3650)] = 7 * 24
    #: Seconds between two canary jobs per provider (0: no canaries).
    canary_interval_s: Annotated[int, Field(ge=0, le=24 * 3600)] = 300
    #: Failed canaries in a row that mark a provider degraded.
    canary_failures: Annotated[int, Field(ge=1, le=100)] = 1
    #: Longest wait a provider's rate-limit notice may impose on a retry (seconds).
    rate_limit_max_wait_s: Annotated[int, Field(ge=0, le=24 * 3600)] = 600
    #: Largest image an agent accepts from a provider page.
    max_image_bytes: Annotated[int, Field(ge=1024)] = 25 * 1024 * 1024
    #: Where images are stored: `local` (files under <data>/images) or `s3` (boto3; credentials
    #: come from boto3's own chain: AWS_* variables, shared config, instance role).
    storage: Literal["local", "s3"] = "local"
    #: S3 bucket, required with `storage=s3`.
    s3_bucket: str | None = None
    #: Key prefix inside the bucket (a folder; a trailing `/` is added).
    s3_prefix: str = ""
    #: S3-compatible endpoint (MinIO, R2, moto); unset: AWS.
    s3_endpoint_url: str | None = None
    #: Region of the bucket; unset: boto3's default chain.
    s3_region: str | None = None
    #: Seconds a presigned GET URL (what the controller redirects image GETs to) stays valid.
    s3_presign_expiry_s: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] = 3600
    #: Public base URL (a CDN in front of the bucket) image URLs in records point to:
    #: `<cdn>/<prefix><key>`. Unset: the controller serves them.
    cdn_base_url: str | None = None
    #: Let webhooks reach loopback, private, link-local, CGNAT and metadata addresses (and
    #: `http://` to loopback): for development and tests, never in production.
    webhook_allow_private: bool = False
    #: Networks (CIDR, JSON list) webhooks may reach although the guard refuses their kind,
    #: e.g. `["10.8.0.0/16"]` for receivers on an internal network.
    webhook_allow_networks: list[str] = []
    #: Delivery attempts per webhook event; retry n waits `webhook_backoff_s` x 2^(n-1) s.
    webhook_max_attempts: Annotated[int, Field(ge=1, le=20)] = 8
    webhook_backoff_s: Annotated[int, Field(ge=1, le=3600)] = 10
    #: Seconds one delivery attempt may take in all (resolve, connect, send, answer, redirects).
    webhook_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    #: Image API keys for the whole fleet (a tenant's own key in `provider_keys` wins). In a
    #: cluster they come from a Secret through the environment (docs/providers.md).
    openai_api_key: SecretStr | None = None
    stability_api_key: SecretStr | None = None
    #: Per-tenant image API keys, JSON: `{"openai": {"acme": "sk-..."}}`.
    provider_keys: dict[str, dict[str, SecretStr]] = Field(default_factory=dict)
    #: Where the image APIs are (a stand-in's address in tests: `sandbox/standins`).
    openai_base_url: str = "https://api.openai.com"
    stability_base_url: str = "https://api.stability.ai"
    #: OpenAI's image model when a job names none (`options.model`).
    openai_model: str = "gpt-image-1"
    #: Proxy every agent browser's page traffic (and image downloads) goes through, e.g.
    #: `http://proxy:3128`; loopback is never proxied. Tests point it at the replicas' proxy.
    browser_proxy: str | None = None
    #: Accept any TLS certificate in agent browsers: only for replicas with a test certificate.
    browser_ignore_https_errors: bool = False
    log_level: str = "INFO"
    #: Log lines on stdout: `json` (one object a line, for log pipelines) or `text`.
    log_format: Literal["json", "text"] = "json"
    #: Port of the `/metrics` endpoint each agent, pool supervisor and webhook worker serves
    #: (0: a free port, published in the controller's scrape target list; set one in a
    #: container, where each process has its own address).
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    #: Interface those endpoints listen on (0.0.0.0 in a container).
    metrics_host: str = "127.0.0.1"
    #: Whether the controller's `/metrics` and scrape targets answer without a key (else a
    #: key with the `admin` scope, as Prometheus' `authorization` sends it).
    metrics_public: bool = True
    #: OTLP/HTTP endpoint traces are exported to (e.g. `http://collector:4318`); unset: no
    #: tracing at all.
    otel_endpoint: str | None = None
    #: An id `semantest up` gives each run of a stack; the controller's and the sandbox's
    #: `/health` echo it (`runId`), so the stack knows that what answers on its ports is its own.
    run_id: str | None = None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("rate_limit_plans")
    @classmethod
    def _plans_resolve(cls, value: dict[str, PlanSpec]) -> dict[str, PlanSpec]:
        resolve_plans(value)  # a new plan without its overall count fails at start, not later
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _standard_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value()
        try:
            raw = base64.b64decode(text.removeprefix("whsec_"), validate=True)
        except ValueError:
            raw = b""
        if not text.startswith("whsec_") or not 24 <= len(raw) <= 64:
            raise ValueError("must be whsec_ followed by the base64 of 24 to 64 random bytes")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough_for_hs256(cls, value: SecretStr | None) -> SecretStr | None:
        # RFC 7518, section 3.2: an HS256 key must be at least as long as the hash (32 bytes).
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes long (HS256)")
        return value

    @field_validator("s3_prefix")
    @classmethod
    def _prefix_is_a_folder(cls, value: str) -> str:
        value = value.strip("/")
        return f"{value}/" if value else ""

    @field_validator("cdn_base_url")
    @classmethod
    def _cdn_without_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @field_validator("webhook_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return value

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Settings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("s3_bucket (SEMANTEST_S3_BUCKET) is required when storage is s3")
        return self

    @property
    def controller_url(self) -> str:
        """The URL clients and extensions use to reach the controller."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def sandbox_url(self) -> str:
        """Base URL of the embedded sandbox provider."""
        return f"http://{self.sandbox_host}:{self.sandbox_port}"

    @property
    def images_dir(self) -> Path:
        """Root of local image storage."""
        return self.data_dir / "images"

    @property
    def profiles_dir(self) -> Path:
        """Root of per-agent browser profiles."""
        return self.data_dir / "profiles"

    @property
    def template_dir(self) -> Path:
        """The prepared profile new agent profiles are copied from."""
        return self.profile_template or self.profiles_dir / "_template"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, parsed from the environment once."""
    return Settings()
