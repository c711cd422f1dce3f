#!/usr/bin/env bash
# The README's main command. Installs what it needs, builds fks-bootstrap, then walks through
# what the tool does today without a Fly account:
#   1. validates every example cluster in clusters/,
#   2. renders the k3s config every node of each cluster would get at boot,
#   3. checks this machine's kernel against the cluster's requirements.
# Node addresses and machine ids in step 2 are examples in Fly's formats (on a real machine
# they come from the machine itself at boot), and are labelled so.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh quickstart
echo "[INFO] building fks-bootstrap" >&2
cargo build --locked --quiet --bin fks-bootstrap
fks=target/debug/fks-bootstrap

section() { printf '\n==> %s\n' "$*"; }

for dir in clusters/*/; do
    dir=${dir%/}
    section "validate $dir"
    "$fks" validate "$dir"
done

# Example 6PN addresses and machine ids, in Fly's formats (reference: fly-machines-api.md §4).
example_ip() { printf 'fdaa:0:1:a7b:%x:%x:%x:2' "$1" "$((0x100 + $2))" "$((0x9ce0 + $2))"; }
example_id() { printf '%014x' "$((0x1857156b526d00 + $1 * 256 + $2))"; }

for dir in clusters/*/; do
    dir=${dir%/}
    size=$("$fks" validate --json "$dir" | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_group_size"])')
    bootstrap_id=$(example_id 0 0)
    for i in 0 1 2; do
        section "render $dir --node ctrl-$i (example address and machine id)"
        "$fks" render "$dir" --node "ctrl-$i" --private-ip "$(example_ip 1 "$i")" \
            --ipv4 "172.19.0.$((2 + i))" --zone "zone$i" \
            --machine-id "$(example_id 0 "$i")" --bootstrap-id "$bootstrap_id"
    done
    for i in $(seq 0 $((size - 1))); do
        section "render $dir --node worker-ng-0-$i (example address and machine id)"
        "$fks" render "$dir" --node "worker-ng-0-$i" --private-ip "$(example_ip 2 "$i")" \
            --ipv4 "172.19.1.$((2 + i))" --zone "zone$((i % 3))" \
            --machine-id "$(example_id 1 "$i")"
    done
done

section "check-kernel --cluster clusters/lab (this machine's kernel)"
set +e
"$fks" check-kernel --cluster clusters/lab
status=$?
set -e
if [ "$status" -eq 0 ]; then
    echo "[INFO] this kernel has every option a clusters/lab node needs"
else
    echo "[INFO] check-kernel exited $status: the table above names each missing option and why it" \
        "is needed. Fly machines cannot load modules, so each must be built in (=y)."
fi
