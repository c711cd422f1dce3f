//! `k3s-standin-next`: the same stand-in (NOT k3s) one Kubernetes minor later
//! ([`k3s_standin::log::NEXT_VERSION`]), so an upgrade test can build a node image of the next
//! version and see every node report it. See [`k3s_standin::cli`].

fn main() -> std::process::ExitCode {
    k3s_standin::cli::main(k3s_standin::log::NEXT_VERSION)
}
