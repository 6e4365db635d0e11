#!/usr/bin/env bash
# Unary gRPC through the platform vs direct to the same user server, with h2load.
# Brings up faasd (discovery, worker manager, gateway with a gRPC port) in a temp dir,
# deploys examples/grpc-echo, warms it, then runs h2load with gRPC framing (a 5-byte
# prefixed message, content-type application/grpc, te: trailers) against the gateway's
# gRPC port and against the user server's own port, at several concurrency levels.
# Prints one line per run: target, clients, streams per client, calls/s, p50, p99 (ms).
#
# usage: tests/bench/grpc_bench.sh [N per run]    (BUILD=build by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
N=${1:-5000}
PY=/usr/bin/python3
command -v h2load >/dev/null || { echo "h2load missing (apt-get install nghttp2-client)" >&2; exit 2; }
for b in faasd faasctl faas-gateway faas-agent faas-workermgr faas-discovery; do
  [ -x "$BUILD/$b" ] || { echo "$BUILD/$b missing: make BUILD=$BUILD" >&2; exit 2; }
done

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TMP=$(mktemp -d /tmp/grpc-bench.XXXXXX)
HTTP=$(free_port); GRPC=$(free_port); DISC=$(free_port); WM=$(free_port)
DM=$(free_port); WMM=$(free_port)
FAASD_PID=
cleanup() {
  if [ -n "$FAASD_PID" ]; then
    kill -TERM "$FAASD_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$FAASD_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

"$BUILD/faasd" --state-dir "$TMP/state" --http "127.0.0.1:$HTTP" --grpc "127.0.0.1:$GRPC" \
  --discovery-listen "127.0.0.1:$DISC" --workermgr-listen "127.0.0.1:$WM" \
  --discovery-metrics "127.0.0.1:$DM" --workermgr-metrics "127.0.0.1:$WMM" >"$TMP/faasd.log" 2>&1 &
FAASD_PID=$!
export FAAS_DISCOVERY="127.0.0.1:$DISC" FAAS_GATEWAY="http://127.0.0.1:$HTTP" FAAS_GRPC_GATEWAY="127.0.0.1:$GRPC"
# discovery makes the platform token at its first start; faasctl sends it from FAAS_TOKEN
for _ in $(seq 150); do
  [ -s "$TMP/state/discovery/token" ] && export FAAS_TOKEN=$(cat "$TMP/state/discovery/token")
  "$BUILD/faasctl" list >/dev/null 2>&1 && break; sleep 0.1
done
# the gateway routes once its watch has seen the worker: retry the first call
"$BUILD/faasctl" deploy -f examples/grpc-echo/function.yaml --memory 1Gi --pids 1024 >/dev/null
for _ in $(seq 150); do
  out=$("$BUILD/faasctl" invoke grpc-echo --grpc /echo.Echo/Unary --data warm 2>/dev/null || true)
  [ "$out" = warm ] && break; sleep 0.2
done
[ "$out" = warm ] || { echo "function did not answer"; cat "$TMP/faasd.log"; exit 1; }
USER_PORT=$("$BUILD/faasctl" logs grpc-echo --tail 1000 | sed -n 's/.*grpc-echo listening on \([0-9]*\).*/\1/p' | tail -1)
[ -n "$USER_PORT" ] || { echo "cannot find the user server's port"; exit 1; }

# one request message: 5-byte prefix + 16 bytes
$PY -c 'import sys; m=b"0123456789abcdef"; sys.stdout.buffer.write(b"\0"+len(m).to_bytes(4,"big")+m)' >"$TMP/msg"

run() { # target port clients streams
  local target=$1 port=$2 c=$3 m=$4 log="$TMP/h2load.$1.$3.$4"
  h2load -n "$N" -c "$c" -m "$m" -t 1 --header 'content-type: application/grpc' --header 'te: trailers' \
    -d "$TMP/msg" --log-file "$log.lat" "http://127.0.0.1:$port/echo.Echo/Unary" >"$log" 2>&1 || true
  local rps ok
  rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' "$log")
  ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$log")
  # log lines: start(us) status elapsed(us)
  read -r p50 p99 < <(awk '{print $3}' "$log.lat" | sort -n | awk '{a[NR]=$1} END {
      if (NR == 0) { print "- -"; exit }
      i50 = int(NR*0.50); if (i50 < 1) i50 = 1; i99 = int(NR*0.99); if (i99 < 1) i99 = 1;
      printf "%.2f %.2f\n", a[i50]/1000, a[i99]/1000 }')
  printf "%-9s c=%-3s m=%-3s calls/s=%-9s p50_ms=%-7s p99_ms=%-7s ok=%s/%s\n" "$target" "$c" "$m" "$rps" "$p50" "$p99" "$ok" "$N"
}

echo "# unary /echo.Echo/Unary, 16-byte message, N=$N per run, $(nproc) cores; user server: python3-grpcio"
for cm in "1 1" "4 1" "16 1" "4 16"; do
  set -- $cm
  run direct "$USER_PORT" "$1" "$2"
  run platform "$GRPC" "$1" "$2"
done
