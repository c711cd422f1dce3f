//! Benchmark: what one `create` of a whole cluster costs in pure work: parse and validate the
//! fly-k3s-poc config (`config::parse_shell`), then render the k3s config of every node of a
//! cluster of 3 servers and 3 node groups of 6 workers (21 nodes).
//!
//! Prints the median and p95 of the total per run, in ms, against the target; asserts nothing
//! (timings are not tests). Run: `cargo bench -p fks-bootstrap --bench render_cluster`.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use fks_bootstrap::config::{self, Config};
use fks_bootstrap::render::{self, Bootstrap, Host, Node};

const WARMUP: usize = 20;
const RUNS: usize = 300;
const GROUPS: [&str; 3] = ["a", "b", "c"];
const WORKERS_PER_GROUP: u32 = 6;

/// Every node of the cluster: its name and the facts its machine would report.
fn nodes() -> Vec<(String, Host)> {
    let mut names: Vec<String> = (0..3).map(|i| format!("ctrl-{i}")).collect();
    for g in GROUPS {
        names.extend((0..WORKERS_PER_GROUP).map(|i| format!("worker-ng-{g}-{i}")));
    }
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let n = u16::try_from(i).expect("21 nodes") + 2;
            let host = Host {
                machine_id: format!("{:014x}", 0x1d8e_4a7c_0000_u64 + u64::from(n)),
                private_ip: Ipv6Addr::new(0xfdaa, 0, 1, 0xa7b, 1, 2, 3, n),
                ipv4: Some(Ipv4Addr::new(172, 19, 0, u8::try_from(n).expect("fits"))),
                region: "sjc".into(),
                zone: Some(format!("z{}", i % 3)),
            };
            (name, host)
        })
        .collect()
}

fn one_run(text: &str, file: &Path, hosts: &[(String, Host)]) -> usize {
    let config: Config = config::parse_shell(text, file).expect("fly-k3s-poc config is valid");
    let bootstrap = Bootstrap {
        index: 0,
        machine_id: Some(hosts[0].1.machine_id.clone()),
    };
    let mut bytes = 0;
    for (name, host) in hosts {
        let node = Node::from_name(&config, name, &bootstrap, host.clone()).expect("known name");
        bytes += render::render(&config, &node).expect("renders").len();
    }
    bytes
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("clusters/fly-k3s-poc/config");
    let text = std::fs::read_to_string(&file).expect("clusters/fly-k3s-poc/config is readable");
    let hosts = nodes();
    for _ in 0..WARMUP {
        black_box(one_run(&text, &file, &hosts));
    }
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            black_box(one_run(black_box(&text), &file, &hosts));
            start.elapsed()
        })
        .collect();
    times.sort();
    let median = times[RUNS / 2];
    let p95 = times[RUNS * 95 / 100];
    println!(
        "render_cluster: parse + validate + render {} nodes, {RUNS} runs: median {:.3} ms, p95 {:.3} ms per run (target: under 5 ms)",
        hosts.len(),
        ms(median),
        ms(p95)
    );
}
