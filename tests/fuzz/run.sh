#!/usr/bin/env bash
# Builds every libFuzzer driver in tests/fuzz/ with clang and runs each for N seconds.
# A driver names what it links in header comments (FUZZ_SOURCES may repeat, so a
# line stays under the 120-column limit):
#   // FUZZ_SOURCES: deploy/manifest.c common/util.c
#   // FUZZ_PKGS: yaml-0.1 libprotobuf-c
# usage: tests/fuzz/run.sh [seconds-per-driver] [driver-name-filter]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-30}
filter=${2:-}
out=build-fuzz
mkdir -p "$out/gen" "$out/corpus"
# regenerated when proto/faas.proto changed: drivers compiled against stale messages fail
[ "$out/gen/proto/faas.pb-c.c" -nt proto/faas.proto ] || protoc-c --c_out="$out/gen" proto/faas.proto
flags="-g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 -D_GNU_SOURCE -DH2O_USE_LIBUV=0 -DFAAS_FUZZ -I. -I$out/gen"
fail=0
for drv in tests/fuzz/fuzz_*.c; do
  name=$(basename "$drv" .c)
  [[ -n "$filter" && "$name" != *"$filter"* ]] && continue
  srcs=$(sed -n 's|^// FUZZ_SOURCES:||p' "$drv")
  pkgs=$(sed -n 's|^// FUZZ_PKGS:||p' "$drv")
  # shellcheck disable=SC2086
  clang $flags $(pkg-config --cflags $pkgs libprotobuf-c) -o "$out/$name" "$drv" $srcs \
    "$out/gen/proto/faas.pb-c.c" $(pkg-config --libs $pkgs libprotobuf-c) -lpthread
  mkdir -p "$out/corpus/$name"
  seeds=tests/fuzz/seeds/$name
  echo "== $name (${secs}s)"
  # reproducers go to build-fuzz/<driver>-crash-<sha1> (or -leak-, -timeout-), not the repo root
  if ! "$out/$name" -max_total_time="$secs" -print_final_stats=0 -artifact_prefix="$out/$name-" "$out/corpus/$name" \
       $( [ -d "$seeds" ] && echo "$seeds" ) 2>"$out/$name.log"; then
    tail -30 "$out/$name.log"; fail=1
    ls "$out/$name"-crash-* "$out/$name"-leak-* "$out/$name"-timeout-* 2>/dev/null | sed 's/^/reproducer: /' || true
  else
    grep -E '^(Done|#[0-9]+.*DONE)' "$out/$name.log" | tail -1 || true
  fi
done
exit $fail
