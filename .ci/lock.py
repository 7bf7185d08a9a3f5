"""Write the hashed lock files from what a venv has installed (`make lock`).

    .venv/bin/python .ci/lock.py app --uv .venv/bin/uv          # requirements{,-dev,-build}.lock
    .venv-gates/bin/python .ci/lock.py gates --uv .venv/bin/uv  # requirements-gates.lock

Run by the venv's own interpreter: the versions are the installed ones (the venv is the
resolution), the package sets are the dependency closures read from the installed metadata, so
a package someone installed by hand is not locked. `uv pip compile --no-deps --generate-hashes`
adds the sha256 of every file PyPI has for each pinned version (every platform: x86_64 and
aarch64 wheels, the sdist), which `pip install --require-hashes` then checks.

torch: requirements.lock has PyPI's files (as every other package); requirements-torch.lock
pins the CPU build `torch==X+cpu` with the sha256 of PyTorch's CPU index (the `#sha256=`
fragments of its page) when it can be reached; when it cannot, those already in that file for
the same version are kept, or --torch-cpu-sha256 gives them.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import urllib.request
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
BUILD_TOOLS = ("pip", "setuptools", "uv")  # uv: make setup installs the locks with it
# the versions are those of this interpreter (3.11.x): uv checks each pin's Requires-Python
PYTHON = ".".join(map(str, sys.version_info[:3]))
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu/torch/"
HEADERS = {
    "requirements.lock": (
        "# Runtime dependencies of ray-app (the image installs these; make setup too), hashed.\n"
        "# Installed with: pip install --require-hashes --no-deps -r requirements.lock\n"
    ),
    "requirements-dev.lock": (
        "# The dev extra's packages on top of requirements.lock (make setup), hashed.\n"
    ),
    "requirements-tools.lock": (
        "# The docs extra (playwright for docs/pictures.py) on top of the two above; make lock\n"
        "# installs it, make setup does not. Hashed.\n"
    ),
    "requirements-build.lock": (
        "# pip, uv (make setup installs the other locks with it) and the build backend\n"
        "# (pyproject's build-system), installed first by make setup and the image; the project\n"
        "# itself is then installed with --no-build-isolation.\n"
    ),
    "requirements-torch.lock": (
        "# torch's CPU build, installed alone and first (make setup, the image): from\n"
        "# PyTorch's CPU index (TORCH_INDEX_URL; CI and the image) or a copy pip's config finds\n"
        "# (the project's machines).\n"
        "# requirements.lock's torch entry (PyPI's files) is then already satisfied.\n"
    ),
    "requirements-gates.lock": (
        "# .venv-gates (make gates-setup): requirements-gates.txt and its dependencies, hashed.\n"
    ),
}
FOOTER = "# Regenerate with `make lock` (.ci/lock.py); never edit by hand.\n"


def installed() -> dict[str, metadata.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}


def closure(roots: list[Requirement], dists: dict[str, metadata.Distribution]) -> set[str]:
    """Names reached from roots through installed Requires-Dist (markers for this platform)."""
    seen: dict[str, set[str]] = {}
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen.setdefault(name, set()).update(extras)
        dist = dists.get(name)
        if dist is None:
            sys.exit(f"lock: {req} is required but not installed in {sys.prefix}")
        for line in dist.requires or []:
            dep = Requirement(line)
            if dep.marker is None or any(
                dep.marker.evaluate({"extra": e}) for e in (*seen[name], "")
            ):
                todo.append(dep)
    return set(seen)


def pins(names: set[str], dists: dict[str, metadata.Distribution]) -> list[str]:
    out = []
    for name in sorted(names):
        version = dists[name].version.split("+")[0]  # torch 2.13.0+cpu -> 2.13.0
        out.append(f"{dists[name].metadata['Name']}=={version}")
    return out


def hashed(lines: list[str], uv: str) -> dict[str, list[str]]:
    """{canonical name: ['name==version', 'sha256:...', ...]} from uv (PyPI only)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.txt"
        src.write_text("\n".join(lines) + "\n")
        done = subprocess.run(
            [
                uv,
                "pip",
                "compile",
                "--quiet",
                "--no-deps",
                "--generate-hashes",
                "--no-header",
                "--no-annotate",
                "--python-version",
                PYTHON,
                "--no-config",
                str(src),
            ],
            capture_output=True,
            text=True,
        )
    if done.returncode:
        sys.exit(f"lock: uv pip compile failed:\n{done.stderr}")
    text = done.stdout
    entries: dict[str, list[str]] = {}
    for block in text.replace("\\\n", " ").splitlines():
        parts = block.split()
        if not parts or parts[0].startswith("#"):
            continue
        spec, hashes = parts[0], [p.removeprefix("--hash=") for p in parts[1:]]
        entries[canonicalize_name(spec.split("==")[0])] = [spec, *hashes]
    return entries


def previous(path: Path) -> dict[str, list[str]]:
    if not path.exists():
        return {}
    out: dict[str, list[str]] = {}
    for block in path.read_text().replace("\\\n", " ").splitlines():
        parts = block.split()
        if parts and not parts[0].startswith("#"):
            out[canonicalize_name(parts[0].split("==")[0])] = [
                parts[0],
                *(p.removeprefix("--hash=") for p in parts[1:]),
            ]
    return out


def torch_cpu_hashes(
    version: str, old: list[str] | None, given: list[str]
) -> tuple[list[str], str]:
    if given:  # --torch-cpu-sha256: from a copy whose origin the person running make lock knows
        return [f"sha256:{h.removeprefix('sha256:')}" for h in given], (
            "+cpu sha256 given to make lock, of the copy on the project's machines; the "
            "index was not reached"
        )
    try:
        with urllib.request.urlopen(TORCH_CPU_INDEX, timeout=20) as page:
            html = page.read().decode()
        found = re.findall(
            rf"torch-{re.escape(version)}%2Bcpu-cp311-cp311-[^\"#]*linux[^\"#]*\.whl#sha256=(\w+)",
            html.replace("+", "%2B"),
        )
        if found:
            return [f"sha256:{h}" for h in sorted(set(found))], "read from PyTorch's CPU index"
    except OSError as err:
        print(f"lock: PyTorch's CPU index not reachable ({err}); keeping the locked +cpu hashes")
    note = "+cpu hashes kept from the previous lock (index not reached)"
    path = ROOT / "requirements-torch.lock"
    if old and path.exists():  # and what it said of where they came from
        lines = path.read_text().splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("torch=="))
        said = lines[at - 1][2:] if at and lines[at - 1].startswith("# ") else ""
        note = said if said.startswith(note) else f"{note}; {said}" if said else note
    return (old or []), note


def write(path: Path, entries: list[list[str]], notes: dict[str, str] | None = None) -> None:
    body = [HEADERS[path.name]]
    for spec, *hashes in entries:
        name = canonicalize_name(spec.split("==")[0])
        if notes and name in notes:
            body.append(f"# {notes[name]}\n")
        body.append(" \\\n".join([spec, *(f"    --hash={h}" for h in hashes)]) + "\n")
    body.append(FOOTER)
    path.write_text("".join(body))
    print(f"lock: wrote {path.name} ({len(entries)} packages)")


def lock_app(uv: str, torch_cpu: list[str]) -> None:
    dists = installed()
    project = dists["ray-app"]
    roots = [Requirement(r) for r in project.requires or []]
    runtime_roots = [r for r in roots if r.marker is None or r.marker.evaluate({"extra": ""})]
    runtime = closure(runtime_roots, dists)
    dev = closure([Requirement("ray-app[dev]")], dists) - {"ray-app"} - runtime
    tools = closure([Requirement("ray-app[docs,lock]")], dists) - {"ray-app"} - runtime - dev
    build: set[str] = {canonicalize_name(n) for n in BUILD_TOOLS}
    groups: dict[str, set[str]] = {
        "requirements.lock": runtime - build,
        "requirements-dev.lock": dev - build,
        "requirements-tools.lock": tools - build,
        "requirements-build.lock": build,
    }
    hashes = {file: hashed(pins(names, dists), uv) for file, names in groups.items()}
    for file, entries in hashes.items():
        write(ROOT / file, [entries[n] for n in sorted(entries)])
    # torch's CPU build, installed alone before the rest (make setup, the image)
    version = dists["torch"].version.split("+")[0]
    spec = f"torch=={version}+cpu"
    old = previous(ROOT / "requirements-torch.lock").get("torch")
    cpu, how = torch_cpu_hashes(version, old[1:] if old and old[0] == spec else [], torch_cpu)
    if not cpu:
        sys.exit(f"lock: no sha256 for {spec}: PyTorch's index not reached; --torch-cpu-sha256")
    write(ROOT / "requirements-torch.lock", [[spec, *cpu]], {"torch": how})


def lock_gates(uv: str) -> None:
    dists = installed()
    roots = [
        Requirement(line.split("#")[0])
        for line in (ROOT / "requirements-gates.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    names = closure(roots, dists) - {canonicalize_name(n) for n in BUILD_TOOLS}
    entries = hashed(pins(names, dists), uv)
    write(ROOT / "requirements-gates.lock", [entries[n] for n in sorted(entries)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["app", "gates"])
    parser.add_argument("--uv", required=True, help="the uv executable (.venv/bin/uv)")
    parser.add_argument(
        "--torch-cpu-sha256",
        action="append",
        default=[],
        help="sha256 of a torch +cpu wheel, when PyTorch's CPU index cannot be reached",
    )
    args = parser.parse_args()
    if args.which == "app":
        lock_app(args.uv, args.torch_cpu_sha256)
    else:
        lock_gates(args.uv)


if __name__ == "__main__":
    main()
