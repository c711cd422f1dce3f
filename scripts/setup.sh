#!/usr/bin/env bash
# Install what fks-bootstrap's scripts need on a fresh Debian machine. Idempotent: a package
# already present is not installed again. Usage: scripts/setup.sh test|quickstart
set -euo pipefail
what=${1:-test}

apt_packages=()
pip_packages=()
case "$what" in
    test)
        # No openssh-server: nodes serve SSH from node init itself; the tests drive the real
        # OpenSSH client (openssh-client) against it.
        apt_packages+=(iproute2 iputils-ping openssh-client bash bind9-dnsutils)
        # k3s-standin's end-to-end tests drive a real kubectl; Debian's is kubernetes-client.
        command -v kubectl >/dev/null || apt_packages+=(kubernetes-client)
        pip_packages+=(schemathesis)
        ;;
    quickstart)
        # Guests need iproute2 (netns, veth, bridge); node init serves SSH itself (no sshd);
        # openssh-client lets the operator use plain ssh too; curl waits for the lab;
        # kubectl shows the nodes (Debian's is kubernetes-client).
        apt_packages+=(iproute2 openssh-client curl)
        command -v kubectl >/dev/null || apt_packages+=(kubernetes-client)
        ;;
    *) echo "usage: $0 test|quickstart" >&2; exit 2 ;;
esac
# Both: fks-lab serve starts the lab's OCI registry from Debian's docker-registry (the CNCF
# distribution registry); the lab's Debian base image is built with mmdebstrap and pushed with
# skopeo (scripts/base-image.sh), which the image tests also use as the third-party client that
# inspects and copies the pushed node image.
apt_packages+=(docker-registry mmdebstrap skopeo)
# Both: k3s-standin's servers run a real etcd (Debian's etcd-server, /usr/bin/etcd), as k3s
# embeds one; lab guests that run the host's /usr (folder images) use the host's.
apt_packages+=(etcd-server)
# Both: the lab's WireGuard gateway (lab/src/wireguard) is configured with wireguard-tools' `wg`;
# without kernel WireGuard (CONFIG_WIREGUARD) it runs Debian's userspace wireguard-go on a TUN.
apt_packages+=(wireguard-tools wireguard-go)

missing=()
for p in "${apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "[INFO] installing Debian packages: ${missing[*]}" >&2
    sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_=sudo
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "${#pip_packages[@]}" -gt 0 ]; then
    python3 -m pip install -q "${pip_packages[@]}"
fi
for c in cargo rustc; do
    command -v "$c" >/dev/null || { echo "[ERROR] $c not found: install Rust with rustup first" >&2; exit 1; }
done
