#!/usr/bin/env bash
# Offline security and hygiene gates (run by .ci/run and by CI's security job). Each one fails
# the run on a finding; tests/test_gates.py plants a problem for each and checks it bites.
#   .ci/gates.sh            # needs .venv (make setup) and .venv-gates (make gates-setup)
set -euo pipefail
cd "$(dirname "$0")/.."
G=.venv-gates/bin
V=.venv/bin
fail=0
gate() {
  local name=$1
  shift
  local start=$SECONDS
  if "$@" > ".ci/.gate-$name.log" 2>&1; then
    echo "gate ok    $name ($((SECONDS - start)) s)"
  else
    echo "gate FAIL  $name ($((SECONDS - start)) s):"
    sed 's/^/    /' ".ci/.gate-$name.log" | tail -40
    fail=1
  fi
}
render() {  # every overlay and KFP access kustomization, rendered, for checkov
  local out=.ci/.rendered
  rm -rf "$out" && mkdir -p "$out"
  for overlay in kuberay/overlays/*/ kuberay/kfp/*/; do
    "$V/kubectl" kustomize "$overlay" > "$out/$(basename "$overlay").yaml"
  done
}
render

gate semgrep "$G/semgrep" scan --config .semgrep --metrics=off --disable-version-check --error \
  --quiet ray_app benchmarks tests .ci pipelines
gate secrets sh -c "git ls-files -z | xargs -0 $G/detect-secrets-hook --baseline .secrets.baseline \
  --exclude-files '^(data/|requirements.*\.lock$|pipelines/.*\.yaml$)'"
gate hadolint "$V/hadolint" docker/Dockerfile
gate checkov "$G/checkov" --quiet --compact --skip-download \
  -f docker/Dockerfile -f .ci/.rendered/local.yaml -f .ci/.rendered/gke.yaml \
  -f .ci/.rendered/gke-gpu.yaml -f .ci/.rendered/gke-tls.yaml -f .ci/.rendered/single-user.yaml \
  -f .ci/.rendered/multi-user.yaml
gate actionlint "$G/actionlint" .github/workflows/ci.yml .github/workflows/release.yml
gate zizmor "$G/zizmor" --offline --min-severity low .github/workflows
gate pre-commit-config "$G/pre-commit" validate-config .pre-commit-config.yaml
exit $fail
