"""Jobs on this machine: `ray-app <kind>` in a subprocess with its own local Ray (what
`ray-app monitor --retrain` does without a head or a cluster to send the job to)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from ray_app.core.config import AppConfig
from ray_app.core.errors import UserError
from ray_app.platform.launch.base import Job, JobOutcome, failure, parse_result


class HereJobs:
    """`ray-app train|tune --json <args> --tracking-uri <the tracking store>` here."""

    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg

    def command(self, job: Job) -> list[str]:
        return [
            "ray-app",
            job.kind,
            *job.args,
            "--json",
            "--tracking-uri",
            self.cfg.tracking.tracking_uri,
        ]

    def run(self, job: Job) -> JobOutcome:
        binary = str(Path(sys.executable).parent / "ray-app")
        proc = subprocess.run([binary, *self.command(job)[1:]], capture_output=True, text=True)
        if proc.returncode != 0:
            raise failure(f"ray-app {job.kind}", f"exit {proc.returncode}", "", proc.stderr)
        return JobOutcome(job.name or job.kind, "SUCCEEDED", proc.stderr, parse_result(proc.stdout))

    def deploy(self, version: str | None) -> dict[str, Any]:
        raise UserError("deploying needs a Ray head (--local) or the RayService, not 'here'")
