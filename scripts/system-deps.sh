#!/usr/bin/env bash
# Installs the Debian packages syncmos needs, only those that are missing. Safe to run twice.
set -euo pipefail

missing=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_cmd ffmpeg || missing+=(ffmpeg)
have_cmd espeak-ng || missing+=(espeak-ng)
ls /usr/lib/x86_64-linux-gnu/libespeak-ng.so.1 /usr/lib/*/libespeak-ng.so.1 >/dev/null 2>&1 || missing+=(libespeak-ng1)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
have_cmd redis-server || missing+=(redis-server)
have_cmd chromium || missing+=(chromium)
have_cmd chromedriver || missing+=(chromium-driver)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
