"""The package sources pip is configured with, as `uv pip install` options (make setup).

uv does not read pip's configuration (pip.conf, PIP_* variables), and a machine's pip config
is where its local mirrors and wheel folders are named (this machine's and CI's: a folder of
wheels, two local simple indexes). So `make setup`, which installs with uv, passes on exactly
what pip would use; the project adds no source of its own. Every file is still pinned by its
sha256 (--require-hashes), so which source serves a file cannot change what is installed.

    python3 .ci/pip_sources.py                      # pip's sources
    python3 .ci/pip_sources.py --index-url URL      # torch's CPU index first (TORCH_INDEX_URL)
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys


def pip_config() -> dict[str, list[str]]:
    """`pip config list` as key -> values (the last file or variable setting a key wins)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                         text=True, check=False).stdout  # fmt: skip
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.rsplit(".", 1)[-1]  # global.find-links, :env:.find-links -> find-links
        found[name] = shlex.split(value.strip().strip("'\"").replace("\n", " "))
    return found


def uv_options(config: dict[str, list[str]], index_url: str | None) -> list[str]:
    options: list[str] = []
    indexes = config.get("index-url", [])
    if index_url:
        options += ["--index-url", index_url]
        extra = indexes + config.get("extra-index-url", [])
    else:
        options += [o for url in indexes[:1] for o in ("--index-url", url)]
        extra = indexes[1:] + config.get("extra-index-url", [])
    options += [o for url in extra for o in ("--extra-index-url", url)]
    options += [o for link in config.get("find-links", []) for o in ("--find-links", link)]
    if len(options) > 2 or extra:
        # pip takes each pinned file from whichever source has it; uv by default stops at the
        # first index naming the package. The hashes make this safe.
        options += ["--index-strategy", "unsafe-best-match"]
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-url", default=None)
    args = parser.parse_args()
    print(shlex.join(uv_options(pip_config(), args.index_url or None)))


if __name__ == "__main__":
    main()
