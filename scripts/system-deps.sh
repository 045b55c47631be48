#!/usr/bin/env bash
# Installs the Debian packages syncmos needs, only those that are missing. Safe to run twice.
set -euo pipefail

missing=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_cmd ffmpeg || missing+=(ffmpeg)
have_cmd espeak-ng || missing+=(espeak-ng)
ldconfig -p 2>/dev/null | grep -q "libespeak-ng.so.1 " || missing+=(libespeak-ng1)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
have_cmd redis-server || missing+=(redis-server)
have_cmd chromium || missing+=(chromium)
have_cmd chromedriver || missing+=(chromium-driver)
have_cmd pgrep || missing+=(procps)
# Debian's own python3.11 needs python3.11-venv for `python3.11 -m venv` (pyenv builds have ensurepip).
if have_cmd python3.11 && ! python3.11 -c "import ensurepip" >/dev/null 2>&1; then missing+=(python3.11-venv); fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
