"""Regenerate the README's pictures from real runs (rerunnable; the images are committed).

    python docs/pictures.py                       # trains a model into a temp store first
    python docs/pictures.py --tracking-uri sqlite:///$PWD/mlflow.db

- evaluation plots (ROC, calibration, confusion matrix) of the champion's MLflow run, as the
  training logged them;
- the Kubeflow pipeline's graph, drawn from the compiled `pipelines/adult_income.yaml`;
- a drift plot of `ray-app monitor` on adult.test rows with ages +15 years.
- pages in a browser (Playwright, `pip install -e '.[docs]'`, driving Debian's Chromium,
  `apt-get install chromium`): the MLflow UI (`mlflow ui` on the same store) at the champion's
  run, and the API's /docs page of a real `ray-app serve` of the champion (Swagger UI served by
  the app itself, no CDN).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "images"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}


def _run(*args: str, cwd: Path) -> dict[str, Any]:
    proc = subprocess.run([str(BIN / "ray-app"), *args, "--json"], env=ENV, cwd=cwd,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def evaluation_plots(tracking: str, out: Path) -> list[Path]:
    """The champion's run's evaluation/*.png, as `ray-app train` logged them."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking)
    version = MlflowClient().get_model_version_by_alias("adult-income", "champion")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(run_id=version.run_id,
                                                         artifact_path="evaluation",
                                                         dst_path=tmp))  # fmt: skip
        copied = []
        for name in ("roc.png", "calibration.png", "confusion_matrix.png"):
            copied.append(Path(shutil.copy(local / name, out / name)))
    return copied


def _short(condition: str | None) -> str:
    if not condition:
        return ""
    name = condition.split("pipelinechannel--", 1)[-1].split("'", 1)[0]
    name = "improved" if name == "evaluate-op-Output" else name
    return f"if not {name}" if condition.startswith("!") else f"if {name}"


def pipeline_graph(spec: Path, out: Path) -> Path:
    """Boxes and arrows of the compiled pipeline: leaf tasks as boxes, conditions as labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = yaml.safe_load(spec.read_text())
    components = doc["components"]
    labels: dict[str, str] = {}
    edges: list[tuple[str, str]] = []

    def expand(tasks: dict[str, Any], condition: str) -> dict[str, tuple[list, list]]:
        ends: dict[str, tuple[list, list]] = {}
        for name, task in tasks.items():
            comp = components[task["componentRef"]["name"]]
            own = _short(task.get("triggerPolicy", {}).get("condition")) or condition
            if "dag" in comp:
                inner = expand(comp["dag"]["tasks"], own)
                sub = comp["dag"]["tasks"]
                entries = [e for n, (es, _) in inner.items()
                           if not sub[n].get("dependentTasks") for e in es]  # fmt: skip
                ends[name] = (entries, [x for _, xs in inner.values() for x in xs])
            else:
                labels[name] = own
                ends[name] = ([name], [name])
        for name, task in tasks.items():
            for dep in task.get("dependentTasks", []):
                edges.extend((x, e) for x in ends[dep][1] for e in ends[name][0])
        return ends

    expand(doc["root"]["dag"]["tasks"], "")
    layer = dict.fromkeys(labels, 0)
    for _ in labels:  # longest path from a root
        for a, b in edges:
            layer[b] = max(layer[b], layer[a] + 1)
    rows: dict[int, list[str]] = {}
    for name in sorted(labels):
        rows.setdefault(layer[name], []).append(name)
    pos = {n: (x - (len(ns) - 1) / 2, -y) for y, ns in rows.items() for x, n in enumerate(ns)}
    fig, ax = plt.subplots(figsize=(7, 1.3 * len(rows) + 0.5))
    for a, b in edges:
        arrow = {"arrowstyle": "-|>", "color": "#555", "shrinkA": 18, "shrinkB": 24}
        ax.annotate("", xy=pos[b], xytext=pos[a], arrowprops=arrow)
    for name, (x, y) in pos.items():
        text = name.removesuffix("-op") + (f"\n({labels[name]})" if labels[name] else "")
        ax.text(x, y, text, ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round,pad=0.5", "fc": "#e8f0fe", "ec": "#3b6fd6"})  # fmt: skip
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.axis("off")
    ax.set_title("pipelines/adult_income.yaml (Kubeflow Pipelines v2)", fontsize=10)
    fig.tight_layout()
    path = out / "pipeline.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def drift_plot(tracking: str, work: Path, out: Path) -> Path:
    """`ray-app monitor` on 3,000 adult.test rows with ages +15: its plot for age."""
    from ray_app.core.schema import CATEGORICAL_COLUMNS, LABEL_COLUMN, LABELS
    from ray_app.data.files import read_table

    rows = read_table(REPO / "data" / "adult.test").head(3000)
    rows["age"] = (rows["age"] + 15).clip(upper=90)
    rows[LABEL_COLUMN] = [LABELS[int(v)] for v in rows[LABEL_COLUMN]]
    for column in CATEGORICAL_COLUMNS:
        rows[column] = rows[column].fillna("?")
    rows.to_csv(work / "older.csv", index=False)
    report = _run("monitor", "--data", str(work / "older.csv"), "--tracking-uri", tracking,
                  "--out", str(work / "report"), cwd=work)  # fmt: skip
    return Path(shutil.copy(Path(report["report"]) / "drift_age.png", out / "drift_age.png"))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _started(args: list[str], url: str, cwd: Path, timeout_s: float = 180) -> subprocess.Popen:
    """`args` in a process group of its own (stopped by `_stop`), once `url` answers 200."""
    import time
    import urllib.request

    log = (cwd / f"{Path(args[0]).name}-{_free_port()}.log").open("wb")
    proc = subprocess.Popen(args, cwd=cwd, env=ENV, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(args)} exited with {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(1)
    _stop(proc)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT to the whole group (a `serve run` shuts its local Ray down), then SIGKILL."""
    import signal

    for sig, wait in ((signal.SIGINT, 60), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium here: apt-get install chromium (Debian), then rerun")


def browser_pages(tracking: str, work: Path, out: Path) -> list[Path]:
    """The MLflow UI at the champion's run (overview, and its per-epoch validation charts),
    and /docs of the champion served by `ray-app serve`: Playwright driving this machine's
    Chromium (pip install -e '.[docs]'; Playwright's own browser download is not needed)."""
    import time

    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    client = MlflowClient(tracking)
    version = client.get_model_version_by_alias("adult-income", "champion")
    run = client.get_run(str(version.run_id))
    pages = []
    with sync_playwright() as driver:
        root = os.geteuid() == 0  # Chromium refuses to run as root with its sandbox
        browser = driver.chromium.launch(executable_path=_chromium(),
                                         args=["--no-sandbox"] if root else [])  # fmt: skip
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        port = _free_port()
        ui = _started([str(BIN / "mlflow"), "ui", "--backend-store-uri", tracking, "--host",
                       "127.0.0.1", "--port", str(port)], f"http://127.0.0.1:{port}/health",
                      work)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}/#/experiments/{run.info.experiment_id}/runs/"
            page.goto(f"{base}{run.info.run_id}/model-metrics")
            search = page.get_by_placeholder("Search metric charts")
            search.wait_for(timeout=60_000)
            close = page.locator("button[aria-label='Close']")  # the assistant side panel
            if close.count():
                close.first.click()
            search.fill("val_")  # the per-epoch validation curves (and the best values)
            time.sleep(4)  # the charts draw after their data arrive
            page.screenshot(path=out / "mlflow_metrics.png")
            pages.append(out / "mlflow_metrics.png")
            page.set_viewport_size({"width": 1400, "height": 1500})
            page.goto(f"{base}{run.info.run_id}")
            page.get_by_text("Registered models").wait_for(timeout=60_000)
            time.sleep(2)
            page.screenshot(path=out / "mlflow_run.png")
            pages.append(out / "mlflow_run.png")
        finally:
            _stop(ui)
        port = _free_port()
        serve = _started([str(BIN / "ray-app"), "serve", "--tracking-uri", tracking, "--port",
                          str(port)], f"http://127.0.0.1:{port}/health", work, 300)  # fmt: skip
        try:
            page.set_viewport_size({"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/docs")
            page.get_by_text("/predict").first.wait_for(timeout=60_000)
            page.screenshot(path=out / "api_docs.png")
            pages.append(out / "api_docs.png")
        finally:
            _stop(serve)
        browser.close()
    return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None, help="use this store's champion")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pictures_"))
    tracking = args.tracking_uri
    if tracking is None:
        tracking = f"sqlite:///{work / 'mlflow.db'}"
        print("training a model (ray-app train) ...")
        _run("train", "--tracking-uri", tracking, "--storage-path", str(work / "rr"), cwd=work)
    written = [*evaluation_plots(tracking, args.out),
               pipeline_graph(REPO / "pipelines" / "adult_income.yaml", args.out),
               drift_plot(tracking, work, args.out),
               *browser_pages(tracking, work, args.out)]  # fmt: skip
    for path in written:
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    main()
