#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and `make run` need.
# Idempotent: prints nothing and touches nothing when all are present.
set -euo pipefail

PKGS=(
  build-essential pkg-config clang libclang-rt-14-dev
  libh2o-evloop-dev libnghttp2-dev nghttp2-client libssl-dev zlib1g-dev
  libprotobuf-c-dev protobuf-c-compiler libgrpc-dev
  libsqlite3-dev libyaml-dev libcriterion-dev libbpf-dev bpftool libseccomp-dev
  libmnl-dev libnftables-dev nftables
  python3 python3-pytest python3-grpcio python3-thrift
  curl wrk nginx-light haproxy iproute2 procps psmisc
  prometheus umoci busybox-static
  etcd-server etcd-client golang-etcd-server-dev
)

missing=()
for p in "${PKGS[@]}"; do
  s=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$s" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo $0)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# nginx-light's package starts a system nginx on port 80; the bench runs its own
# (haproxy's likewise: the Thrift bench starts its own one-hop TCP proxy).
# prometheus is here for promtool (the metrics lint of the e2e tests); its server,
# which the package starts on :9090, is not wanted.
# etcd-server's package starts a system etcd on :2379; discovery is pointed at the
# operator's cluster and the tests start their own (tests/e2e/etcd_util.py).
for svc in nginx haproxy prometheus etcd; do
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
done
for svc in haproxy prometheus etcd; do
  if [[ -x /etc/init.d/$svc ]]; then /etc/init.d/$svc stop >/dev/null 2>&1 || true; fi
done
pkill -x nginx 2>/dev/null || true
