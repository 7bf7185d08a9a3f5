"""Mutation check: each mutant breaks one claim the README makes; the tests must fail for each.

    make mutants                      # all of them (about 8 minutes here)
    .venv/bin/python .ci/mutants.py --only promotion

Each mutant edits one line of the package in place, runs the tests that guard the claim, and
puts the file back (also on Ctrl-C). Prints a table, writes benchmarks/results/mutants.json,
and exits non-zero if a mutant survives (its tests still pass).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    claim: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant(
        "resume",
        "a worker lost mid-run resumes from the last checkpoint",
        "ray_app/training/contexts.py",
        "        checkpoint = self.api.get_checkpoint()\n",
        "        checkpoint = None  # mutant: resume disabled\n",
        (
            "tests/integration/training/test_ray_train.py::test_worker_death_resumes_from_last_checkpoint",
        ),
    ),
    Mutant(
        "promotion",
        "a better later model takes the champion alias",
        "ray_app/tracking/registry.py",
        "    promoted = better(challenger_loss, old_score)\n",
        "    promoted = current is None  # mutant: never moves after v1\n",
        ("tests/integration/tracking/test_promotion.py",),
    ),
    Mutant(
        "katib-nan",
        "a Katib trial never writes NaN (Katib's filter cannot read it)",
        "ray_app/training/katib.py",
        "    bad = [k for k, v in values.items() if not math.isfinite(v)]\n",
        "    bad: list[str] = []  # mutant: NaN let through\n",
        ("tests/unit/training/test_katib_trial.py",),
    ),
    Mutant(
        "unknown-category",
        "an unknown category is a 422, not scored as the OOV bucket",
        "ray_app/serving/schemas.py",
        '                nullable = Literal[(*values, "?")] | None  # type: ignore[valid-type]\n',
        "                nullable = str | None  # mutant: any string, scored as OOV\n",
        ("tests/unit/serving/test_api.py",),
    ),
    Mutant(
        "validation-failed",
        "the launcher fails fast on KubeRay's ValidationFailed",
        "ray_app/platform/launch/kuberay.py",
        'TERMINAL_DEPLOYMENT = ("Complete", "Failed", "ValidationFailed")\n',
        'TERMINAL_DEPLOYMENT = ("Complete", "Failed")  # mutant\n',
        ("tests/unit/platform/test_launch.py",),
    ),
    Mutant(
        "deploy-version",
        "deploy waits until the new model version is served",
        "ray_app/platform/launch/kuberay.py",
        "            if serving == self.version:\n",
        "            if True:  # mutant: trusts RUNNING\n",
        ("tests/unit/platform/test_launch.py",),
    ),
    Mutant(
        "no-state-api",
        "distributed Tune trials do not hang: a stopped trial's worker group is freed",
        "ray_app/core/runtime.py",
        '    ray.init(address="local", include_dashboard=True, log_to_driver=True)\n',
        '    ray.init(address="local", include_dashboard=False, log_to_driver=True)  # mutant\n',
        (
            "tests/integration/training/test_tune.py::test_distributed_trials_run_a_two_worker_group_each_on_two_cpus",
        ),
    ),
    Mutant(
        "test-overlap",
        "a test file that repeats training rows is refused",
        "ray_app/data/splits.py",
        "    if rate > cfg.max_test_overlap:\n",
        "    if False:  # mutant: overlap guard off\n",
        ("tests/unit/data/test_files_and_splits.py",),
    ),
    Mutant(
        "lock-no-hashes",
        "make setup installs every package with --require-hashes",
        "Makefile",
        "PIP_HASHED := --quiet --require-hashes --no-deps\n",
        "PIP_HASHED := --quiet --no-deps  # mutant: hashes not checked\n",
        ("tests/unit/test_locks.py",),
    ),
    Mutant(
        "lock-unhashed-pin",
        "every lock line carries its sha256",
        "requirements-torch.lock",
        "torch==2.13.0+cpu \\\n",
        "torch==2.13.0+cpu\n",
        ("tests/unit/test_locks.py",),
    ),
    Mutant(
        "extra-index",
        "PyTorch's index serves torch alone (no --extra-index-url)",
        ".github/workflows/ci.yml",
        "  TORCH_INDEX_URL: https://download.pytorch.org/whl/cpu\n",
        "  PIP_EXTRA_INDEX_URL: https://download.pytorch.org/whl/cpu  # mutant\n",
        ("tests/unit/test_locks.py",),
    ),
]


def run(mutant: Mutant) -> dict[str, object]:
    """Apply, test, restore. 'killed': the tests failed, as they must."""
    path = REPO / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.name}: the line to mutate is not in {mutant.path} exactly once")
    start = time.monotonic()
    try:
        path.write_text(original.replace(mutant.old, mutant.new))
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        path.write_text(original)
    summary = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    return {
        "mutant": mutant.name,
        "claim": mutant.claim,
        "file": mutant.path,
        "tests": list(mutant.tests),
        "result": "killed" if proc.returncode != 0 else "SURVIVED",
        "failed_test": summary[0] if summary else "",
        "seconds": round(time.monotonic() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="mutant names")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    for mutant in chosen:  # every line to mutate still exists, before a long run starts
        if (REPO / mutant.path).read_text().count(mutant.old) != 1:
            raise SystemExit(f"{mutant.name}: the line to mutate is not in {mutant.path} once")
    rows = []
    for mutant in chosen:
        rows.append(run(mutant))
        row = rows[-1]
        print(f"{row['result']:9} {row['mutant']:18} {row['seconds']:6.1f} s  {row['failed_test']}",
              flush=True)  # fmt: skip
    print("\n| mutant | claim it breaks | result | test that failed |\n|---|---|---|---|")
    for row in rows:
        failed = str(row["failed_test"]).removeprefix("FAILED ").split(" - ")[0]
        print(f"| {row['mutant']} | {row['claim']} | {row['result']} | `{failed}` |")
    out = REPO / "benchmarks" / "results" / "mutants.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.only and out.exists():  # a partial run updates its mutants' rows, keeps the rest
        fresh = {row["mutant"]: row for row in rows}
        kept = [fresh.pop(row["mutant"], row) for row in json.loads(out.read_text())]
        rows = kept + list(fresh.values())
    out.write_text(json.dumps(rows, indent=1) + "\n")
    if any(row["result"] != "killed" for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
