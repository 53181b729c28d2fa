#!/usr/bin/env bash
# Debian's chromium and its WebDriver (chromium-driver), for the console's browser tests
# (tests/integration/test_console.py) and its screenshot (scripts/console_screenshot.py).
#
#   scripts/browser.sh install   install both when missing (as root: apt-get), then print their paths
#   scripts/browser.sh paths     print their paths; exit 3 when one is missing
#
# Prints "CHROMIUM_PATH CHROMEDRIVER_PATH" on stdout; messages go to stderr. Not root and not installed:
# exit 1 with one line saying what to run. Nothing is downloaded but Debian's packages.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$SCRIPT_DIR/lib.sh"
FB_NAME=browser.sh

find_paths() {
    local chromium driver
    chromium=$(command -v chromium || command -v chromium-browser || true)
    driver=$(command -v chromedriver || true)
    [[ -z $driver && -x /usr/lib/chromium/chromedriver ]] && driver=/usr/lib/chromium/chromedriver
    [[ -n $chromium && -n $driver ]] || return 3
    echo "$chromium $driver"
}

cmd_install() {
    if find_paths; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "chromium or chromedriver is missing; as root: apt-get install -y chromium chromium-driver"
    command -v apt-get >/dev/null 2>&1 || die "chromium or chromedriver is missing and apt-get is not available"
    info "installing Debian's chromium and chromium-driver (one time)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2 \
        || die "apt-get install chromium chromium-driver failed"
    find_paths || die "chromium or chromedriver still missing after apt-get install"
}

case ${1:-} in
    install) cmd_install ;;
    paths) find_paths ;;
    *) echo "usage: scripts/browser.sh install|paths" >&2; exit 2 ;;
esac
