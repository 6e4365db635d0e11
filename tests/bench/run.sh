#!/bin/bash
# The benchmark harness of issue 3: `make bench` runs `tests/bench/run.sh <abs build dir>`.
#
#   tests/bench/run.sh BUILD_DIR [--seconds 5] [--warmup 1] [--cold 100] [--conns 10000]
#                                [--rounds 5] [--only http1,h2,grpc,thrift,cold,disc,mem,scale,coldnet,coldsec,image,cp,pycold,tasks|none]
#                                [--profile DIR] [--keep] [--json FILE] [--gw-threads 1,2] [--n 50]
#
# Starts everything on loopback (free ports, a temp dir), stops it all by PID, prints
# one markdown table and writes it to tests/bench/results/<YYYY-MM-DD>-<short commit>.md.
# Exits non-zero only when the harness itself breaks, never because a bar is not met.
# --gw-threads (or FAAS_BENCH_GW_THREADS): faas-gateway --threads counts; the platform
# runs at the first (HAProxy of the Thrift rows gets as many threads), and the HTTP/1.1
# c16 GET and POST 4K rows run again at each count, with gateway CPU per request.
# The Thrift rows compare direct, HAProxy (mode tcp, one hop) and the platform.
# pycold (issue 18): --n cold starts each of the C server, the Python examples with and
# without zygotes and the floor, interleaved, on a platform with --pool-python.
# See docs/performance.md.
set -euo pipefail

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
build=$(cd "$1" && pwd)
shift
case "$build" in
/tmp/*) echo "run.sh: $build is under /tmp, which pods do not see (they get their own /tmp)" >&2; exit 1 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

for tool in wrk h2load nginx cc /usr/bin/python3; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing" >&2; exit 1; }
done
for bin in faas-discovery faas-workermgr faas-gateway faas-agent faasctl; do
    [ -x "$build/$bin" ] || { echo "run.sh: $build/$bin is missing (make BUILD=$build all)" >&2; exit 1; }
done
[ -x "$root/examples/hello-http/hello" ] || { echo "run.sh: examples/hello-http/hello is missing" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (pods, namespaces)" >&2; exit 1; }

# the floor launcher (tests/bench/floor.c), into the build dir
cc -O2 -Wall -Wextra -Werror -o "$build/bench-floor" "$here/floor.c"
# the discovery propagation client (tests/bench/discprop.c), on the build's common/rpc
# objects; bench.py falls back to tests/bench/discprop.py (python grpc) without it
discprop=()
if cc -std=gnu11 -O2 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -pthread -I"$root" -I"$build/gen" \
    -o "$build/bench-discprop" "$here/discprop.c" "$build"/obj/common/{rpc,log,util,auth}.o \
    "$build/obj/gen/proto/faas.pb-c.o" $(pkg-config --libs grpc libprotobuf-c openssl); then
    discprop=(--discprop "$build/bench-discprop")
else
    echo "run.sh: could not build discprop.c; using the python client" >&2
fi

# the control-plane bench's fake hosts, deployer and caller (tests/bench/cpbench.c), likewise
cpbench=()
if cc -std=gnu11 -O2 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -pthread -I"$root" -I"$build/gen" \
    -o "$build/bench-cpbench" "$here/cpbench.c" "$build"/obj/common/{rpc,log,util,auth}.o \
    "$build/obj/gen/proto/faas.pb-c.o" $(pkg-config --libs grpc libprotobuf-c openssl); then
    cpbench=(--cpbench "$build/bench-cpbench")
else
    echo "run.sh: could not build cpbench.c; no control-plane rows" >&2
fi

# the Thrift load generator and native user server (issue 5), when present; the user
# server alone in a directory, which the platform deploys as the function's code
thrift=()
if [ -f "$here/thrift_load.c" ] && [ -f "$here/thrift_userd.c" ]; then
    mkdir -p "$build/bench-thrift-userd"
    if cc -O2 -Wall -Wextra -Werror -pthread -o "$build/bench-thrift-load" "$here/thrift_load.c" &&
        cc -O2 -Wall -Wextra -Werror -o "$build/bench-thrift-userd/thrift_userd" "$here/thrift_userd.c"; then
        thrift=(--thrift-load "$build/bench-thrift-load" --thrift-userd "$build/bench-thrift-userd/thrift_userd")
    else
        echo "run.sh: could not build the Thrift tools; Thrift rows will be n/a" >&2
    fi
fi

short=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
out="$here/results/$(date -u +%Y-%m-%d)-$short.md"
# a partial run (--only) must not overwrite the table of a full one: it goes to the build dir
case " $* " in *" --only "*|*" --only="*) out="$build/bench-partial-$(date -u +%Y-%m-%d)-$short.md" ;; esac
mkdir -p "$here/results"

exec /usr/bin/python3 "$here/bench.py" --build "$build" --floor "$build/bench-floor" "${discprop[@]}" "${cpbench[@]}" "${thrift[@]}" --out "$out" "$@"
