#!/usr/bin/env bash
# The operator CLI builds on macOS (ARCHITECTURE.md "Suggested modules"): only `node init`
# (src/node, src/cli/node.rs) is Linux only, behind `cfg(target_os = "linux")`.
#   scripts/check-portable.sh
# When the toolchain has a non-Linux target installed (e.g. aarch64-apple-darwin), this runs
# `cargo check --target` for it. Otherwise (no target can be downloaded on the build machines)
# it checks the source: no Linux-only item is used outside the gated modules, and the gates
# are in place. Exit 0 when portable, 1 naming each offending line.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
bad() { echo "[ERROR] $*" >&2; fail=1; }

# A non-Linux target in the toolchain: the compiler is the proof.
for target in $(rustup target list --installed 2>/dev/null || true); do
    case "$target" in
        *-apple-darwin | *-freebsd | *-windows-*)
            echo "[INFO] cargo check -p fks-bootstrap --target $target" >&2
            cargo check --locked -p fks-bootstrap --lib --bins --target "$target"
            ;;
    esac
done

# Linux-only crates and items: nix (a Linux-only dependency in Cargo.toml), prctl, mounts,
# namespaces, Linux's std extensions, procfs-style crates and raw libc calls.
linux_only='(\bnix::|\buse nix\b|\bprctl\b|\bMsFlags\b|\bCloneFlags\b|\bsetns\b|\bunshare\b|std::os::linux|\blibc::|\bprocfs::|\brtnetlink\b|\bneli\b|\bcaps::)'
# Files that may use them: the gated node module (its `vars.rs` is built everywhere), the
# `node` command, the node's SSH server (src/ssh/server) and the kernel's link probe
# (src/kernel/probe/linux.rs).
gated='^src/(node/|cli/node\.rs|ssh/server/|kernel/probe/linux\.rs)'
while IFS= read -r hit; do
    file=${hit%%:*}
    if [[ "$file" =~ $gated ]] && [ "$file" != src/node/vars.rs ]; then
        continue
    fi
    bad "Linux-only item outside the cfg(target_os = \"linux\") modules: $hit"
done < <(grep -rnE "$linux_only" src --include='*.rs' | grep -vE '^[^:]+:[0-9]+:\s*//' || true)

# The gates themselves.
grep -Eq '^#\[cfg\(target_os = "linux"\)\]$' <(grep -B1 '^pub mod node;$' src/lib.rs) ||
    bad 'src/lib.rs: `pub mod node;` must be under #[cfg(target_os = "linux")]'
grep -Eq '^#\[cfg\(target_os = "linux"\)\]$' <(grep -B1 '^mod node;$' src/cli/mod.rs) ||
    bad 'src/cli/mod.rs: `mod node;` must be under #[cfg(target_os = "linux")]'
grep -Eq '^#\[cfg\(target_os = "linux"\)\]$' <(grep -B1 '^pub mod server;$' src/ssh/mod.rs) ||
    bad 'src/ssh/mod.rs: `pub mod server;` must be under #[cfg(target_os = "linux")]'
grep -Eq '^#\[cfg\(target_os = "linux"\)\]$' <(grep -B1 '^mod linux;$' src/kernel/probe.rs) ||
    bad 'src/kernel/probe.rs: `mod linux;` must be under #[cfg(target_os = "linux")]'
# nix only as a Linux dependency of the product crate.
if awk '/^\[dependencies\]/{d=1; next} /^\[/{d=0} d && /^nix *=/' Cargo.toml | grep -q .; then
    bad 'Cargo.toml: nix is a [dependencies] entry; it belongs under [target.'"'"'cfg(target_os = "linux")'"'"'.dependencies]'
fi

if [ "$fail" -ne 0 ]; then
    echo "[ERROR] the operator CLI would not build on macOS (see above)" >&2
    exit 1
fi
echo "[INFO] portable: no Linux-only item outside src/node, src/cli/node.rs, src/ssh/server and src/kernel/probe/linux.rs" >&2
