//! `k3s-standin`: the stand-in (NOT k3s) at the Kubernetes version the lab's clusters start on
//! ([`k3s_standin::log::VERSION`]). See [`k3s_standin::cli`].

fn main() -> std::process::ExitCode {
    k3s_standin::cli::main(k3s_standin::log::VERSION)
}
