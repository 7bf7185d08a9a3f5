"""Time the stages of a test run: `stage.py NAME -- COMMAND...` runs COMMAND, prints
`stage NAME: <seconds> s` and records it; `stage.py --summary` prints every stage recorded
since the last `--reset` and the 25 slowest tests of all tiers together (the tiers' conftest
writes each test's durations beside the records). Standard library only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

RECORDS = Path(__file__).resolve().parent / ".stages"


def run(name: str, command: list[str]) -> int:
    RECORDS.mkdir(exist_ok=True)
    began, start = time.time(), time.monotonic()
    code = subprocess.call(command)
    seconds = time.monotonic() - start
    status = "ok" if code == 0 else f"FAILED (exit {code})"
    print(f"stage {name}: {seconds:.0f} s {status}", flush=True)
    with (RECORDS / "stages.jsonl").open("a") as out:
        out.write(json.dumps({"stage": name, "seconds": round(seconds, 1), "exit": code,
                              "began": round(began, 1)}) + "\n")  # fmt: skip
    return code


def summary() -> None:
    stages = RECORDS / "stages.jsonl"
    rows = [json.loads(line) for line in stages.read_text().splitlines()] if stages.exists() else []
    print("\nstages:")
    for row in rows:
        print(f"  {row['stage']:<18} {row['seconds']:>7.0f} s  exit {row['exit']}")
    if rows:  # stages may overlap (the integration and e2e tiers run side by side)
        wall = max(r.get("began", 0) + r["seconds"] for r in rows) - min(
            r.get("began", 0) for r in rows
        )
        print(f"  {'wall clock':<18} {wall:>7.0f} s  (stages summed: "
              f"{sum(r['seconds'] for r in rows):.0f} s)")  # fmt: skip
    tests: dict[str, float] = {}
    for path in RECORDS.glob("durations-*.json"):
        for test, seconds in json.loads(path.read_text()).items():
            tests[test] = tests.get(test, 0.0) + seconds
    if tests:
        print("\n25 slowest tests (setup + call + teardown, all tiers):")
        for test, seconds in sorted(tests.items(), key=lambda kv: -kv[1])[:25]:
            print(f"  {seconds:7.1f} s  {test}")


def main(argv: list[str]) -> int:
    if argv == ["--reset"]:
        shutil.rmtree(RECORDS, ignore_errors=True)
        return 0
    if argv == ["--summary"]:
        summary()
        return 0
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    return run(argv[0], argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
