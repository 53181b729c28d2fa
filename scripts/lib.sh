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

# ---------------------------------------------------------------------- processes we start (kafka.sh, prometheus.sh)
# A script sets FB_NAME (its name, the prefix of its messages) before calling these.
#
# die MSG...                 message on stderr, exit 1
# info MSG...                message on stderr
# check_port_number PORT     die unless 1..65535
# port_open HOST PORT        true if something accepts TCP connections there
# our_pid PID_FILE PATTERN   print the pid in PID_FILE if that process is alive and its command line contains
#                            PATTERN (guards against a reused pid); false otherwise
# clean_stale_pid PID_FILE PATTERN   remove PID_FILE when it names no such process
# stop_pid PID WHAT SECONDS  SIGTERM, wait up to SECONDS, then SIGKILL (and wait up to 5 s more)
# show_logs FILE...          the last 25 lines of each non-empty FILE on stderr

die() { echo "${FB_NAME:-flowbreaker}: $*" >&2; exit 1; }
info() { echo "${FB_NAME:-flowbreaker}: $*" >&2; }

check_port_number() {
    [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0 && $1 < 65536)) || die "invalid port '$1'"
}

port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

our_pid() {
    local pid_file=$1 pattern=$2 pid
    [[ -f $pid_file ]] || return 1
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r /proc/$pid/cmdline ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern" || return 1
    fi
    echo "$pid"
}

clean_stale_pid() {
    if [[ -f $1 ]] && ! our_pid "$1" "$2" >/dev/null; then
        info "removing stale pid file $1"
        rm -f "$1"
    fi
}

stop_pid() {
    local pid=$1 what=$2 seconds=$3 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < seconds * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    info "$what (pid $pid) still alive after ${seconds}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}

show_logs() {
    local f
    for f in "$@"; do
        if [[ -s $f ]]; then
            echo "---- last lines of $f" >&2
            tail -n 25 "$f" >&2
        fi
    done
}
