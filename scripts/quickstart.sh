#!/usr/bin/env bash
# The README's main command: a k3s cluster on fks-lab, on this machine, without a Fly account.
#   scripts/quickstart.sh          install what is missing, build, start the lab with guests
#                                  and its registry (state in .lab/), push the lab's Debian
#                                  base image, create clusters/lab (a copy in
#                                  .lab/clusters/lab naming that base) with `-c`, which
#                                  builds and pushes the node image, and its node group 0;
#                                  export a kubeconfig for `fks-bootstrap proxy`, show the
#                                  nodes with `fks-bootstrap kubectl` (no /etc/hosts change)
#   scripts/quickstart.sh --down   destroy the cluster, stop the lab, remove its network
#                                  namespaces and bridge, and the hosts block an older
#                                  quickstart wrote (idempotent)
# Re-running converges: a running lab is reused and the cluster steps change nothing that is
# already there. Real k3s is used when FKS_K3S=/path/to/k3s is given (verified against the
# release's sha256sum-amd64.txt when that file sits beside it); otherwise the nodes run
# k3s-standin, a test double, and this script says so loudly. Runs as root (guests are
# namespaces). Works from a clone at any path: the nodes run the pulled image, not files of
# the clone. Environment: FKS_LAB_PORT (default 4280), FKS_K3S.
set -euo pipefail
cd "$(dirname "$0")/.."

lab_dir=.lab
state=$lab_dir/state
port=${FKS_LAB_PORT:-4280}
cluster=clusters/lab
# The copy of clusters/lab whose NODE_IMAGE_BASE is the lab's Debian base.
cluster_copy=$lab_dir/clusters/lab
bridge=fkslab0 # fks-lab's default bridge (lab/src/guest/network.rs)
fks=target/debug/fks-bootstrap
lab=target/debug/fks-lab
standin=target/debug/k3s-standin
kubeconfig="$HOME/.kube/lab"

info() { echo "[INFO] $*" >&2; }
warn() { echo "[WARN] $*" >&2; }
die() { echo "[ERROR] $*" >&2; exit 1; }
section() { printf '\n==> %s\n' "$*" >&2; }

lab_running() { [ -x "$lab" ] && "$lab" env --state-dir "$state" >/dev/null 2>&1; }

down() {
    section "quickstart --down"
    if lab_running; then
        eval "$("$lab" env --state-dir "$state")"
        # The copy that names the node image, once the quickstart has made it.
        [ ! -f "$cluster_copy/config" ] || cluster=$cluster_copy
        if [ -x "$fks" ]; then
            info "destroying $cluster (fks-bootstrap destroy $cluster --yes)"
            "$fks" destroy "$cluster" --yes || warn "destroy failed (exit $?); stopping the lab anyway"
        fi
        "$lab" stop --state-dir "$state"
    else
        info "no lab is running on $state"
    fi
    # Older quickstarts wrote the lab's .internal names into /etc/hosts; take that block out.
    if [ -x "$lab" ]; then
        "$lab" hosts --remove --bridge "$bridge"
    fi
    # Guests of a lab that was killed leave their namespaces; the lab never removes its bridge.
    for ns in $(ip netns list 2>/dev/null | awk -v p="$bridge-" 'index($1, p) == 1 { print $1 }'); do
        info "removing network namespace $ns"
        ip netns delete "$ns" || warn "could not remove network namespace $ns"
    done
    if ip link show "$bridge" >/dev/null 2>&1; then
        info "removing bridge $bridge"
        ip link delete "$bridge" || warn "could not remove bridge $bridge"
    fi
    rm -f "$lab_dir/lab.pid"
    info "down: the lab is stopped (its state stays in $state; rm -rf $lab_dir to forget it)"
}

case "${1:-}" in
    --down) [ "$(id -u)" -eq 0 ] || die "--down needs root (it removes network namespaces and the lab bridge)"
            down; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--down]" >&2; exit 2 ;;
esac

[ "$(id -u)" -eq 0 ] || die "quickstart needs root: the lab runs every machine as a guest in its own network and mount namespaces"

section "setup"
scripts/setup.sh quickstart

section "build"
info "cargo build --locked -p fks-bootstrap -p fks-lab -p k3s-standin"
cargo build --locked --quiet -p fks-bootstrap -p fks-lab -p k3s-standin

section "lab"
mkdir -p "$state"
if lab_running; then
    info "reusing the lab running on $state (pid $(cat "$state/lab.pid"), $("$lab" env --state-dir "$state" | sed -n 's/^export FLY_API_HOSTNAME=//p'))"
else
    info "starting fks-lab serve --guests on 127.0.0.1:$port (log $lab_dir/lab.log)"
    # stdout carries the token: it is read back with `fks-lab env`, never logged.
    nohup "$lab" serve --guests --state-dir "$state" --listen "127.0.0.1:$port" --zones sjc=3 \
        >/dev/null 2>>"$lab_dir/lab.log" </dev/null &
    echo $! >"$lab_dir/lab.pid"
    disown
fi
# Ask only the lab of this state dir (its env lines exist once it listens): another program on
# the port must not be mistaken for it. `fks-lab env` prints ordinary settings: the API address
# and token, FKS_REGION_ZONES and FKS_MACHINES_ONLY (1 when the lab runs no guests).
answered=false
for _ in $(seq 1 150); do
    if env_lines=$("$lab" env --state-dir "$state" 2>/dev/null); then
        eval "$env_lines"
        # Any HTTP answer (401 without the token header) means it serves.
        if curl -s -o /dev/null "$FLY_API_HOSTNAME/v1/apps" 2>/dev/null; then
            answered=true
            break
        fi
    fi
    if [ -f "$lab_dir/lab.pid" ] && ! kill -0 "$(cat "$lab_dir/lab.pid")" 2>/dev/null; then
        tail -n 20 "$lab_dir/lab.log" >&2 || true
        die "fks-lab exited at start (log above, $lab_dir/lab.log)"
    fi
    sleep 0.2
done
"$answered" || die "fks-lab did not answer within 30s (see $lab_dir/lab.log)"
[ "${FKS_MACHINES_ONLY:-}" = 0 ] ||
    die "the lab on $state runs without guests (FKS_MACHINES_ONLY=${FKS_MACHINES_ONLY:-unset}): stop it with scripts/quickstart.sh --down and run again as root"
[ -n "${FLY_API_TOKEN:-}" ] || die "no FLY_API_TOKEN from fks-lab env --state-dir $state"
export FLY_API_HOSTNAME FLY_API_TOKEN FKS_REGION_ZONES FKS_MACHINES_ONLY
info "lab answers at $FLY_API_HOSTNAME (zones $FKS_REGION_ZONES)"

[ -n "${FLY_REGISTRY_HOST:-}" ] ||
    die "the lab on $state runs without its registry (no FLY_REGISTRY_HOST from fks-lab env): install Debian's docker-registry (scripts/setup.sh quickstart) and restart it"
export FLY_REGISTRY_HOST FKS_REGISTRY_PLAIN_HTTP

section "base image (Debian trixie, mmdebstrap) -> $FLY_REGISTRY_HOST/fks/debian:trixie"
# The lab cannot reach Docker Hub: its nodes' base is built from Debian's packages and pushed
# to the lab's registry (scripts/base-image.sh: cached per day; the lab's base also carries
# kubectl and etcd for k3s-standin).
base_digest=$(REGISTRY_TOKEN=$FLY_API_TOKEN scripts/base-image.sh --plain-http "$FLY_REGISTRY_HOST/fks/debian:trixie")
base="$FLY_REGISTRY_HOST/fks/debian@$base_digest"

section "cluster config: $cluster_copy (clusters/lab on the lab's base)"
if [ -n "${FKS_K3S:-}" ]; then
    k3s_args=(--k3s-source file "$FKS_K3S")
    standin_used=false
else
    k3s_args=(--k3s-source file "$standin" --k3s-standin)
    standin_used=true
fi
# The copy differs from clusters/lab only in NODE_IMAGE_BASE: the Debian base just pushed to
# the lab's registry, instead of Docker Hub's debian:trixie-slim. It has no IMAGE, so `-c`
# builds the node image (this fks-bootstrap and the k3s chosen above) and pushes it.
mkdir -p "$cluster_copy"
{ grep -v -e '^IMAGE=' -e '^NODE_IMAGE_BASE=' "$cluster/config"; echo "NODE_IMAGE_BASE=$base"; } \
    >"$cluster_copy/config"
cluster=$cluster_copy

standin_banner() {
    cat >&2 <<'BANNER'

  ####################################################################################
  #  THE NODES RUN k3s-standin, A TEST DOUBLE, NOT k3s.                              #
  #  It implements only the slice of k3s fks-bootstrap relies on (k3s-standin/README) #
  #  and says so in its logs, in `kubectl version` and in each node's OS image.       #
  #  For real k3s: scripts/quickstart.sh --down, then                                #
  #  FKS_K3S=/path/to/k3s scripts/quickstart.sh (sha256sum-amd64.txt beside it)      #
  ####################################################################################

BANNER
}
"$standin_used" && standin_banner

section "kernel"
# Guests share this host's kernel, so the nodes' own check at boot sees this kernel: check it
# first against what the cluster needs (its flannel backend; no IPVS, NFS or autofs).
if kernel_report=$("$fks" check-kernel --cluster "$cluster" 2>&1); then
    info "this kernel has every option a $cluster node needs"
else
    # The full table is long: show the required options that are missing, and the verdict.
    awk '/ FAIL / || /^summary:/ || /^fks-bootstrap:/' <<<"$kernel_report" >&2
    die "this host's kernel lacks options the $cluster nodes need (guests share it); use a kernel with them built in, or change the setting named above"
fi

section "fks-bootstrap -c $cluster ${k3s_args[*]} (builds and pushes the node image)"
"$fks" -c "$cluster" "${k3s_args[@]}"
section "fks-bootstrap -a 0 $cluster (the servers' image)"
"$fks" -a 0 "$cluster"

section "fks-bootstrap -k $cluster --tunnel"
"$fks" -k "$cluster" --tunnel >/dev/null
info "kubeconfig written to $kubeconfig (server https://127.0.0.1:16443, where \`fks-bootstrap proxy $cluster\` listens)"

section "fks-bootstrap kubectl $cluster -- get nodes -o wide"
"$fks" kubectl "$cluster" -- get nodes -o wide
"$standin_used" && standin_banner

cat >&2 <<EOT

The lab keeps running (pid $(cat "$state/lab.pid" 2>/dev/null || echo '?'), log $lab_dir/lab.log, state $state).
  eval "\$($lab env --state-dir $state)"   # talk to it with fks-bootstrap
  $fks kubectl $cluster -- get nodes -o wide   # kubectl through an in-process proxy
  $fks proxy $cluster &                          # or: the API on https://127.0.0.1:16443,
  kubectl --kubeconfig $kubeconfig get nodes -o wide   # for plain kubectl
Stop it:  scripts/quickstart.sh --down
EOT
