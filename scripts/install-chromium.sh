#!/usr/bin/env bash
# Installs Debian's chromium for the browser test (ui/browser_test.go) when it
# is missing. Quiet and instant when chromium is already there.
set -euo pipefail
for c in "${TENANTSCOPE_CHROMIUM:-}" chromium chromium-browser google-chrome; do
  if [[ -n "$c" ]] && command -v "$c" >/dev/null 2>&1; then exit 0; fi
done
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "install-chromium: chromium is missing and this user cannot install packages; install Debian's 'chromium' (or set TENANTSCOPE_CHROMIUM)" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: chromium is missing and there is no apt-get; install chromium (or set TENANTSCOPE_CHROMIUM)" >&2
  exit 1
fi
echo "install-chromium: installing Debian's chromium for the browser test" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -q --no-install-recommends chromium >/dev/null; then
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
command -v chromium >/dev/null
echo "install-chromium: $(chromium --version 2>/dev/null || echo chromium installed)" >&2
