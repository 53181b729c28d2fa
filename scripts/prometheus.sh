#!/usr/bin/env bash
# Local Prometheus (Debian's `prometheus` package) scraping flowbreaker workers, 127.0.0.1 only.
#
#   scripts/prometheus.sh start     install if missing (root: apt-get), write config, start, wait until ready;
#                                   if already running, rewrite the scrape targets (picked up live) and return
#   scripts/prometheus.sh stop      SIGTERM our Prometheus, SIGKILL after the stop timeout
#   scripts/prometheus.sh status    exit 0 if running and ready, 3 if not
#   scripts/prometheus.sh config    only write the config into the data dir and print its path
#   scripts/prometheus.sh install   only make sure `prometheus` and `promtool` are installed
#
# Prints the URL (start, status) or the config path (config) on stdout; messages go to stderr.
#
# Environment:
#   FLOWBREAKER_PROM_PORT           listen port (default 9090), bound on 127.0.0.1 only
#   FLOWBREAKER_PROM_TARGETS        comma-separated host:port of worker /metrics (default 127.0.0.1:6066)
#   FLOWBREAKER_PROM_DIR            data dir (default <repo>/var/prometheus-<port>): config, rules,
#                                   targets.json, pid, log, tsdb
#   FLOWBREAKER_PROM_START_TIMEOUT  seconds to wait for /-/ready (default 60)
#   FLOWBREAKER_PROM_STOP_TIMEOUT   seconds between SIGTERM and SIGKILL (default 20)
#   FLOWBREAKER_PROM_RETENTION      TSDB retention (default 2d)
set -euo pipefail

HOST=127.0.0.1
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
SRC_CONFIG="$REPO_DIR/dashboards/prometheus.yml"
SRC_RULES="$REPO_DIR/dashboards/alerts.yml"

PORT=${FLOWBREAKER_PROM_PORT:-9090}
TARGETS=${FLOWBREAKER_PROM_TARGETS:-127.0.0.1:6066}
DATA_DIR=${FLOWBREAKER_PROM_DIR:-$REPO_DIR/var/prometheus-$PORT}
START_TIMEOUT=${FLOWBREAKER_PROM_START_TIMEOUT:-60}
STOP_TIMEOUT=${FLOWBREAKER_PROM_STOP_TIMEOUT:-20}
RETENTION=${FLOWBREAKER_PROM_RETENTION:-2d}

CONFIG="$DATA_DIR/prometheus.yml"
RULES="$DATA_DIR/alerts.yml"
TARGETS_FILE="$DATA_DIR/targets.json"
TSDB="$DATA_DIR/data"
PID_FILE="$DATA_DIR/prometheus.pid"
LOG_FILE="$DATA_DIR/prometheus.log"
URL="http://$HOST:$PORT"

# Process helpers (die, info, port_open, our_pid, stop_pid, ...) are in lib.sh, shared with kafka.sh.
source "$SCRIPT_DIR/lib.sh"
FB_NAME=prometheus.sh
PROM_CMDLINE="--config.file=$CONFIG"   # how our Prometheus's command line is recognised (pid reuse)

check_seconds() {
    [[ $2 =~ ^[0-9]+$ ]] && (($2 > 0)) || die "$1 must be a positive whole number of seconds, got '$2'"
}

# True if our Prometheus answers /-/ready with 200.
ready() {
    curl -fsS --max-time 2 -o /dev/null "$URL/-/ready" 2>/dev/null
}

cmd_install() {
    if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "prometheus is not installed; as root: apt-get install -y prometheus"
    command -v apt-get >/dev/null 2>&1 || die "prometheus is not installed and apt-get is not available"
    info "installing Debian's prometheus package (one time)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends prometheus >&2 || die "apt-get install prometheus failed"
    command -v prometheus >/dev/null 2>&1 || die "prometheus still missing after apt-get install"
}

# targets.json (file_sd) from FLOWBREAKER_PROM_TARGETS; written atomically since
# a running Prometheus watches the file.
write_targets() {
    local t list="" sep=""
    local -a items
    IFS=',' read -r -a items <<<"$TARGETS"
    for t in "${items[@]}"; do
        t=${t//[[:space:]]/}
        [[ -z $t ]] && continue
        [[ $t =~ ^[A-Za-z0-9.:_-]+:[0-9]+$ ]] || die "invalid target '$t' in FLOWBREAKER_PROM_TARGETS (want host:port)"
        list+="$sep\"$t\""
        sep=", "
    done
    [[ -n $list ]] || die "FLOWBREAKER_PROM_TARGETS is empty"
    printf '[\n  {"targets": [%s], "labels": {}}\n]\n' "$list" >"$TARGETS_FILE.tmp"
    mv -f "$TARGETS_FILE.tmp" "$TARGETS_FILE"
}

write_config() {
    [[ -f $SRC_CONFIG && -f $SRC_RULES ]] || die "missing $SRC_CONFIG or $SRC_RULES"
    mkdir -p "$DATA_DIR" "$TSDB"
    {
        echo "# Copied from dashboards/prometheus.yml by scripts/prometheus.sh (rewritten on every start)."
        cat "$SRC_CONFIG"
    } >"$CONFIG"
    cp "$SRC_RULES" "$RULES"
    write_targets
}

wait_ready() {
    local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
    until ready; do
        kill -0 "$pid" 2>/dev/null || { show_logs "$LOG_FILE"; rm -f "$PID_FILE"; die "prometheus (pid $pid) exited during startup"; }
        ((SECONDS < deadline)) || { show_logs "$LOG_FILE"; die "prometheus (pid $pid) not ready at $URL within ${START_TIMEOUT}s"; }
        sleep 0.2
    done
}

cmd_start() {
    local pid started
    clean_stale_pid "$PID_FILE" "$PROM_CMDLINE"
    if pid=$(our_pid "$PID_FILE" "$PROM_CMDLINE"); then
        write_targets
        ready || wait_ready "$pid"
        info "already running (pid $pid); scrape targets: $TARGETS"
        echo "$URL"
        return 0
    fi
    cmd_install
    command -v curl >/dev/null 2>&1 || die "curl not found (needed for the readiness check)"
    port_open "$HOST" "$PORT" && die "port $PORT on $HOST is already in use by another process"
    write_config
    if command -v promtool >/dev/null 2>&1; then
        promtool check config "$CONFIG" >"$DATA_DIR/promtool.out" 2>&1 \
            || { cat "$DATA_DIR/promtool.out" >&2; die "promtool rejected $CONFIG"; }
    fi
    started=$SECONDS
    # Debian's package ships no console templates in the default place: leave those flags out.
    nohup prometheus \
        --config.file="$CONFIG" \
        --storage.tsdb.path="$TSDB" \
        --storage.tsdb.retention.time="$RETENTION" \
        --web.listen-address="$HOST:$PORT" \
        --web.external-url="$URL/" \
        --log.level=info \
        >"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
    info "started prometheus pid $pid (data dir $DATA_DIR), scraping $TARGETS; waiting for $URL/-/ready"
    wait_ready "$pid"
    info "ready in $((SECONDS - started)) s"
    echo "$URL"
}

cmd_stop() {
    local pid
    if ! pid=$(our_pid "$PID_FILE" "$PROM_CMDLINE"); then
        clean_stale_pid "$PID_FILE" "$PROM_CMDLINE"
        info "not running ($DATA_DIR)"
        return 0
    fi
    stop_pid "$pid" prometheus "$STOP_TIMEOUT"
    rm -f "$PID_FILE"
    info "stopped (pid $pid)"
}

cmd_status() {
    local pid
    if pid=$(our_pid "$PID_FILE" "$PROM_CMDLINE") && ready; then
        echo "running pid $pid at $URL (data dir $DATA_DIR)"
        return 0
    fi
    if [[ -n ${pid:-} ]]; then
        echo "starting pid $pid ($URL not ready yet)"
    else
        clean_stale_pid "$PID_FILE" "$PROM_CMDLINE"
        echo "not running ($URL, data dir $DATA_DIR)"
    fi
    return 3
}

cmd_config() {
    write_config
    echo "$CONFIG"
}

main() {
    check_port_number "$PORT"
    check_seconds FLOWBREAKER_PROM_START_TIMEOUT "$START_TIMEOUT"
    check_seconds FLOWBREAKER_PROM_STOP_TIMEOUT "$STOP_TIMEOUT"
    case ${1:-} in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        config) cmd_config ;;
        install) cmd_install ;;
        *)
            echo "usage: $0 start|stop|status|config|install" >&2
            exit 2
            ;;
    esac
}

main "$@"
