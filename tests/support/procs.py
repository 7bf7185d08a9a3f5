"""Processes the tests start and stop: free ports, process trees, a real `ray start --head`.

Every process is stopped by PID (its group, then any descendant that set its own): never
`ray stop` or pkill, which would hit other people's processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(root: int) -> list[int]:
    """PIDs below `root` (our own process tree), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def with_env(entry: str) -> list[int]:
    """PIDs of our processes whose environment contains `entry` ('NAME=value')."""
    needle = entry.encode()
    found = []
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit() and int(proc_dir.name) != os.getpid():
            try:
                if needle in (proc_dir / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc_dir.name))
            except OSError:
                continue
    return found


def stop_group(proc: subprocess.Popen, first: signal.Signals, grace_s: float) -> None:
    """Stop a process we started in its own session, and everything it started.

    `first` signal, then SIGKILL for its group and for any descendant that set its own
    group (Ray workers, HAProxy). By PID only: never `ray stop` or pkill, which would hit
    other people's processes.
    """
    tree = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(first)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)


def wait_http(url: str, proc: subprocess.Popen, limit_s: float, log: Callable[[], str]) -> None:
    """Until `url` answers at all (an HTTP error counts: up, and asking for a token or a key);
    the test fails, with `log()`, if `proc` exits first or `limit_s` passes."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{url} did not come up in {limit_s:.0f} s:\n{log()}")
            time.sleep(0.5)


@contextlib.contextmanager
def ray_head(log: Path, extra_env: dict[str, str] | None = None, num_cpus: int = 2, *,
             port: int | None = None, args: Sequence[str] = ()):  # fmt: skip
    """A real `ray start --head --block` with token auth; yields (dashboard URL, env).
    `port`: the GCS port (a free one by default); `args`: more `ray start` options.

    Its own process group, stopped by PID (never `ray stop`, which would stop every Ray on
    the machine). The token is the test's own: a fresh machine has no ~/.ray/auth_token.
    """
    import secrets
    import shutil
    import tempfile

    dashboard, gcs = free_port(), port or free_port()
    # Ray's socket paths must stay under 107 bytes: pytest's tmp_path is too deep.
    temp_dir = Path(tempfile.mkdtemp(prefix="rayhead", dir="/tmp"))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        # For tests that join by GCS address (read by nothing in ray_app).
        "TEST_RAY_GCS_ADDRESS": f"127.0.0.1:{gcs}",
        **(extra_env or {}),
    }
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--num-cpus={num_cpus}",
         "--disable-usage-stats", f"--temp-dir={temp_dir}",
         # The job agent's HTTP port is a fixed 52365 by default: a second Ray on the machine
         # (the other tier's head, a serve run) then has no job agent, and `ray job submit`
         # answers 500 "No available agent" after 10 s.
         f"--dashboard-agent-listen-port={free_port()}", *args],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_http(f"{url}/api/version", proc, 90, lambda: f"ray start: {log.read_text()[-2000:]}")
        yield url, env
    finally:
        # `ray start --block` stops its children on SIGTERM, but took the whole 20 s it was
        # given in every test: 5 s, then the tree kill (a throwaway head, its temp dir removed).
        stop_group(proc, signal.SIGTERM, 5)
        # Orphans (HAProxy respawned on reload is re-parented to init) still carry this head's
        # unique token in their environment: that identifies them by PID, and only them.
        for pid in with_env(f"RAY_AUTH_TOKEN={env['RAY_AUTH_TOKEN']}"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
