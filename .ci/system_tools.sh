#!/usr/bin/env bash
# System tools the test tiers run that PyPI does not ship, from Debian: promtool (package
# prometheus) runs the alert rules' unit tests; PostgreSQL (package postgresql: initdb and
# postgres under /usr/lib/postgresql/<major>/bin) is the MLflow store of the tracking tests. CI runs as root and installs them; elsewhere
# this says what to install and stops.
set -euo pipefail
need=()
command -v promtool >/dev/null || need+=(prometheus)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || command -v postgres >/dev/null \
  || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "error: the tests need ${need[*]} (Debian/Ubuntu: sudo apt-get install" \
       "--no-install-recommends ${need[*]}; macOS: brew install prometheus postgresql)" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
install || { apt-get update -qq >/dev/null && install; }
# The package's service is not wanted (there is no init here; on a host with one, stop it).
command -v systemctl >/dev/null && systemctl disable --now prometheus postgresql 2>/dev/null || true
# postgresql's postinst creates (and may start) a cluster on 5432: the tests start their own.
command -v pg_lsclusters >/dev/null && pg_lsclusters -h | while read -r version name _; do
  pg_ctlcluster "$version" "$name" stop 2>/dev/null || true; done
command -v promtool >/dev/null
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || command -v postgres >/dev/null
