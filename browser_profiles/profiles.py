"""Per-agent profiles: copied from the template when new, held under a profile lock.

A profile is `<profiles_dir>/<agent id>`; its lock is the sibling file `<agent id>.lock`. The
agent runtime calls, before launching Chromium:

    profile = await open_agent_profile(playwright, settings, agent_id)   # or open_profile(...)
    browser = await agents.browser.launch(..., profile_dir=profile.path, ...)
    ...
    await browser.context.close()
    profile.release()                       # or: with await open_agent_profile(...) as profile:

`open_profile` takes the lock first (a second holder gets `ProfileLocked`, naming the holder);
only then, when the profile folder does not exist, it makes sure the template is prepared
(`browser_profiles.templates.ensure_template`) and copies it (~20 ms for the ~2 MB a prepared
template holds). Finally it clears Chromium's single-instance markers a dead holder left
behind (killing that holder's orphaned Chromium if it still runs on this profile).

The lock is an flock (`filelock.UnixFileLock`): the kernel releases it when the holding process
dies, however it dies, so a crashed or SIGKILLed agent never leaves a stale lock and its
successor takes the profile at once. The lock file also records the holder (host, pid, owner,
since) for the error message a refused second holder gets; the record is only read while the
flock is held by someone, so an old record never blocks anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiofiles.os
import psutil
from filelock import Timeout, UnixFileLock
from playwright.async_api import Playwright

from browser_profiles.templates import (
    SINGLETON_FILES,
    TEMPLATE_STAMP,
    acquire,
    ensure_template,
    strip_unshared,
    template_lock,
)
from extension_bridge import EXTENSION_DIR
from semantest.config import Settings

log = logging.getLogger(__name__)

#: Written into each copy: where it came from.
PROFILE_STAMP = "semantest-profile.json"


@dataclass(frozen=True)
class Holder:
    """Who holds a profile lock, as recorded in the lock file."""

    host: str
    pid: int
    owner: str
    since: float

    def describe(self) -> str:
        """`pid 123 on host (agent a1, python3, since 12:00:00)`, checking the pid when local."""
        details = [self.owner] if self.owner else []
        if self.host == socket.gethostname():
            try:
                details.append(psutil.Process(self.pid).name())
            except psutil.Error:
                details.append("process not found")
        details.append("since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since)))
        return f"pid {self.pid} on {self.host} ({', '.join(details)})"


class ProfileLocked(RuntimeError):
    """Another process holds the profile; `holder` is who, when the lock file says so."""

    def __init__(self, profile_dir: Path, holder: Holder | None) -> None:
        self.profile_dir = profile_dir
        self.holder = holder
        who = holder.describe() if holder else "a holder that has not recorded itself yet"
        super().__init__(f"profile {profile_dir} is in use by {who}")


def lock_path(profile_dir: Path) -> Path:
    """The profile's lock file: a sibling, so the profile folder itself can be made under it."""
    return profile_dir.with_name(profile_dir.name + ".lock")


def read_holder(path: Path) -> Holder | None:
    """The holder record in a lock file, None when there is none (or it is unreadable)."""
    try:
        raw: dict[str, Any] = json.loads(path.read_text() or "null") or {}
        return Holder(str(raw["host"]), int(raw["pid"]), str(raw["owner"]), float(raw["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class ProfileLock:
    """An exclusive, crash-safe lock on one profile (see the module docstring)."""

    profile_dir: Path
    owner: str = ""
    _lock: UnixFileLock = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.profile_dir.parent.mkdir(parents=True, exist_ok=True)
        self._lock = UnixFileLock(str(self.path), thread_local=False)

    @property
    def path(self) -> Path:
        """The lock file."""
        return lock_path(self.profile_dir)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock.is_locked

    def acquire(self, timeout_s: float = 0) -> None:
        """Take the lock, waiting up to `timeout_s`; `ProfileLocked` names the holder."""
        try:
            self._lock.acquire(timeout=timeout_s)
        except Timeout:
            raise ProfileLocked(self.profile_dir, read_holder(self.path)) from None
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "owner": self.owner,
            "since": time.time(),
        }
        self._write(json.dumps(record) + "\n")

    def release(self) -> None:
        """Let the lock go (no-op when not held)."""
        if self._lock.is_locked:
            self._write("")
            self._lock.release()

    def _write(self, text: str) -> None:
        # The flock belongs to filelock's descriptor; writing through a second one is fine.
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def __enter__(self) -> ProfileLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


@dataclass
class OpenProfile:
    """A profile ready for Chromium, held under its lock until `release()`."""

    path: Path
    lock: ProfileLock
    #: True when this call made the profile from the template.
    created: bool

    def release(self) -> None:
        """Give the profile back (call after the browser context is closed)."""
        self.lock.release()

    def __enter__(self) -> OpenProfile:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.release()


async def open_profile(
    playwright: Playwright,
    *,
    profile_dir: Path,
    template_dir: Path,
    chromium: str,
    extension_dir: Path = EXTENSION_DIR,
    owner: str = "",
    lock_timeout_s: float = 0,
) -> OpenProfile:
    """Lock `profile_dir`, make it from the template when it does not exist, return it held.

    Raises `ProfileLocked` when another process holds it (after waiting `lock_timeout_s`) and
    `browser_profiles.templates.TemplateError` when a needed template cannot be prepared.
    """
    lock = ProfileLock(profile_dir, owner)
    if lock_timeout_s > 0:
        await asyncio.to_thread(lock.acquire, lock_timeout_s)
    else:
        lock.acquire()
    try:
        created = False
        if not await aiofiles.os.path.exists(profile_dir):
            await ensure_template(
                playwright,
                chromium=chromium,
                extension_dir=extension_dir,
                template_dir=template_dir,
            )
            created = await copy_template(template_dir, profile_dir)
        await asyncio.to_thread(clear_stale_singleton, profile_dir)
    except BaseException:
        lock.release()
        raise
    return OpenProfile(profile_dir, lock, created)


async def open_agent_profile(
    playwright: Playwright,
    settings: Settings,
    agent_id: str,
    *,
    extension_dir: Path = EXTENSION_DIR,
    lock_timeout_s: float = 0,
) -> OpenProfile:
    """`open_profile` for `<settings.profiles_dir>/<agent_id>` and `settings.template_dir`."""
    if not settings.chromium:
        raise RuntimeError("no Chromium: set SEMANTEST_CHROMIUM")
    return await open_profile(
        playwright,
        profile_dir=settings.profiles_dir / agent_id,
        template_dir=settings.template_dir,
        chromium=settings.chromium,
        extension_dir=extension_dir,
        owner=f"agent {agent_id}",
        lock_timeout_s=lock_timeout_s,
    )


async def copy_template(template_dir: Path, profile_dir: Path) -> bool:
    """Copy the template to `profile_dir` unless that exists; True when it copied.

    Copies into a staging folder and renames it into place, under the template lock so a
    template being prepared again is never read half-swapped.
    """
    if await aiofiles.os.path.exists(profile_dir):
        return False
    lock = template_lock(template_dir)
    await acquire(lock, 60)
    try:
        return await asyncio.to_thread(_copy, template_dir, profile_dir)
    finally:
        lock.release()


def _copy(template_dir: Path, profile_dir: Path) -> bool:
    if profile_dir.exists():
        return False
    started = time.perf_counter()
    staging = profile_dir.with_name(f"{profile_dir.name}.copy-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(template_dir, staging, symlinks=True)
    strip_unshared(staging)
    template_stamp = staging / TEMPLATE_STAMP
    origin = {"template": str(template_dir), "copiedAt": time.time()}
    if template_stamp.exists():
        origin["templateStamp"] = json.loads(template_stamp.read_text())
        template_stamp.unlink()
    (staging / PROFILE_STAMP).write_text(json.dumps(origin, indent=2) + "\n")
    staging.rename(profile_dir)
    log.info(
        "profile %s copied from %s in %.3f s",
        profile_dir,
        template_dir,
        time.perf_counter() - started,
    )
    return True


def clear_stale_singleton(profile_dir: Path) -> int | None:
    """Remove Chromium's single-instance markers a previous holder left in the profile.

    Call only while holding the profile lock: then whatever they name is not a rightful user.
    A Chromium still running on this profile (an orphan of a holder that died) is killed
    first; returns its pid, or None when there was none.
    """
    killed = None
    try:
        target = os.readlink(profile_dir / "SingletonLock")
    except OSError:
        target = ""
    host, _, pid = target.rpartition("-")
    if host == socket.gethostname() and pid.isdigit():
        killed = _kill_chromium_on(profile_dir, int(pid))
    for name in SINGLETON_FILES:
        path = profile_dir / name
        if path.is_symlink() or path.exists():
            path.unlink()
    return killed


def _kill_chromium_on(profile_dir: Path, pid: int) -> int | None:
    try:
        proc = psutil.Process(pid)
        args = proc.cmdline()
    except psutil.Error:
        return None
    wanted = {f"--user-data-dir={profile_dir}", f"--user-data-dir={profile_dir.resolve()}"}
    if not wanted.intersection(args):
        return None
    log.warning("killing orphaned Chromium %d still running on %s", pid, profile_dir)
    try:
        proc.terminate()
        proc.wait(5)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except psutil.NoSuchProcess:
        pass
    return pid
