#!/usr/bin/env bash
# System tools the test tiers run that PyPI does not ship, from Debian: promtool (package
# prometheus) runs the alert rules' unit tests. CI runs as root and installs them; elsewhere
# this says what to install and stops.
set -euo pipefail
need=()
command -v promtool >/dev/null || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "error: the tests need ${need[*]} (Debian/Ubuntu: sudo apt-get install" \
       "--no-install-recommends ${need[*]}; macOS: brew install prometheus)" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
install || { apt-get update -qq >/dev/null && install; }
# The package's service is not wanted (there is no init here; on a host with one, stop it).
command -v systemctl >/dev/null && systemctl disable --now prometheus 2>/dev/null || true
command -v promtool >/dev/null
