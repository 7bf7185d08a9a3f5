"""The supply chain (docs/testing.md, "Pinned dependencies"): every lock line is `name==version`
with its sha256, the locks agree with pyproject and requirements-gates.txt, every install of a
lock checks hashes, the PyTorch index serves torch alone (no --extra-index-url anywhere), and pip
refuses a file whose hash was altered (offline, on a wheel made here)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.procs import REPO

APP_LOCKS = (
    "requirements.lock",
    "requirements-dev.lock",
    "requirements-tools.lock",
    "requirements-build.lock",
)
LOCKS = (*APP_LOCKS, "requirements-torch.lock", "requirements-gates.lock")
ENTRY = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)"
    r"(?P<hashes>(?:\s+--hash=sha256:[0-9a-f]{64})+)"
)
# What installs packages: the Makefile, the image and the workflows.
INSTALLERS = (
    "Makefile",
    "docker/Dockerfile",
    *(str(p.relative_to(REPO)) for p in sorted((REPO / ".github/workflows").glob("*.yml"))),
)


def entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [sha256, ...])}; fails on any line that is not a hashed pin."""
    out: dict[str, tuple[str, list[str]]] = {}
    text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
    for block in text.replace("\\\n", " ").splitlines():
        if not block.strip():
            continue
        match = ENTRY.fullmatch(block.strip())
        assert match, f"{path.name}: not `name==version --hash=sha256:...`: {block[:120]!r}"
        name = canonicalize_name(match["name"])
        assert name not in out, f"{path.name}: {name} twice"
        out[name] = (match["version"], re.findall(r"sha256:(\w+)", match["hashes"]))
    assert out, f"{path.name} pins nothing"
    return out


def locked(*names: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for file in names:
        for name, (version, _) in entries(REPO / file).items():
            assert name not in merged, f"{name} is in two of {names}"
            merged[name] = version
    return merged


def commands(text: str) -> list[str]:
    """Shell lines with their continuations joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines)).splitlines()
    return [" ".join(line.split()) for line in joined]


@pytest.mark.parametrize("lock", LOCKS)
def test_every_lock_line_is_a_pin_with_its_sha256(lock):
    assert all(hashes for _, hashes in entries(REPO / lock).values())


def test_the_app_locks_satisfy_pyproject_and_the_build_system():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    runtime, everything = locked("requirements.lock"), locked(*APP_LOCKS)
    wanted = [(r, runtime) for r in project["project"]["dependencies"]]
    wanted += [
        (r, everything)
        for extra in project["project"]["optional-dependencies"].values()
        for r in extra
    ]
    wanted += [(r, locked("requirements-build.lock")) for r in project["build-system"]["requires"]]
    for spec, lock in wanted:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in lock, f"{spec} is not locked"
        assert req.specifier.contains(Version(lock[name]), prereleases=True), (spec, lock[name])
    # torch's CPU build is the same release as requirements.lock's torch
    ((torch, (version, _)),) = entries(REPO / "requirements-torch.lock").items()
    assert torch == "torch" and version == runtime["torch"] + "+cpu"


def test_the_gates_lock_pins_requirements_gates_txt():
    gates = locked("requirements-gates.lock")
    for line in (REPO / "requirements-gates.txt").read_text().splitlines():
        if line.split("#")[0].strip():
            req = Requirement(line.split("#")[0])
            assert gates.get(canonicalize_name(req.name)) == str(req.specifier).lstrip("="), line


# The image's GPU variant: torch==X+cuNNN and its CUDA libraries from PyTorch's index alone
# (not hashed: docs/testing.md, "Pinned dependencies"); every other package is hashed first.
GPU_TORCH = '--index-url "https://download.pytorch.org/whl/${TORCH_INDEX}" "torch==$('


def expanded(file: str) -> str:
    """The file with the Makefile's install option variables replaced by their values (and
    their definitions dropped): what each install line really runs."""
    text = "\n".join(commands((REPO / file).read_text()))
    for name in ("PIP_HASHED", "UV_HASHED", "UV_TORCH"):
        value = re.search(rf"^{name} :?= (.*)$", text, re.M)
        if value:
            text = text.replace(value[0], "").replace(f"$({name})", value[1])
    return text


def pip_installs(file: str) -> list[str]:
    text = expanded(file)
    return [
        one.strip()
        for command in commands(text)
        for one in re.split(r"&&|;|\bthen\b|\belse\b", command)
        if "pip install" in one
    ]


@pytest.mark.parametrize("file", INSTALLERS)
def test_every_pip_install_checks_hashes_or_installs_only_the_project(file):
    for one in pip_installs(file):
        if re.search(r"\s-r\s", one):
            assert "--require-hashes" in one and "--no-deps" in one, f"{file}: {one}"
        elif GPU_TORCH in one:
            assert file == "docker/Dockerfile", one
        else:  # the project itself (editable or its wheel), nothing else
            assert "--no-deps" in one and one.split()[-1] in {".", "/tmp/wheels/*.whl"}, one


def test_make_setup_and_the_image_install_from_the_locks():
    make, image = pip_installs("Makefile"), pip_installs("docker/Dockerfile")
    for lock in ("requirements-build.lock", "requirements-torch.lock", "requirements.lock"):
        assert any(f"-r {lock}" in one for one in make), lock
        assert any(f"-r {lock}" in one for one in image), lock
    assert any("-r requirements-dev.lock" in one for one in make)
    assert any("-r requirements-tools.lock" in one for one in make)  # make lock (uv)
    assert any("-r requirements-gates.lock" in one for one in make)


@pytest.mark.parametrize("file", INSTALLERS)
def test_no_index_but_the_default_serves_anything_but_torch(file):
    text = expanded(file)
    assert not re.search(r"extra[-_]index[-_]url", text, re.I), f"{file}: an extra index"
    for command in commands(text):
        for one in re.split(r"&&|;|\bthen\b|\belse\b", command):
            if re.search(r"--index-url|PIP_INDEX_URL", one):
                assert "requirements-torch.lock" in one or GPU_TORCH in one, f"{file}: {one}"


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel (offline: no registry involved)."""
    path = folder / "lockcheck-1.0-py3-none-any.whl"
    info = "lockcheck-1.0.dist-info"
    files = {
        "lockcheck/__init__.py": "",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: lockcheck\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, body in {**files, f"{info}/RECORD": record}.items():
            wheel.writestr(name, body)
    return path


def test_pip_refuses_a_file_whose_locked_hash_was_altered(tmp_path):
    wheel = _wheel(tmp_path)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    altered = digest[:-1] + ("0" if digest[-1] != "0" else "1")

    def install(sha256: str) -> subprocess.CompletedProcess[str]:
        lock = tmp_path / "lock.txt"
        lock.write_text(f"lockcheck==1.0 \\\n    --hash=sha256:{sha256}\n")
        assert entries(lock)  # the lock format the tests above check
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--isolated",
                "install",
                "--dry-run",
                "--no-index",
                "--find-links",
                str(tmp_path),
                "--require-hashes",
                "--no-deps",
                "-r",
                str(lock),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    good = install(digest)
    assert good.returncode == 0, good.stderr
    bad = install(altered)
    assert bad.returncode != 0
    assert "DO NOT MATCH THE HASHES" in bad.stderr, bad.stderr


def test_uv_gets_the_sources_pip_is_configured_with_and_no_other():
    """make setup installs with uv, which reads no pip config: .ci/pip_sources.py passes on
    pip's own sources (this machine's local mirrors), and torch's index only where asked."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pip_sources", REPO / ".ci/pip_sources.py")
    assert spec and spec.loader
    sources = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sources)
    assert sources.uv_options({}, None) == []  # no pip config: PyPI only, as pip would
    config = {"extra-index-url": ["file:///a/simple", "file:///b/simple"], "find-links": ["/w"]}
    options = sources.uv_options(config, None)
    assert options == ["--extra-index-url", "file:///a/simple", "--extra-index-url",
                       "file:///b/simple", "--find-links", "/w",
                       "--index-strategy", "unsafe-best-match"]  # fmt: skip
    torch = sources.uv_options({"index-url": ["https://mirror/simple"]}, "https://torch/cpu")
    assert torch[:2] == ["--index-url", "https://torch/cpu"]
    assert torch[2:4] == ["--extra-index-url", "https://mirror/simple"]
    assert sources.uv_options({"index-url": ["https://mirror/simple"]}, None) == [
        "--index-url", "https://mirror/simple"]  # fmt: skip
