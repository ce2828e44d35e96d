#!/usr/bin/env bash
# Installs Debian's prometheus (prometheus and promtool) for the metrics tests
# (a real scrape of the suite, promtool check/test of the generated rules)
# when it is missing. Quiet and instant when it is already there.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then exit 0; fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "install-prometheus: prometheus is missing and this user cannot install packages; install Debian's 'prometheus'" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-prometheus: prometheus is missing and there is no apt-get; install prometheus and promtool" >&2
  exit 1
fi
echo "install-prometheus: installing Debian's prometheus for the metrics tests" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null; then
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi
# The package's service is not wanted here (no init in CI containers anyway).
command -v promtool >/dev/null
echo "install-prometheus: $(prometheus --version 2>&1 | head -1)" >&2
