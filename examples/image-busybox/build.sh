#!/usr/bin/env bash
# Builds a small OCI image layout to deploy with `faasctl deploy --image`: busybox's
# httpd serving /www, as user www (uid 1000), nothing else in the image. Uses umoci
# and busybox-static (deploy/install-deps.sh installs both).
#
#   examples/image-busybox/build.sh [LAYOUT]     (default build/images/busybox-web)
#   build/faasctl deploy web --image build/images/busybox-web:v1 --health /
#   curl http://127.0.0.1:8080/function/web/
set -euo pipefail

layout=${1:-build/images/busybox-web}
busybox=/bin/busybox
# the image has no libc: the busybox copied in must be the static one
if [[ ! -x $busybox ]] || ldd "$busybox" >/dev/null 2>&1; then
  echo "build.sh: $busybox is missing or dynamically linked: apt-get install busybox-static" >&2
  exit 1
fi
if ! command -v umoci >/dev/null; then
  echo "build.sh: umoci is not installed (apt-get install umoci, or deploy/install-deps.sh)" >&2
  exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/www"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
printf 'root:x:0:0:root:/root:/bin/sh\nwww:x:1000:1000:www:/www:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nwww:x:1000:\n' >"$root/etc/group"
printf '<h1>hello from an OCI image</h1>\n' >"$root/www/index.html"

rm -rf "$layout"
mkdir -p "$(dirname "$layout")"
umoci init --layout "$layout"
umoci new --image "$layout:v1"
umoci insert --image "$layout:v1" "$root" /
# The platform gives the server its port in $PORT; busybox httpd takes it with -p.
umoci config --image "$layout:v1" --config.user www --config.workingdir /www \
  --config.entrypoint /bin/sh --config.entrypoint -c \
  --config.cmd 'exec /bin/busybox httpd -f -p "$PORT" -h /www'
echo "built $layout:v1"
