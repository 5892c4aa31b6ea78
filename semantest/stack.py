"""Run the whole local stack as child processes: redis-server, controller, sandbox, agents.

`Stack` is what `semantest up`, `semantest demo`, the end-to-end tests and the benchmarks
share. Agents run under the pool supervisor (`python -m agents.pool`), which restarts and
recycles them. Children append to `<data_dir>/logs/<name>.log` (never truncate: a log is
evidence), die with their parent (PR_SET_PDEATHSIG), and are stopped in dependency order:
agents first (they drain: running jobs finish or go back to the queue), then the controller and
sandbox, Redis last.

Two stacks never mistake each other: before starting anything a stack checks that its ports are
free and takes a lock on its data dir, and it only counts a controller or sandbox as up when its
`/health` echoes this run's id (`runId`), so another stack answering on the same port is an
error, not a success.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from pydantic import SecretStr

from semantest.config import Settings

PR_SET_PDEATHSIG = 1
#: Agents `semantest up`, `semantest demo`, `semantest agents` and `make up` start by default.
DEFAULT_AGENTS = 2


#: Ports this process handed out already (a test session starts many servers).
_GIVEN: set[int] = set()


def _ephemeral_floor() -> int:
    """The lowest port the kernel picks for outgoing connections (Linux: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback TCP port nobody listens on now, below the kernel's ephemeral range.

    A port the kernel picks (`bind(0)`) comes from the range it also gives outgoing connections,
    so between this call and the server's bind a client socket (a load test has a thousand) may
    take it: "Address already in use". Ports under that range are never given to clients.
    """
    top = _ephemeral_floor() - 1
    for _ in range(200):
        port = secrets.choice(range(max(top - 12000, 1024), top))
        if port not in _GIVEN and not port_in_use("127.0.0.1", port):
            _GIVEN.add(port)
            return port
    with socket.socket() as s:  # a crowded machine: fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        kernel: int = s.getsockname()[1]
        return kernel


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on `host:port` (what our server would bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        # As servers do: a port whose old connections linger in TIME_WAIT is free to take.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def die_with_parent() -> None:
    """`preexec_fn` for children: when their parent dies they get SIGTERM."""
    # Runs in the child between fork and exec: if `semantest up` is killed, so is the child.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def redis_server_argv(server: str, port: int, workdir: Path, *, persist: bool) -> list[str]:
    """A loopback-only redis-server on `port`, files in `workdir`, AOF only with `persist`."""
    return [
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        str(workdir),
        "--appendonly",
        "yes" if persist else "no",
        # test suites give each stack its own database
        "--databases",
        "64",
    ]


class StackError(RuntimeError):
    """A child failed to start; the message names it and ends with its log."""


class StackInUse(StackError):
    """A port or the data dir belongs to another running stack; the message is one line."""


def in_use_message(port: int, variable: str) -> str:
    """The one line a stack stops with when `port` is taken."""
    return f"port {port} is in use — is another semantest up running? set {variable}"


@dataclass
class Child:
    """One child process and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 30) -> str:
        """The end of the child's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _holds_secret(value: object) -> bool:
    if isinstance(value, dict):
        return any(_holds_secret(v) for v in value.values())
    return isinstance(value, SecretStr)


def _revealed(value: object) -> object:
    """`value` with every `SecretStr` in it (nested in dicts too) as its text."""
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    return value.get_secret_value() if isinstance(value, SecretStr) else value


@dataclass
class Stack:
    """The local deployment; use as a context manager or call start()/stop()."""

    settings: Settings
    agents: int = DEFAULT_AGENTS
    #: Tab slots per agent (None: the settings' `slots`).
    slots: int | None = None
    persist_redis: bool = True
    children: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.settings.admin_key is None:
            self.settings = self.settings.model_copy(
                update={"admin_key": SecretStr("sk_admin_" + secrets.token_urlsafe(24))}
            )
        if self.settings.run_id is None:
            self.settings = self.settings.model_copy(update={"run_id": secrets.token_hex(8)})
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir = self.settings.data_dir / "logs"
        self.logs_dir.mkdir(exist_ok=True)
        self._lock: int | None = None

    @property
    def run_id(self) -> str:
        """This run's id, echoed by its controller's and sandbox's `/health` (`runId`)."""
        assert self.settings.run_id is not None
        return self.settings.run_id

    @property
    def admin_key(self) -> str:
        """The bootstrap key of tenant `admin` for this run."""
        assert self.settings.admin_key is not None
        return self.settings.admin_key.get_secret_value()

    @property
    def url(self) -> str:
        """The controller's URL."""
        return self.settings.controller_url

    def env(self) -> dict[str, str]:
        """Environment every child gets: the parent's, with every one of this stack's settings."""
        env = dict(os.environ)
        values = self.settings.model_dump(mode="json", exclude={"admin_key"})
        for name, value in self.settings:
            if name in values and _holds_secret(value):  # dumped as "**********"
                values[name] = _revealed(value)
        values["data_dir"] = str(self.settings.data_dir.resolve())
        for name, value in values.items():
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value)
            env[f"SEMANTEST_{name.upper()}"] = text
        env["SEMANTEST_ADMIN_KEY"] = self.admin_key
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, argv: list[str]) -> Child:
        """Start one child, its output appended to `<logs>/<name>.log` after a header line."""
        log_path = self.logs_dir / f"{name}.log"
        with log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            log.write(f"--- {stamp} run {self.run_id}: {name} starts ---\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,  # only calls prctl: safe even with threads
                # Own process group: a terminal's Ctrl-C reaches only us, and we stop the
                # children in order (agents before the Redis they report to).
                process_group=0,
            )
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def start(self, timeout: float = 90.0) -> None:
        """Start every part and wait until the controller sees all agents alive."""
        try:
            self._start(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def check_free(self) -> None:
        """Stop with one clear line when a port or the data dir is another stack's.

        Takes the data dir's lock (`<data_dir>/stack.lock`, held until `stop()`): two stacks on
        one data dir would share Redis files, images and logs.
        """
        s = self.settings
        for host, port, variable in (
            (s.host, s.port, "SEMANTEST_PORT"),
            (s.sandbox_host, s.sandbox_port, "SEMANTEST_SANDBOX_PORT"),
        ):
            if port_in_use(host, port):
                raise StackInUse(in_use_message(port, variable))
        if self._lock is None:
            fd = os.open(s.data_dir / "stack.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise StackInUse(
                    f"data dir {s.data_dir} is in use — is another semantest up running? "
                    "set SEMANTEST_DATA_DIR"
                ) from None
            self._lock = fd

    def _start(self, deadline: float) -> None:
        self.check_free()
        if self.settings.redis_url is None:
            self._start_redis(deadline)
        py = sys.executable
        self.spawn(
            "sandbox",
            [
                py,
                "-m",
                "sandbox",
                "--host",
                self.settings.sandbox_host,
                "--port",
                str(self.settings.sandbox_port),
            ],
        )
        self.spawn("controller", [py, "-m", "controller"])
        # webhook deliveries: their own RQ worker, off the agents' path
        self.spawn("webhooks", [py, "-m", "semantest.webhook_worker"])
        s = self.settings
        self._wait_own(
            f"{s.sandbox_url}/health", s.sandbox_port, "SEMANTEST_SANDBOX_PORT", deadline
        )
        self._wait_own(
            f"http://{s.host}:{s.port}/api/v1/health", s.port, "SEMANTEST_PORT", deadline
        )
        if self.agents:
            argv = [py, "-m", "agents.pool", "--count", str(self.agents)]
            if self.slots is not None:
                argv += ["--slots", str(self.slots)]
            self.spawn("agents", argv)
        apis = self.api_providers()
        for provider in apis:  # one API worker per image API with a fleet key
            argv = [py, "-m", "agents.api_worker", "--provider", provider]
            self.spawn(f"api-{provider}", [*argv, "--name", f"api-{provider}"])
        self.wait_agents(self.agents + len(apis), deadline)

    def api_providers(self) -> list[str]:
        """The image APIs this stack runs a worker for: those with a fleet key in its settings
        (`SEMANTEST_OPENAI_API_KEY`, `SEMANTEST_STABILITY_API_KEY`)."""
        s = self.settings
        keyed = {"openai": s.openai_api_key, "stability": s.stability_api_key}
        return [provider for provider, key in keyed.items() if key is not None]

    def _start_redis(self, deadline: float) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise StackError("redis-server is not installed (make setup installs it)")
        port = free_port()
        redis_dir = (self.settings.data_dir / "redis").resolve()
        redis_dir.mkdir(exist_ok=True)
        self.spawn("redis", redis_server_argv(server, port, redis_dir, persist=self.persist_redis))
        self.settings = self.settings.model_copy(
            update={"redis_url": f"redis://127.0.0.1:{port}/0"}
        )
        while time.monotonic() < deadline:
            self._check_alive()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.02)
        raise StackError("redis-server did not start in time")

    def restart_redis(self, down_s: float = 1.0, timeout: float = 30.0) -> None:
        """Stop this stack's own redis-server gracefully, wait `down_s`, start it again.

        SIGTERM makes Redis write (and fsync) its AOF before it exits, so with `persist_redis`
        nothing acknowledged is lost; it comes back on the same port and dir with the same
        argv, and this returns once it answers PING (not while it is still loading). The other
        children keep running and must ride the outage out. Only for a stack that started
        Redis itself.
        """
        old = next((c for c in self.children if c.name == "redis"), None)
        if old is None:
            raise StackError(
                "restart_redis: this stack did not start redis-server itself "
                f"(it uses {self.settings.redis_url}); only its own Redis can be restarted"
            )
        argv = [str(a) for a in old.proc.args]  # type: ignore[union-attr]
        old.proc.send_signal(signal.SIGTERM)
        try:
            old.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            old.proc.kill()
            old.proc.wait()
            raise StackError(f"redis-server did not stop within {timeout} s; killed it") from None
        self.children.remove(old)
        time.sleep(down_s)
        self.spawn("redis", argv)
        client = redis.Redis.from_url(self.settings.redis_url or "", socket_timeout=1.0)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                time.sleep(0.02)
        finally:
            client.close()
        raise StackError(f"redis-server did not answer within {timeout} s of its restart")

    def _check_alive(self) -> None:
        for child in self.children:
            if child.proc.poll() is not None:
                raise StackError(
                    f"{child.name} exited with code {child.proc.returncode}; "
                    f"its log ({child.log_path}) ends with:\n{child.tail()}"
                )

    def _wait_own(self, url: str, port: int, variable: str, deadline: float) -> None:
        """Wait until `url` answers 200 with this run's id; another run's answer is an error."""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                reply = httpx.get(url, timeout=1.0)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            if reply.status_code == 200:
                try:
                    run = reply.json().get("runId")
                except (ValueError, AttributeError):
                    run = None
                if run == self.run_id:
                    return
                raise StackInUse(in_use_message(port, variable))
            time.sleep(0.05)
        raise StackError(f"{url} did not answer in time")

    def wait_agents(self, count: int, deadline: float) -> None:
        """Wait until `count` agents are alive according to the controller."""
        while time.monotonic() < deadline:
            self._check_alive()
            health = httpx.get(f"{self.url}/api/v1/health", timeout=2.0).json()
            if health.get("agents", 0) >= count:
                return
            time.sleep(0.1)
        raise StackError(f"{count} agent(s) were not ready in time")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop children in dependency order; SIGKILL what does not stop in time."""
        order = sorted(self.children, key=lambda c: _STOP_ORDER.get(c.name.split("-")[0], 1))
        for group in (0, 1, 2):
            batch = [c for c in order if _STOP_ORDER.get(c.name.split("-")[0], 1) == group]
            for child in batch:
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            end = time.monotonic() + timeout
            for child in batch:
                try:
                    child.proc.wait(max(0.1, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
        self.children.clear()
        if self._lock is not None:
            os.close(self._lock)  # releases the data dir's flock
            self._lock = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


_STOP_ORDER = {"agent": 0, "controller": 1, "sandbox": 1, "redis": 2}
