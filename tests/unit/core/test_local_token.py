"""A Ray that `ray-app` starts on this machine authenticates with a token only this user can
read (Ray 2.60 would write it 0644 under the usual umask: any local user listing $HOME could
submit jobs to 127.0.0.1:8265). No Ray is started: `ray.init` is a stand-in that records what it
would have found."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from ray_app.core import runtime

GIVEN = "t0k"  # pragma: allowlist secret (a test token)


class FakeRay:
    """`ray.init` as `_start_local` calls it: what the token file was at that moment."""

    def __init__(self, token: Path) -> None:
        self.token = token
        self.seen: tuple[str, int] | None = None

    def init(self, **kwargs):
        if self.token.exists():
            self.seen = (self.token.read_text(), stat.S_IMODE(self.token.stat().st_mode))
        return SimpleNamespace(dashboard_url=f"127.0.0.1:{kwargs['dashboard_port']}")


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_a_local_ray_finds_a_token_only_this_user_reads(home):
    old = os.umask(0o022)  # the usual one, under which Ray's own file would be 0644
    try:
        fake = FakeRay(home / ".ray" / "auth_token")
        runtime._start_local(fake)
    finally:
        os.umask(old)
    assert fake.seen is not None, "no token when Ray started: Ray would write one 0644"
    token, mode = fake.seen
    assert mode == 0o600 and len(token) == 64 and int(token, 16)
    assert stat.S_IMODE((home / ".ray").stat().st_mode) == 0o700
    assert "RAY_AUTH_MODE" not in os.environ  # left to Ray (set here, it would not take effect)
    again = FakeRay(home / ".ray" / "auth_token")
    runtime._start_local(again)
    assert again.seen == (token, 0o600)  # the same token next time: clients keep working


def test_a_readable_token_is_narrowed_and_kept(home):
    path = home / ".ray" / "auth_token"
    path.parent.mkdir()
    path.write_text("abc123")
    path.chmod(0o644)
    runtime.ensure_local_token()
    assert path.read_text() == "abc123" and stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("env", [{"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_TOKEN": GIVEN}])
def test_an_explicit_choice_is_left_alone(home, monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.ensure_local_token()
    assert not (home / ".ray").exists()


def test_ray_app_serve_makes_the_token_before_serve_run_starts_ray(home, monkeypatch):
    from ray_app.cli.app import app

    started: list[list[str]] = []

    def execve(path, argv, env):
        started.append(argv)
        shutil.rmtree(Path(argv[-1]).parent)  # the Serve config's temp folder
        token = home / ".ray" / "auth_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    result = CliRunner().invoke(app, ["serve", "--prediction-log", "off"])
    assert result.exit_code == 0, result.output
    assert started and started[0][1:3] == ["run", "--address"] and started[0][3] == "local"
