#!/bin/sh
# Runs a daemon configured by environment variables under `handoff-bench compare`,
# which speaks the contract's flags (see `handoff-bench compare --help`):
#
#   handoff-bench compare \
#     --daemon 'bench/examples/env-daemon.sh -s {socket} {args} -- php /opt/peer/daemon.php' \
#     --daemon-name php
#
# compare replaces {socket} with the cell's socket path and {args} with the cell's
# flags, `-d DELAY -b mock|openai [--openai-base URL] --benchmark`, and already puts
# OPENAI_API_KEY, OPENAI_API_BASE, OPENAI_HTTP2_ENABLED and (TLS) SSL_CERT_FILE in
# the environment. This script turns the flags into variables and then `exec`s the
# daemon, so the pid compare samples (CPU, memory, fds) is the daemon's own: keep the
# `exec`, and do not start the daemon in the background or through a supervisor.
#
# The variables' names are the defaults below; a daemon that reads others is served
# by setting the *_VAR names, e.g. through env (which execs too):
#
#   --daemon 'env SOCKET_VAR=LISTEN_PATH DELAY_VAR=TOKEN_DELAY \
#             bench/examples/env-daemon.sh -s {socket} {args} -- /opt/peer/daemon'
#
# An empty *_VAR leaves that setting out. compare reads the daemon's summary from
# its stdout when it stops (SIGTERM), or from stderr if stdout has none: `name: count`
# or `name=count` pairs, the peak under a name saying peak and streams or
# concurrency (`Peak concurrent streams: 1000`, `peak_streams=1000`).
set -eu

SOCKET_VAR=${SOCKET_VAR-DAEMON_SOCKET}         # -s PATH
MODE_VAR=${MODE_VAR-DAEMON_SOCKET_MODE}        # -m MODE (octal)
DELAY_VAR=${DELAY_VAR-MOCK_DELAY_MS}           # -d MS, between mock events
BACKEND_VAR=${BACKEND_VAR-DAEMON_BACKEND}      # -b mock|openai
BASE_VAR=${BASE_VAR-OPENAI_API_BASE}           # --openai-base URL
BENCHMARK_VAR=${BENCHMARK_VAR-BENCHMARK}       # --benchmark, as 1
MAX_VAR=${MAX_VAR-MAX_CONNECTIONS}             # --max-connections N

usage() {
    echo "usage: $0 [-s PATH] [-m MODE] [-d MS] [-b mock|openai] [--openai-base URL]" \
        "[--benchmark] [--max-connections N] -- DAEMON [ARG...]" >&2
    exit 2
}

# export NAME=VALUE, NAME taken from a *_VAR setting (empty: skip).
put() {
    name=$1
    [ -n "$name" ] || return 0
    case $name in
    [!A-Za-z_]* | *[!A-Za-z0-9_]*)
        echo "$0: $name is not a variable name" >&2
        exit 2
        ;;
    esac
    export "$name=$2"
}

# A flag's value: there must be one.
value() {
    [ "$#" -ge 2 ] || {
        echo "$0: $1 needs a value" >&2
        usage
    }
}

while [ "$#" -gt 0 ]; do
    case $1 in
    -s | --socket) value "$@"; put "$SOCKET_VAR" "$2"; shift 2 ;;
    -m | --mode) value "$@"; put "$MODE_VAR" "$2"; shift 2 ;;
    -d | --delay) value "$@"; put "$DELAY_VAR" "$2"; shift 2 ;;
    -b | --backend) value "$@"; put "$BACKEND_VAR" "$2"; shift 2 ;;
    --openai-base) value "$@"; put "$BASE_VAR" "$2"; shift 2 ;;
    --max-connections) value "$@"; put "$MAX_VAR" "$2"; shift 2 ;;
    --benchmark) put "$BENCHMARK_VAR" 1; shift ;;
    --) shift; break ;;
    *)
        echo "$0: unknown flag $1 (the daemon's command goes after --)" >&2
        usage
        ;;
    esac
done
[ "$#" -gt 0 ] || usage
exec "$@"
