#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the web app's browser test (tests/test_app_browser.py).
# Idempotent: does nothing when both are already installed. Needs root (or sudo) and Debian's package mirror.
# Test tools that download their own browser (`playwright install`) do not work offline; Debian's packages do.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "chromium and chromedriver already installed: $(chromium --version 2>/dev/null | head -n1)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_browser.sh: need root (or sudo) to apt-get install chromium chromium-driver" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver
echo "installed: $(chromium --version 2>/dev/null | head -n1); $(chromedriver --version | head -n1)"
