#!/bin/sh
# tests/bench/thrift_bench.sh BUILD_DIR [SECONDS]
# Thrift calls/s and p50/p99 through the platform (faasd: discovery, worker manager,
# gateway Thrift port, agent) vs direct to the same user server, framed binary,
# pipelined (depth 16) and not (depth 1), 1 and 8 connections. Two user servers:
# tests/bench/thrift_userd.c (native, so the platform's own cost shows) and
# examples/thrift-calc (python3-thrift TThreadedServer). Prints one line per run.
set -eu
BUILD=$(cd "${1:?usage: thrift_bench.sh BUILD_DIR [SECONDS]}" && pwd)
SECS=${2:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/thrift-bench.XXXXXX)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    for p in $PIDS; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# N distinct free ports, each with a free neighbour (the daemons' metrics listen on port+1)
freeports() {
    /usr/bin/python3 -c '
import socket, sys
held, out = [], []
while len(out) < int(sys.argv[1]):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        a.close(); continue
    held += [a, b]; out.append(p)
print(" ".join(map(str, out)))' "$1"
}
wait_port() {
    i=0
    until /usr/bin/python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 200 ] || { echo "port $1 never opened" >&2; exit 1; }; sleep 0.05
    done
}

cc -O2 -Wall -Wextra -Werror -pthread -o "$TMP/thrift_load" "$ROOT/tests/bench/thrift_load.c"
mkdir -p "$TMP/userd"
cc -O2 -Wall -Wextra -Werror -o "$TMP/userd/thrift_userd" "$ROOT/tests/bench/thrift_userd.c"

set -- $(freeports 6)
HTTP=$1 TPORT=$2 DISC=$3 WM=$4 DC=$5 DP=$6
"$BUILD/faasd" --state-dir "$TMP/state" --http 127.0.0.1:$HTTP --thrift 127.0.0.1:$TPORT \
    --discovery-listen 127.0.0.1:$DISC --workermgr-listen 127.0.0.1:$WM --pool-size 2 --bin-dir "$BUILD" \
    >"$TMP/faasd.log" 2>&1 &
PIDS="$PIDS $!"
wait_port "$TPORT"
export FAAS_DISCOVERY=127.0.0.1:$DISC FAAS_GATEWAY=http://127.0.0.1:$HTTP
i=0
# discovery makes the platform token at its first start; faasctl sends it from FAAS_TOKEN
until [ -s "$TMP/state/discovery/token" ] && export FAAS_TOKEN=$(cat "$TMP/state/discovery/token") &&
  "$BUILD/faasctl" list >/dev/null 2>&1; do i=$((i + 1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done

cat >"$TMP/userd.yaml" <<EOF
name: benchc
code: $TMP/userd
command: [./thrift_userd]
protocol: thrift
thrift_services: [BenchC]
thrift_transport: framed
health: {tcp: true}
EOF
cat >"$TMP/calc.yaml" <<EOF
name: benchpy
code: $ROOT/examples/thrift-calc
command: [/usr/bin/python3, calc_server.py, framed, binary, --multiplexed]
protocol: thrift
thrift_services: [Calculator]
thrift_transport: framed
health: {tcp: true}
EOF
"$BUILD/faasctl" deploy -f "$TMP/userd.yaml" >/dev/null
"$BUILD/faasctl" deploy -f "$TMP/calc.yaml" >/dev/null

# the same servers, run directly
"$TMP/userd/thrift_userd" "$DC" >/dev/null 2>&1 &
PIDS="$PIDS $!"
(cd "$ROOT/examples/thrift-calc" && PORT=$DP exec /usr/bin/python3 calc_server.py framed binary --multiplexed) \
    >/dev/null 2>&1 &
PIDS="$PIDS $!"
wait_port "$DC"
wait_port "$DP"

# warm: the first platform call cold-starts the function
"$TMP/thrift_load" -p "$TPORT" -m BenchC:add -t 1 >/dev/null
"$TMP/thrift_load" -p "$TPORT" -m Calculator:add -t 1 >/dev/null

run() { # label port method conns depth
    printf '%-22s ' "$1"
    "$TMP/thrift_load" -p "$2" -m "$3" -c "$4" -d "$5" -t "$SECS"
}
for cd in "1 1" "8 1" "1 16" "8 16"; do
    set -- $cd
    run "native direct" "$DC" BenchC:add "$1" "$2"
    run "native platform" "$TPORT" BenchC:add "$1" "$2"
done
for cd in "1 1" "8 1" "1 16"; do
    set -- $cd
    run "python direct" "$DP" Calculator:add "$1" "$2"
    run "python platform" "$TPORT" Calculator:add "$1" "$2"
done
