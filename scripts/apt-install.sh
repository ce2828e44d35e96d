#!/usr/bin/env bash
# apt-install.sh PACKAGE COMMAND... installs Debian's PACKAGE when any of the
# COMMANDs is missing (make test uses it for chromium, the browser test, and
# prometheus, the real scrape and promtool). Quiet and instant when they are
# all there. TENANTSCOPE_CHROMIUM names another browser binary.
set -euo pipefail
pkg=$1; shift
missing=0
for c in "$@"; do
  if [[ $pkg == chromium && -n "${TENANTSCOPE_CHROMIUM:-}" ]] && command -v "$TENANTSCOPE_CHROMIUM" >/dev/null 2>&1; then continue; fi
  command -v "$c" >/dev/null 2>&1 || missing=1
done
[[ $missing == 0 ]] && exit 0
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "apt-install: $pkg is missing and this user cannot install packages; install Debian's '$pkg'" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-install: $pkg is missing and there is no apt-get; install it" >&2
  exit 1
fi
echo "apt-install: installing Debian's $pkg for the tests" >&2
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt run (a second make target, unattended upgrades)
# instead of failing on its lock.
lock=(-o DPkg::Lock::Timeout=600)
if ! $sudo apt-get "${lock[@]}" install -y -q --no-install-recommends "$pkg" >/dev/null; then
  $sudo apt-get "${lock[@]}" update -q >/dev/null
  $sudo apt-get "${lock[@]}" install -y -q --no-install-recommends "$pkg" >/dev/null
fi
for c in "$@"; do command -v "$c" >/dev/null || { echo "apt-install: $pkg installed but $c is still missing" >&2; exit 1; }; done
echo "apt-install: $pkg installed" >&2
