#!/usr/bin/env bash
# Installs what the storage emulators of the tests need (tests/storage_emulators.py) on a
# Debian machine: node and npm (from Debian, only when node is missing) and Azurite (npm) in
# the test cache, ${XDG_CACHE_HOME:-~/.cache}/daskscore-test/azurite, where the fixtures look.
# moto's S3 server, adlfs and s3fs are Python packages: pip install -e ".[test]" brings them.
# Idempotent: a second run changes nothing.
set -euo pipefail

CACHE="${DASKSCORE_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/daskscore-test}"
AZURITE_DIR="$CACHE/azurite"
AZURITE_SPEC="${AZURITE_SPEC:-azurite@3}"
AZURITE_BIN="$AZURITE_DIR/node_modules/.bin/azurite-blob"

if ! command -v node >/dev/null 2>&1; then
    echo "emulators: node is missing; installing nodejs and npm from Debian"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        nodejs npm ca-certificates
fi
echo "emulators: node $(node --version)"

if [ -x "$AZURITE_BIN" ] && "$AZURITE_BIN" --version >/dev/null 2>&1; then
    echo "emulators: Azurite $("$AZURITE_BIN" --version) already in $AZURITE_DIR"
else
    if ! command -v npm >/dev/null 2>&1; then
        echo "emulators: node is installed but npm is not; install npm, then run me again" >&2
        exit 1
    fi
    mkdir -p "$AZURITE_DIR"
    npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --loglevel=error "$AZURITE_SPEC"
    echo "emulators: installed Azurite $("$AZURITE_BIN" --version) in $AZURITE_DIR"
fi

