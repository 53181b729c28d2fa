# Helpers shared by the scripts in this directory. Source it (it defines functions and sets nothing else):
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# fb_python            the Python that has flowbreaker installed (see below), as a path or command name
# fb_scripts_dir PY    the directory of PY's console scripts (where `flowbreaker` is installed)

FB_REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The interpreter every script and the tests use, in this order:
#   1. $FLOWBREAKER_PYTHON, when set: an interpreter chosen explicitly (e.g. one with flowbreaker installed already);
#   2. the active virtualenv ($VIRTUAL_ENV), when one is active;
#   3. the project's virtualenv <repo>/.venv, which scripts/install.sh creates.
fb_python() {
    if [[ -n ${FLOWBREAKER_PYTHON:-} ]]; then
        echo "$FLOWBREAKER_PYTHON"
    elif [[ -n ${VIRTUAL_ENV:-} ]]; then
        echo "$VIRTUAL_ENV/bin/python"
    else
        echo "$FB_REPO_DIR/.venv/bin/python"
    fi
}

fb_scripts_dir() {
    "$1" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'
}
