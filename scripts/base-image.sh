#!/usr/bin/env bash
# Build the lab's base image, a minimal Debian root filesystem (as Docker Hub's debian:<suite>-slim,
# which the lab cannot reach), as an OCI image layout, and optionally push it to a registry.
#
# Usage: scripts/base-image.sh [--suite SUITE] [--plain-http] [--print-layout] [HOST/NAME:TAG]
#   HOST/NAME:TAG  push there with skopeo, as user `x` with the password in $REGISTRY_TOKEN
#                  (else $FLY_API_TOKEN: what `fks-lab env` prints), read from the environment so
#                  it never appears on a command line
#   --plain-http   the registry speaks HTTP (the lab's local registry)
#   --print-layout print the OCI layout directory on stdout (after the build)
#   --suite SUITE  Debian suite (default trixie)
#
# The root filesystem comes from `mmdebstrap --variant=minbase --mode=unshare` (Debian's
# packages, from the host's apt mirror), without ca-certificates: like debian:trixie-slim, the
# base lacks them, and `fks-bootstrap image build` adds them (issue 9). Documentation, man pages
# and locales are left out as in the slim images.
#
# This is the LAB's node base, not a real user's: on top of minbase it includes what
# k3s-standin (the lab's test double for k3s) needs inside the node image: `kubernetes-client`
# (kubectl, for the stand-in's `k3s kubectl` passthrough) and `etcd-server` (the stand-in's
# servers keep their state in a real etcd). A real user's base is debian:trixie-slim, and real
# k3s carries its own kubectl and embedded etcd. The list is part of the cache key.
#
# Cache: ${XDG_CACHE_HOME:-~/.cache}/fks-bootstrap/base/<suite>-<arch>-<YYYYMMDD>-<options hash>/oci
# One build per suite, architecture and UTC day: packages change on the mirror, so a day's
# build is reused and the next day's is new. Deterministic within a key: SOURCE_DATE_EPOCH is
# that day's midnight (mmdebstrap clamps mtimes to it), gzip -n stores no name or time, and the
# config and manifest are written byte for byte from fixed text.
# Exit codes: 0 ok, 1 a step failed, 2 usage error.
set -euo pipefail

usage() { sed -n '5,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "[ERROR] base-image: $*" >&2; exit 1; }

suite=trixie plain_http=0 print_layout=0 dest=""
while [ $# -gt 0 ]; do
    case "$1" in
        --suite) [ $# -ge 2 ] || usage; suite=$2; shift 2 ;;
        --plain-http) plain_http=1; shift ;;
        --print-layout) print_layout=1; shift ;;
        -h|--help) usage ;;
        -*) echo "[ERROR] base-image: unknown option $1" >&2; usage ;;
        *) [ -z "$dest" ] || usage; dest=$1; shift ;;
    esac
done
case "$suite" in
    *[!a-z0-9-]*|"") echo "[ERROR] base-image: bad suite name '$suite'" >&2; exit 2 ;;
esac
if [ -n "$dest" ]; then
    # HOST[:PORT]/NAME[/NAME...]:TAG, nothing a shell or skopeo could read as more.
    [[ "$dest" =~ ^[A-Za-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] \
        || { echo "[ERROR] base-image: '$dest' is not HOST/NAME:TAG" >&2; exit 2; }
    token=${REGISTRY_TOKEN:-${FLY_API_TOKEN:-}}
    [ -n "$token" ] || { echo "[ERROR] base-image: set REGISTRY_TOKEN (or FLY_API_TOKEN) to push to $dest" >&2; exit 2; }
fi

for tool in mmdebstrap skopeo sha256sum gzip tar; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/setup.sh test"
done

arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
day=$(date -u +%Y%m%d)
epoch=$(date -u -d "${day:0:4}-${day:4:2}-${day:6:2} 00:00:00" +%s)
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
mmdebstrap_opts=(
    --variant=minbase --mode=unshare --format=tar --skip=output/dev
    --include=kubernetes-client,etcd-server
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
)
opts_hash=$(printf '%s\n' "$suite" "$arch" "${mmdebstrap_opts[@]}" v1 | sha256sum | cut -c1-12)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/fks-bootstrap/base
key="$suite-$arch-$day-$opts_hash"
layout="$cache/$key/oci"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

if [ -f "$layout/index.json" ]; then
    echo "[INFO] base image $key: cached in $layout" >&2
else
    echo "[INFO] base image $key: building with mmdebstrap (Debian $suite, minbase)" >&2
    mkdir -p "$cache"
    work=$(mktemp -d "$cache/.build-XXXXXX")
    trap 'rm -rf "$work"' EXIT
    SOURCE_DATE_EPOCH=$epoch mmdebstrap --quiet "${mmdebstrap_opts[@]}" "$suite" "$work/root.tar" \
        || die "mmdebstrap failed for $suite"
    # An empty /dev, as container images carry (device nodes are skipped above).
    mkdir -m 0755 "$work/empty" "$work/empty/dev"
    tar --append -f "$work/root.tar" -C "$work/empty" --owner=0 --group=0 --numeric-owner \
        --mtime="@$epoch" --mode=0755 ./dev
    gzip -n -6 -c "$work/root.tar" > "$work/layer.tar.gz"
    oci="$work/oci"
    mkdir -p "$oci/blobs/sha256"
    diff_id=$(sha "$work/root.tar")
    layer=$(sha "$work/layer.tar.gz")
    layer_size=$(size "$work/layer.tar.gz")
    mv "$work/layer.tar.gz" "$oci/blobs/sha256/$layer"
    printf '%s' "{\"architecture\":\"$arch\",\"os\":\"linux\",\"created\":\"$created\",\"config\":{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"Cmd\":[\"bash\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]},\"history\":[{\"created\":\"$created\",\"created_by\":\"mmdebstrap --variant=minbase $suite (fks-bootstrap scripts/base-image.sh)\"}]}" \
        > "$work/config.json"
    config=$(sha "$work/config.json")
    config_size=$(size "$work/config.json")
    mv "$work/config.json" "$oci/blobs/sha256/$config"
    printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config\",\"size\":$config_size},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$layer\",\"size\":$layer_size}]}" \
        > "$work/manifest.json"
    manifest=$(sha "$work/manifest.json")
    manifest_size=$(size "$work/manifest.json")
    mv "$work/manifest.json" "$oci/blobs/sha256/$manifest"
    printf '%s' "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest\",\"size\":$manifest_size,\"annotations\":{\"org.opencontainers.image.ref.name\":\"base\"}}]}" \
        > "$oci/index.json"
    printf '%s' '{"imageLayoutVersion":"1.0.0"}' > "$oci/oci-layout"
    mkdir -p "$cache/$key"
    rm -rf "$layout"
    mv "$oci" "$layout"
    echo "[INFO] base image $key: layer $(( layer_size / 1024 / 1024 )) MiB gzip, manifest sha256:$manifest" >&2
fi

# The manifest digest, read back from the layout's index.
manifest=$(sed -n 's/.*"digest":"\(sha256:[0-9a-f]\{64\}\)".*/\1/p' "$layout/index.json")
[ -n "$manifest" ] || die "no manifest digest in $layout/index.json"

if [ -n "$dest" ]; then
    host=${dest%%/*}
    authdir=$(mktemp -d)
    trap 'rm -rf "$authdir" ${work:+"$work"}' EXIT
    umask 077
    printf '{"auths":{"%s":{"auth":"%s"}}}' "$host" "$(printf 'x:%s' "$token" | base64 -w0)" \
        > "$authdir/auth.json"
    tls=()
    [ "$plain_http" -eq 0 ] || tls=(--dest-tls-verify=false)
    echo "[INFO] pushing the base image to $dest" >&2
    skopeo copy --quiet --preserve-digests --authfile "$authdir/auth.json" "${tls[@]}" \
        "oci:$layout:base" "docker://$dest" || die "skopeo could not push to $dest"
    echo "[INFO] pushed ${dest%:*}@$manifest" >&2
fi
[ "$print_layout" -eq 0 ] || echo "$layout"
echo "$manifest"
