//! Benchmark: read + gunzip + parse + check the running kernel's `/proc/config.gz` N times and
//! print the median and p95 per run in ms next to the target (under 20 ms).
//!
//! Prints figures only; it asserts nothing (timings depend on the machine).

use std::path::Path;
use std::time::Instant;

use fks_bootstrap::config::FlannelBackend;
use fks_bootstrap::kernel::{self, Profile, Requirements, Usage};

const RUNS: usize = 200;
const TARGET_MS: f64 = 20.0;

fn main() {
    let path = Path::new("/proc/config.gz");
    if !path.exists() {
        eprintln!(
            "check_kernel bench: /proc/config.gz is absent on this machine; nothing measured"
        );
        return;
    }
    let mut samples = Vec::with_capacity(RUNS);
    let mut failures = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let report = match kernel::source::read(Some(path)) {
            Ok((config, _)) => kernel::check(
                &config,
                &Requirements::builtin(
                    Profile::All,
                    &Usage {
                        flannel: Some(FlannelBackend::WireguardNative),
                        ..Usage::unknown_cluster()
                    },
                ),
            ),
            Err(e) => {
                eprintln!("check_kernel bench: {e}");
                return;
            }
        };
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        // Keep the result observable so the work is not optimised away.
        failures = std::hint::black_box(report.failures().count());
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[RUNS / 2];
    let p95 = samples[(RUNS * 95) / 100];
    println!(
        "check_kernel: read+parse+check {} ({RUNS} runs, {failures} failing required entries): median {median:.2} ms, p95 {p95:.2} ms (target: under {TARGET_MS} ms)",
        path.display()
    );
}
