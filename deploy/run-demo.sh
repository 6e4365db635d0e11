#!/usr/bin/env bash
# What `make run` executes: starts faasd (state in ./.faas), deploys examples/hello-http,
# prints how to call it, and stays in the foreground until Ctrl-C, which stops faasd
# (and with it every daemon and pod) cleanly.
# usage: deploy/run-demo.sh BUILD_DIR      (env: FAAS_HTTP, FAAS_DISCOVERY_LISTEN, FAAS_WORKERMGR_LISTEN)
set -uo pipefail
BUILD=${1:?usage: deploy/run-demo.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
cd "$(dirname "$0")/.."
HTTP=${FAAS_HTTP:-127.0.0.1:8080}
DISC=${FAAS_DISCOVERY_LISTEN:-127.0.0.1:7100}
WM=${FAAS_WORKERMGR_LISTEN:-127.0.0.1:7200}
export FAAS_DISCOVERY=$DISC FAAS_GATEWAY=http://$HTTP
CTL="$BUILD/faasctl"

for b in faasd faasctl faas-discovery faas-workermgr faas-gateway faas-agent; do
  [ -x "$BUILD/$b" ] || { echo "run-demo: $BUILD/$b is missing (run make first)" >&2; exit 1; }
done
[ -x examples/hello-http/hello ] || { echo "run-demo: examples/hello-http/hello is missing (run make)" >&2; exit 1; }

"$BUILD/faasd" --state-dir ./.faas --http "$HTTP" --discovery-listen "$DISC" --workermgr-listen "$WM" &
FAASD=$!
stop() {
  trap '' INT TERM
  echo
  echo "run-demo: stopping faasd"
  kill -TERM "$FAASD" 2>/dev/null
  wait "$FAASD" 2>/dev/null
  echo "run-demo: platform stopped"
  exit 0
}
trap stop INT TERM

# faasd prints "platform up" once every daemon accepts; poll the gateway (bounded).
for _ in $(seq 1 300); do
  kill -0 "$FAASD" 2>/dev/null || { wait "$FAASD"; echo "run-demo: faasd failed to start (exit $?)" >&2; exit 1; }
  curl -fs -o /dev/null --max-time 1 "http://$HTTP/healthz" && break
  sleep 0.2
done
curl -fs -o /dev/null --max-time 1 "http://$HTTP/healthz" || { echo "run-demo: gateway did not come up" >&2; stop; }

if ! "$CTL" deploy -f examples/hello-http/function.yaml; then
  echo "run-demo: deploy failed; faasd keeps running (Ctrl-C to stop)" >&2
fi

cat <<MSG

The platform is up (gateway http://$HTTP, discovery $DISC). Try:

  curl http://$HTTP/function/hello/hello                              # HTTP/1.1; the first call cold-starts a pod
  curl --http2-prior-knowledge http://$HTTP/function/hello/hello      # h2c
  curl -d 'hi there' http://$HTTP/function/hello/echo
  curl http://$HTTP/function/hello/whoami                             # what the pod sees

  export FAAS_DISCOVERY=$DISC FAAS_GATEWAY=http://$HTTP
  # faasctl sends the platform token from ./.faas/discovery/token (run it from here,
  # or export FAAS_TOKEN=\$(cat $PWD/.faas/discovery/token))
  $CTL list
  $CTL invoke hello --path /echo --data 'hi there'
  $CTL instances hello
  $CTL logs hello
  $CTL deploy -f examples/hello-py/function.yaml && curl http://$HTTP/function/hello-py/

Ctrl-C stops everything.
MSG

# A terminal's Ctrl-C reaches faasd too (same process group); either way the
# platform is stopped once faasd has exited 0.
status=0
while kill -0 "$FAASD" 2>/dev/null; do
  wait "$FAASD"
  status=$?
done
if [ "$status" -eq 0 ]; then
  echo "run-demo: platform stopped"
  exit 0
fi
echo "run-demo: faasd exited with status $status" >&2
exit 1
