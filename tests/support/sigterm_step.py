"""A pipeline step process for the SIGTERM test: the real `job_step` (as KFP runs it), its
launcher pointed at the fake API. Prints `created <name>` once its RayJob exists, then waits;
on exit prints one JSON line: the RayJobs deleted and the ones left.

    python -m tests.support.sigterm_step <cleanup>
"""

from __future__ import annotations

import json
import sys
import time

from ray_app.core.config import AppConfig
from ray_app.platform.launch.base import Terminated
from ray_app.platform.launch.kuberay import KubeRayJobs
from ray_app.platform.pipeline import steps
from tests.fakes.kuberay import Clock, FakeKubeRay, JobScript
from tests.support.samples import CRDS


def main(cleanup: str) -> int:
    clock = Clock()
    # A job that would run for days: only the signal ends this step.
    fake = FakeKubeRay(CRDS, clock, {"*": JobScript(10, [(10**7, "SUCCEEDED", "{}\n")])})

    def sleep(seconds: float) -> None:  # real time passes too, so the signal can land
        time.sleep(0.02)
        clock.sleep(seconds)

    def say(line: str) -> None:
        print(line, flush=True)

    def launcher(cfg: AppConfig) -> KubeRayJobs:
        return KubeRayJobs(fake, fake, cfg, say, clock, sleep)

    steps._launcher = launcher  # type: ignore[assignment]
    launch = {"backend": "kuberay", "cleanup": cleanup, "poll_s": 5}
    try:
        steps.job_step("train", launch, "--epochs 2", run_id="run-1", task="train-op")
        code = 0
    except Terminated:
        code = 143
    # Still running: live and not being deleted (a deleted RayJob waits for the operator to
    # drop its finalizer, which needs a reconcile this process no longer runs).
    running = [name for name in fake.jobs
               if (obj := fake._live("rayjobs", name)) is not None
               and not obj["metadata"].get("deletionTimestamp")]  # fmt: skip
    print(json.dumps({"deleted": fake.deleted, "running": running}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
