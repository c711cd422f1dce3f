//! Issue 5's "Done when" figure: the cluster lifecycle on the lab with real guests and
//! Fly-like latencies. For the control plane (`-c`) and node groups (`-a`) of 3, 6 and 24
//! workers it prints, in one table: the wall time, the lower bound set by the dependency chain
//! and Fly's rate limits, their ratio (target <= 1.15), the wall time of the same steps run one
//! after another (`run::Options.max_parallel = Some(1)`, measured, as k3s.sh did) and the
//! mutating API calls per node (lab `GET /lab/v1/stats` `mutations` delta / nodes; target <= 4).
//!
//! The library is driven as the CLI drives it: `run::observe`, `plan::plan` (k3s steps on,
//! zones = the count the lab is started with, as `fks-lab env` prints it, ssh files from `ssh::ClusterKeys`, env
//! `FKS_ALLOW_MISSING_KERNEL_OPTIONS=1` because this kernel lacks 7 options) and
//! `run::execute` through a `fly::Client` with its default options, so its token buckets hold
//! Fly's documented limits. The lab runs in process with guests (root), its own bridge
//! `fksbn1`, IPv4 172.31.211.0/24 and an org (`fksbenchlc`) whose 6PN /48 no other test uses;
//! the node image is built and pushed to the lab's registry by the real `fks-bootstrap image
//! build --push`, holding `fks-bootstrap` and `k3s-standin` as `k3s` (debug builds).
//!
//! Stated latencies (printed): volume create [`VOLUME_CREATE`] and machine create
//! [`MACHINE_CREATE`] are lab `latency` faults; boot is the lab's `launch` timing [`BOOT`]
//! (created -> starting; the real guest start follows, a few ms); k3s ready is
//! [`K3S_READY`], the stand-in knob `K3S_STANDIN_READY_DELAY` (machine env): each node reports
//! Ready that long after its k3s process started. Lab rate limits are on too (a 429 would show
//! in the table). The figures are kept small so the sequential 24-node case stays short: real
//! k3s takes longer to become Ready, which would only make the parallel ratios better.
//!
//! The lower bound is the finish time of an ideal run of the same plan: every step starts as
//! soon as its dependencies are done and its rate-limit bucket has a token, and takes only its
//! stated latency; the model and its code are in `shared/mod.rs` (also used by the API-only
//! `scale` bench). For a node group the plan serialises the volume creates of one app (so an
//! ambiguous create can be told apart), hence LB ~ N x volume create + machine create + boot +
//! k3s ready.
//!
//! Run (root): `cargo bench -p fks-lab --bench lifecycle`. Without root it prints why and exits
//! 0. It asserts nothing about speed. Every case's apps are destroyed (force) before the next;
//! at the end the lab stops and the bridge and any namespace `fksbn1-*` are removed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fks_bootstrap::config::Config;
use fks_bootstrap::plan::Target;
use fks_bootstrap::run;
use fks_bootstrap::ssh::ClusterKeys;
use fks_lab::guest::BridgeConfig;
use fks_lab::{Faults, Options, Timings};

#[path = "../tests/common/images.rs"]
mod images;
mod shared;

use shared::{
    cluster_config, converge, lower_bound, repo_root, Converge, Lab, Latencies, Measured,
};

const TOKEN: &str = "lifecycle-bench";
const BRIDGE: &str = "fksbn1";
const ORG: &str = "fksbenchlc";
const REGION_ZONES: usize = 32;
/// Stated latency of `POST /v1/apps/{app}/volumes`.
const VOLUME_CREATE: Duration = Duration::from_millis(1000);
/// Stated latency of `POST /v1/apps/{app}/machines`.
const MACHINE_CREATE: Duration = Duration::from_millis(500);
/// Stated boot time: the lab's `launch` timing (created -> starting).
const BOOT: Duration = Duration::from_millis(1000);
/// Stated time k3s takes to become Ready after it starts (`K3S_STANDIN_READY_DELAY`).
const K3S_READY: Duration = Duration::from_millis(3000);
const GROUPS: [u32; 3] = [3, 6, 24];
const DEADLINE: Duration = Duration::from_secs(300);
/// Time for a drained bucket (1/s, burst 3) to fill again; a pause before each case.
const BUCKETS_REFILL: Duration = Duration::from_secs(3);

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("lifecycle: skipped, needs root (guests are network and mount namespaces)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench());
}

/// Builds the guest binaries (debug profile, like the lab's tests) and returns the dir.
fn build_guest_binaries() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    // The variables cargo sets for this bench would make the inner build see another
    // environment and rebuild every time.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR" {
            cmd.env_remove(&*key);
        }
    }
    let status = cmd
        .args([
            "build",
            "-p",
            "fks-bootstrap",
            "--bin",
            "fks-bootstrap",
            "-p",
            "k3s-standin",
            "--bin",
            "k3s-standin",
        ])
        .current_dir(repo_root())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the guest binaries failed");
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("debug")
}

/// Kill the processes of every network namespace named `<prefix>...` and delete it.
fn sweep_netns(prefix: &str) {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "delete", name]).status();
    }
}

/// The stated latencies, as the lower bound takes them.
const LATENCIES: Latencies = Latencies {
    volume_create: VOLUME_CREATE,
    machine_create: MACHINE_CREATE,
    boot: BOOT,
    k3s_ready: K3S_READY,
    // This bench times creates only.
    update: Duration::ZERO,
};

/// One CLI-like run of `target` (k3s steps on, zones as the lab was started with).
async fn converge_k3s(
    lab: &Lab,
    config: &Config,
    target: &Target,
    keys: &ClusterKeys,
    zones: usize,
    max_parallel: Option<usize>,
) -> Measured {
    let mut extra_env = BTreeMap::new();
    extra_env.insert("FKS_ALLOW_MISSING_KERNEL_OPTIONS".into(), "1".into());
    extra_env.insert(
        "K3S_STANDIN_READY_DELAY".into(),
        K3S_READY.as_millis().to_string(),
    );
    let c = Converge {
        keys,
        zones,
        allow_shared_zones: false,
        k3s: true,
        extra_env,
        run: run::Options {
            started_timeout: DEADLINE,
            k3s_timeout: DEADLINE,
            max_parallel,
            ..run::Options::default()
        },
        // Each case is a fresh CLI run whose client starts with full buckets; give the lab's
        // buckets (shared with the previous case, e.g. exec on the control plane) time to
        // refill, so a 429 in the table means the client itself went over a limit.
        refill: BUCKETS_REFILL,
    };
    converge(lab, config, target, &c).await
}

struct Row {
    case: String,
    parallel: Measured,
    sequential: Measured,
}

async fn bench() {
    let prefix = fks_lab::ids::network_prefix(ORG).segments();
    let at = |last: u16| std::net::Ipv6Addr::new(prefix[0], prefix[1], prefix[2], 0, 0, 0, 0, last);
    let bridge = BridgeConfig {
        name: BRIDGE.into(),
        gateway6: at(1),
        prefix6: 48,
        dns6: at(3),
        gateway4: Ipv4Addr::new(172, 31, 211, 1),
        prefix4: 24,
    };
    sweep_netns(&format!("{BRIDGE}-"));
    fks_lab::guest::remove_bridge(&bridge.name).expect("removing a stale bridge");
    let bin = build_guest_binaries();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir state");
    // The node image as the product builds and pushes it, in the lab's registry.
    let registry = fks_lab::registry::Registry::start(&state, TOKEN)
        .await
        .expect("registry");
    let host = registry.host();
    let image = tokio::task::spawn_blocking(move || {
        images::push_node_image(
            &host,
            TOKEN,
            &bin.join("fks-bootstrap"),
            &bin.join("k3s-standin"),
        )
    })
    .await
    .expect("node image thread");
    let cp_config = cluster_config(dir.path(), ORG, 3, &image);
    let keys = ClusterKeys::open(&dir.path().join("keys"), &cp_config.cluster_name).expect("keys");

    let faults = format!(
        "latency=volumes.create:{}ms,machines.create:{}ms;rate_limits=on",
        VOLUME_CREATE.as_millis(),
        MACHINE_CREATE.as_millis()
    );
    let timings = Timings {
        launch: BOOT,
        ..Timings::default()
    };
    let opts = Options {
        state_dir: state,
        zones: fks_lab::parse_zones(&format!("{}={REGION_ZONES}", cp_config.region))
            .expect("zones"),
        faults: Faults::parse(&faults).expect("faults"),
        seed: 11,
        token: TOKEN.into(),
        timings,
        guests: true,
        bridge: bridge.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let lab = Lab {
        base: format!("http://{}", listener.local_addr().expect("addr")),
        token: TOKEN.into(),
        http: reqwest::Client::new(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fks_lab::run(listener, opts, async move {
        let _ = rx.await;
    }));
    lab.wait_up(DEADLINE).await;
    // As the CLI gets it: the zone count the lab was started with, which `fks-lab env` prints
    // as FKS_REGION_ZONES (`fks_lab::client_env`).
    let zones = REGION_ZONES;

    println!(
        "lifecycle: stated latencies: volume create {VOLUME_CREATE:?}, machine create {MACHINE_CREATE:?}, \
         boot {BOOT:?} (lab launch timing), k3s ready {K3S_READY:?} (K3S_STANDIN_READY_DELAY); \
         lab rate limits on; client buckets = Fly's documented limits; poll {:?}",
        run::Options::default().poll
    );
    let cp = Target::control_plane(0).expect("cp target");
    let mut rows = Vec::new();

    // Control plane: sequential first, destroyed, then the parallel one the groups join.
    let sequential = converge_k3s(&lab, &cp_config, &cp, &keys, zones, Some(1)).await;
    println!("  -c sequential: {:.1?}", sequential.wall);
    lab.destroy(&cp_config.cp_app(), DEADLINE).await;
    let parallel = converge_k3s(&lab, &cp_config, &cp, &keys, zones, None).await;
    println!("  -c parallel:   {:.1?}", parallel.wall);
    rows.push(Row {
        case: "-c (control plane)".into(),
        parallel,
        sequential,
    });

    for size in GROUPS {
        let config = cluster_config(dir.path(), ORG, size, &image);
        let par_target = Target::node_group(&format!("p{size}")).expect("group");
        let parallel = converge_k3s(&lab, &config, &par_target, &keys, zones, None).await;
        println!("  -a {size} parallel:   {:.1?}", parallel.wall);
        lab.destroy(&par_target.app(&config), DEADLINE).await;
        let seq_target = Target::node_group(&format!("s{size}")).expect("group");
        let sequential = converge_k3s(&lab, &config, &seq_target, &keys, zones, Some(1)).await;
        println!("  -a {size} sequential: {:.1?}", sequential.wall);
        lab.destroy(&seq_target.app(&config), DEADLINE).await;
        rows.push(Row {
            case: format!("-a (group of {size})"),
            parallel,
            sequential,
        });
    }
    lab.destroy(&cp_config.cp_app(), DEADLINE).await;

    println!();
    println!(
        "{:<20} {:>5} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10} {:>10} {:>5}",
        "case",
        "nodes",
        "wall s",
        "LB s",
        "wall/LB",
        "seq s",
        "wall/seq",
        "mut/node",
        "exec/node",
        "429s"
    );
    for r in &rows {
        let p = &r.parallel;
        let lb = lower_bound(&p.plan, &LATENCIES);
        let wall = p.wall.as_secs_f64();
        let nodes = p.nodes as f64;
        println!(
            "{:<20} {:>5} {:>8.2} {:>8.2} {:>8.3} {:>9.2} {:>8.3} {:>10.2} {:>10.2} {:>5}",
            r.case,
            p.nodes,
            wall,
            lb,
            wall / lb,
            r.sequential.wall.as_secs_f64(),
            wall / r.sequential.wall.as_secs_f64(),
            p.counts.mutations as f64 / nodes,
            p.counts.execs as f64 / nodes,
            p.counts.throttled + r.sequential.counts.throttled,
        );
    }
    println!(
        "targets: wall/LB <= 1.15; mutating calls per node <= 4. `mut/node` is the lab's \
         `mutations` (2xx calls that change platform state: app, volumes, machines, secrets, \
         ready marks); `exec/node` the commands run in machines (Ready checks, token read, \
         taints), which change nothing on the platform. Sequential = run::Options.max_parallel \
         = Some(1), node by node as k3s.sh, measured."
    );

    let _ = tx.send(());
    server.await.expect("lab task").expect("lab run");
    sweep_netns(&format!("{BRIDGE}-"));
    fks_lab::guest::remove_bridge(&bridge.name).expect("removing the bridge");
}
