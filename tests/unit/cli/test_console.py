"""--json's contract: stdout is the result line and nothing else, whatever prints when."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import os, sys, threading
from ray_app.cli.console import emit, stdout_for_result

with stdout_for_result(True):
    print("a library's table")                      # Python, during the work
    os.write(1, b"C++ output on fd 1\\n")           # below Python
late = threading.Thread(target=lambda: print("(raylet) Task ... failed", flush=True))
emit({"rows": 3}, True, "done")
late.start(); late.join()                           # a background thread, after the result
os.write(1, b"more on fd 1\\n")
"""


def test_with_json_stdout_holds_only_the_result_even_what_prints_after_it():
    """A Ray log line printed by a background thread once came after the result line and
    broke `json.loads(last line)` (the multi-node predict test in CI)."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [json.dumps({"rows": 3})]
    for line in ("a library's table", "C++ output on fd 1", "(raylet) Task", "more on fd 1"):
        assert line in proc.stderr, proc.stderr
