//! End-to-end runs of the stand-in binary: a bootstrap server on loopback with a temp data dir
//! and a kernel-chosen port, the real kubectl against its k3s.yaml, servers and agents joining
//! with right and wrong tokens, and heartbeat expiry.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_k3s-standin");

/// A running stand-in, killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the process to exit (a refused join must exit by itself) and return its status.
    async fn exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..600 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("process did not exit; log:\n{}", self.log());
    }
}

fn spawn(role: &str, dir: &Path, yaml: &str) -> Proc {
    spawn_env(role, dir, yaml, &[])
}

/// [`spawn`] with extra environment variables.
fn spawn_env(role: &str, dir: &Path, yaml: &str, env: &[(&str, &str)]) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let log = dir.join("stderr.log");
    let child = Command::new(BIN)
        .args([role, "--config", cfg.to_str().unwrap()])
        .env_remove("K3S_CONFIG_FILE")
        .env_remove("K3S_TOKEN")
        .env_remove("K3S_URL")
        .env("K3S_STANDIN_HEARTBEAT_SECONDS", "1")
        .env("K3S_STANDIN_NODE_TIMEOUT_SECONDS", "3")
        // Several servers share this host: each gets its own etcd ports on loopback.
        .env("K3S_STANDIN_ETCD_ADDRESS", "127.0.0.1")
        .env("K3S_STANDIN_ETCD_PORTS", etcd_ports(dir))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Proc { child, log }
}

/// Two free loopback ports for a server's etcd (client, peer), kept in `dir` so a restarted
/// server keeps its peer URL.
fn etcd_ports(dir: &Path) -> String {
    let f = dir.join("etcd-ports");
    if let Ok(p) = std::fs::read_to_string(&f) {
        return p;
    }
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = format!(
        "{},{}",
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port()
    );
    std::fs::write(&f, &p).unwrap();
    p
}

/// Config for a server on `bind` (a loopback address) with IPv6-first dual-stack settings.
fn server_yaml(dir: &Path, name: &str, bind: &str, extra: &str) -> String {
    format!(
        "node-name: \"{name}\"\nnode-ip: \"fdaa::{n},10.0.0.{n}\"\ncluster-cidr: \"fd00:42::/56,10.42.0.0/16\"\n\
         service-cidr: \"fd00:43::/112,10.43.0.0/16\"\nbind-address: \"{bind}\"\nhttps-listen-port: 0\n\
         data-dir: \"{data}\"\nwrite-kubeconfig: \"{kc}\"\ntls-san: [\"fks.internal\"]\n\
         node-label: [\"topology.kubernetes.io/region=iad\"]\n{extra}",
        n = name.len(),
        data = dir.join("data").display(),
        kc = dir.join("k3s.yaml").display(),
    )
}

async fn wait_for_file(path: &Path, p: &mut Proc) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        if let Some(s) = p.child.try_wait().unwrap() {
            panic!(
                "stand-in exited ({s}) before writing {}; log:\n{}",
                path.display(),
                p.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never appeared; log:\n{}", path.display(), p.log());
}

async fn start_server(dir: &Path, yaml: &str) -> Proc {
    let mut p = spawn("server", dir, yaml);
    wait_for_file(&dir.join("k3s.yaml"), &mut p).await;
    p
}

fn kubeconfig(path: &Path) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn b64(v: &serde_yaml_ng::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

fn url_of(kc: &Path) -> String {
    kubeconfig(kc)["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An https client authenticating with the kubeconfig's admin client certificate.
fn admin_client(kc: &Path) -> reqwest::Client {
    let k = kubeconfig(kc);
    let ca = b64(&k["clusters"][0]["cluster"]["certificate-authority-data"]);
    let mut ident = b64(&k["users"][0]["user"]["client-certificate-data"]);
    ident.extend(b64(&k["users"][0]["user"]["client-key-data"]));
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(&ident).unwrap())
        .build()
        .unwrap()
}

async fn nodes(kc: &Path) -> Value {
    let r = admin_client(kc)
        .get(format!("{}/api/v1/nodes", url_of(kc)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn ready(list: &Value, name: &str) -> Option<String> {
    list["items"]
        .as_array()?
        .iter()
        .find(|n| n["metadata"]["name"] == name)
        .map(|n| {
            n["status"]["conditions"][0]["status"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
}

/// Poll until `name`'s Ready condition is `want` (bounded; no timing assertion).
async fn wait_ready(kc: &Path, name: &str, want: &str) -> Value {
    for _ in 0..300 {
        let list = nodes(kc).await;
        if ready(&list, name).as_deref() == Some(want) {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "node {name} never reached Ready={want}: {}",
        nodes(kc).await
    );
}

fn hex_sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn token_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/server/token")).unwrap()
}

#[tokio::test]
async fn bootstrap_writes_k10_token_hashing_server_ca_and_a_default_kubeconfig() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("s");
    let p = start_server(
        &d,
        &server_yaml(&d, "s1", "127.0.0.1", "cluster-init: true\n"),
    )
    .await;
    let server_dir = d.join("data/server");
    let token = token_of(&d);
    let ca = std::fs::read(server_dir.join("tls/server-ca.crt")).unwrap();
    let hash = hex_sha256(&ca);
    let body = token.strip_suffix('\n').expect("token ends with a newline");
    let pw = body
        .strip_prefix(&format!("K10{hash}::server:"))
        .expect("K10<sha256(server-ca.crt)>::server:<pw>");
    assert_eq!(pw.len(), 32);
    assert!(pw.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        std::fs::metadata(server_dir.join("token"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_link(server_dir.join("node-token")).unwrap(),
        Path::new("token")
    );

    let kc = d.join("k3s.yaml");
    assert_eq!(
        std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let k = kubeconfig(&kc);
    assert_eq!(k["current-context"], "default");
    assert_eq!(k["clusters"][0]["name"], "default");
    assert_eq!(k["users"][0]["name"], "default");
    assert_eq!(k["contexts"][0]["context"]["cluster"], "default");
    assert_eq!(
        b64(&k["clusters"][0]["cluster"]["certificate-authority-data"]),
        ca
    );
    let url = url_of(&kc);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // /cacerts needs no auth and serves the exact bytes that were hashed.
    let anon = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let served = anon
        .get(format!("{url}/cacerts"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(served.as_ref(), ca.as_slice());
    assert_eq!(
        anon.get(format!("{url}/api/v1/nodes"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let v: Value = anon
        .get(format!("{url}/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["gitVersion"], "v1.33.7+k3s-standin");
    assert!(v["platform"].as_str().unwrap().contains("not k3s"));

    let list = nodes(&kc).await;
    let n = &list["items"][0];
    assert_eq!(
        n["spec"]["podCIDRs"],
        serde_json::json!(["fd00:42::/64", "10.42.0.0/24"])
    );
    assert_eq!(n["status"]["addresses"][0]["address"], "fdaa::2");
    assert_eq!(
        n["metadata"]["labels"]["node-role.kubernetes.io/etcd"],
        "true"
    );

    let log = p.log();
    assert!(log.lines().next().unwrap().contains("NOT k3s"), "{log}");
    assert!(
        !log.contains(pw),
        "the log must not contain the token password"
    );
}

#[tokio::test]
async fn bootstrap_on_ipv6_loopback_writes_a_bracketed_url() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback ([::1])");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("s");
    let _p = start_server(&d, &server_yaml(&d, "s6", "::1", "cluster-init: true\n")).await;
    let url = url_of(&d.join("k3s.yaml"));
    assert!(url.starts_with("https://[::1]:"), "{url}");
    let list = nodes(&d.join("k3s.yaml")).await;
    assert_eq!(list["items"][0]["metadata"]["name"], "s6");
}

/// The real kubectl, or `None` (after saying why) when it is missing outside CI.
fn kubectl() -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("kubectl is not installed: run scripts/setup.sh test (it installs Debian's kubernetes-client)");
        }
        eprintln!(
            "skipped: kubectl is not on PATH (scripts/setup.sh test installs kubernetes-client)"
        );
    }
    found
}

fn run_kubectl(bin: &Path, kc: &Path, cache: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kc)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn real_kubectl_gets_taints_and_labels_nodes() {
    let Some(k) = kubectl() else { return };
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("s");
    let _p = start_server(
        &d,
        &server_yaml(&d, "kube1", "127.0.0.1", "cluster-init: true\n"),
    )
    .await;
    let kc = d.join("k3s.yaml");
    let cache = t.path().join("cache");

    let wide = run_kubectl(&k, &kc, &cache, &["get", "nodes", "-o", "wide"]);
    let mut lines = wide.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let col = |name: &str| {
        row[header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("{name} in {wide}"))]
    };
    assert_eq!(col("NAME"), "kube1");
    assert_eq!(col("STATUS"), "Ready");
    assert_eq!(col("INTERNAL-IP"), "fdaa::5");
    assert_eq!(col("VERSION"), "v1.33.7+k3s-standin");

    let out = run_kubectl(
        &k,
        &kc,
        &cache,
        &[
            "taint",
            "nodes",
            "kube1",
            "CriticalAddonsOnly=true:NoExecute",
        ],
    );
    assert!(out.contains("tainted"), "{out}");
    run_kubectl(
        &k,
        &kc,
        &cache,
        &["label", "nodes", "kube1", "fks.io/pool=servers"],
    );
    let json: Value = serde_json::from_str(&run_kubectl(
        &k,
        &kc,
        &cache,
        &["get", "nodes", "-o", "json"],
    ))
    .unwrap();
    let node = &json["items"][0];
    assert_eq!(
        node["spec"]["taints"],
        serde_json::json!([{"key": "CriticalAddonsOnly", "value": "true", "effect": "NoExecute"}])
    );
    assert_eq!(node["metadata"]["labels"]["fks.io/pool"], "servers");
    let one: Value = serde_json::from_str(&run_kubectl(
        &k,
        &kc,
        &cache,
        &["get", "node", "kube1", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(
        one["metadata"]["labels"]["topology.kubernetes.io/region"],
        "iad"
    );
    let version = run_kubectl(&k, &kc, &cache, &["version"]);
    assert!(version.contains("v1.33.7+k3s-standin"), "{version}");

    // `k3s-standin kubectl` passes through to the same kubectl.
    let out = Command::new(BIN)
        .args([
            "kubectl",
            "--cache-dir",
            cache.to_str().unwrap(),
            "get",
            "nodes",
        ])
        .env("KUBECONFIG", &kc)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kube1"),
        "{out:?}"
    );

    // Invoked as `kubectl` (argv[0]) first on PATH, it finds the real kubectl, not itself.
    let shim = t.path().join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    std::os::unix::fs::symlink(BIN, shim.join("kubectl")).unwrap();
    let path = std::env::join_paths(
        std::iter::once(shim.clone())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let out = Command::new(shim.join("kubectl"))
        .args(["--cache-dir", cache.to_str().unwrap(), "get", "nodes"])
        .env("KUBECONFIG", &kc)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kube1"),
        "{out:?}"
    );
}

#[tokio::test]
async fn server_and_agent_join_with_the_token_and_a_silent_agent_turns_not_ready() {
    let t = tempfile::tempdir().unwrap();
    let d1 = t.path().join("s1");
    let _s1 = start_server(
        &d1,
        &server_yaml(&d1, "boot", "127.0.0.1", "cluster-init: true\n"),
    )
    .await;
    let kc1 = d1.join("k3s.yaml");
    let url = url_of(&kc1);
    let token_file = d1.join("data/server/token");

    let d2 = t.path().join("s2");
    let join = format!(
        "server: \"{url}\"\ntoken-file: \"{}\"\n",
        token_file.display()
    );
    let _s2 = start_server(&d2, &server_yaml(&d2, "join2", "127.0.0.1", &join)).await;

    let d3 = t.path().join("a");
    let agent_yaml = format!(
        "server: \"{url}\"\ntoken: \"{}\"\nnode-name: agent3\nnode-ip: \"fdaa::3,10.0.0.3\"\ndata-dir: \"{}\"\n\
         node-label: [\"topology.kubernetes.io/zone=iad-1\"]\nnode-taint: [\"pool=workers:NoSchedule\"]\n",
        token_of(&d1).trim(),
        d3.join("data").display()
    );
    let mut agent = spawn("agent", &d3, &agent_yaml);

    let list = wait_ready(&kc1, "agent3", "True").await;
    assert_eq!(ready(&list, "boot").as_deref(), Some("True"));
    assert_eq!(ready(&list, "join2").as_deref(), Some("True"));
    let a = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == "agent3")
        .unwrap();
    assert!(a["metadata"]["labels"]
        .get("node-role.kubernetes.io/control-plane")
        .is_none());
    assert_eq!(
        a["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "iad-1"
    );
    assert_eq!(a["spec"]["taints"][0]["key"], "pool");
    let j = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == "join2")
        .unwrap();
    assert_eq!(
        j["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        "true"
    );

    // The joining server keeps the same CA, so its token carries the same hash and password.
    assert_eq!(token_of(&d2), token_of(&d1));
    assert_eq!(
        std::fs::read(d2.join("data/server/tls/server-ca.crt")).unwrap(),
        std::fs::read(d1.join("data/server/tls/server-ca.crt")).unwrap()
    );
    // Its own kubeconfig works and sees the whole cluster (both read the same etcd).
    let via_join = nodes(&d2.join("k3s.yaml")).await;
    assert_eq!(via_join["items"].as_array().unwrap().len(), 3);

    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    wait_ready(&kc1, "agent3", "Unknown").await;
}

#[tokio::test]
async fn ready_delay_keeps_a_registered_node_not_ready_until_it_passes() {
    let t = tempfile::tempdir().unwrap();
    let d1 = t.path().join("s1");
    let _s1 = start_server(
        &d1,
        &server_yaml(&d1, "boot", "127.0.0.1", "cluster-init: true\n"),
    )
    .await;
    let kc1 = d1.join("k3s.yaml");
    let d3 = t.path().join("a");
    let agent_yaml = format!(
        "server: \"{}\"\ntoken: \"{}\"\nnode-name: late\nnode-ip: \"fdaa::3,10.0.0.3\"\ndata-dir: \"{}\"\n",
        url_of(&kc1),
        token_of(&d1).trim(),
        d3.join("data").display()
    );
    // Heartbeats every second (spawn), so only the delay decides when it turns Ready.
    let _agent = spawn_env(
        "agent",
        &d3,
        &agent_yaml,
        &[("K3S_STANDIN_READY_DELAY", "5000")],
    );
    let list = wait_ready(&kc1, "late", "False").await;
    let late = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == "late")
        .unwrap();
    assert_eq!(late["status"]["conditions"][0]["reason"], "KubeletNotReady");
    assert_eq!(ready(&list, "boot").as_deref(), Some("True"));
    wait_ready(&kc1, "late", "True").await;
}

#[tokio::test]
async fn token_with_a_wrong_ca_hash_is_refused_with_the_k3s_message() {
    let t = tempfile::tempdir().unwrap();
    let d1 = t.path().join("s1");
    let _s1 = start_server(
        &d1,
        &server_yaml(&d1, "boot", "127.0.0.1", "cluster-init: true\n"),
    )
    .await;
    let url = url_of(&d1.join("k3s.yaml"));
    let real = token_of(&d1);
    let pw = real.trim().rsplit(':').next().unwrap();
    let wrong = format!("K10{}::server:{pw}", "0".repeat(64));
    let d = t.path().join("a");
    let yaml = format!(
        "server: \"{url}\"\ntoken: \"{wrong}\"\nnode-ip: \"fdaa::3,10.0.0.3\"\ndata-dir: \"{}\"\n",
        d.join("data").display()
    );
    let mut a = spawn("agent", &d, &yaml);
    assert!(!a.exit().await.success());
    let log = a.log();
    let hash = hex_sha256(&std::fs::read(d1.join("data/server/tls/server-ca.crt")).unwrap());
    assert!(
        log.contains(&format!(
            "token CA hash does not match the Cluster CA certificate hash: {} != {hash}",
            "0".repeat(64)
        )),
        "{log}"
    );
    // A joining server is refused the same way.
    let d2 = t.path().join("s2");
    let mut s2 = spawn(
        "server",
        &d2,
        &server_yaml(
            &d2,
            "join2",
            "127.0.0.1",
            &format!("server: \"{url}\"\ntoken: \"{wrong}\"\n"),
        ),
    );
    assert!(!s2.exit().await.success());
    assert!(
        s2.log().contains("token CA hash does not match"),
        "{}",
        s2.log()
    );
}

#[tokio::test]
async fn token_with_a_wrong_password_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let d1 = t.path().join("s1");
    let _s1 = start_server(
        &d1,
        &server_yaml(&d1, "boot", "127.0.0.1", "cluster-init: true\n"),
    )
    .await;
    let url = url_of(&d1.join("k3s.yaml"));
    let real = token_of(&d1);
    let (prefix, _) = real.trim().rsplit_once(':').unwrap();
    let wrong = format!("{prefix}:not-the-password");
    let d = t.path().join("a");
    let yaml = format!(
        "server: \"{url}\"\ntoken: \"{wrong}\"\nnode-ip: \"fdaa::3,10.0.0.3\"\ndata-dir: \"{}\"\n",
        d.join("data").display()
    );
    let mut a = spawn("agent", &d, &yaml);
    assert!(!a.exit().await.success());
    assert!(a.log().contains("401 Unauthorized"), "{}", a.log());
    assert!(
        !a.log().contains("not-the-password"),
        "the log must not contain the token"
    );
    let d2 = t.path().join("s2");
    let mut s2 = spawn(
        "server",
        &d2,
        &server_yaml(
            &d2,
            "join2",
            "127.0.0.1",
            &format!("server: \"{url}\"\ntoken: \"{wrong}\"\n"),
        ),
    );
    assert!(!s2.exit().await.success());
    assert!(s2.log().contains("401 Unauthorized"), "{}", s2.log());
}

#[tokio::test]
async fn agent_with_node_ips_in_the_wrong_family_order_is_refused_at_registration() {
    let t = tempfile::tempdir().unwrap();
    let d1 = t.path().join("s1");
    let _s1 = start_server(
        &d1,
        &server_yaml(&d1, "boot", "127.0.0.1", "cluster-init: true\n"),
    )
    .await;
    let url = url_of(&d1.join("k3s.yaml"));
    let d = t.path().join("a");
    let yaml = format!(
        "server: \"{url}\"\ntoken: \"{}\"\nnode-ip: \"10.0.0.3,fdaa::3\"\ndata-dir: \"{}\"\n",
        token_of(&d1).trim(),
        d.join("data").display()
    );
    let mut a = spawn("agent", &d, &yaml);
    assert!(!a.exit().await.success());
    assert!(
        a.log().contains("must share the same IP version"),
        "{}",
        a.log()
    );
}

#[test]
fn version_and_check_config_say_stand_in() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "k3s-standin version v1.33.7+k3s-standin (stand-in for k3s, not k3s)"
    );
    let out = Command::new(BIN).arg("check-config").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("check-config is not provided by the stand-in"));
}

#[tokio::test]
async fn agent_started_before_its_server_retries_until_the_server_answers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = tempfile::tempdir().unwrap();
    let da = t.path().join("a");
    // A short token: the CA is then trusted without a hash check (reference/k3s.md §4).
    let yaml = format!(
        "server: \"https://127.0.0.1:{port}\"\ntoken: \"early-bird-secret\"\nnode-name: early\nnode-ip: \"fdaa::9,10.0.0.9\"\ndata-dir: \"{}\"\n",
        da.join("data").display()
    );
    let agent = spawn("agent", &da, &yaml);
    for _ in 0..600 {
        if agent.log().contains("Waiting to retry join") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        agent.log().contains("Waiting to retry join"),
        "{}",
        agent.log()
    );
    let ds = t.path().join("s");
    let extra = "cluster-init: true\ntoken: \"early-bird-secret\"\n";
    let yaml = server_yaml(&ds, "boot", "127.0.0.1", extra).replace(
        "https-listen-port: 0",
        &format!("https-listen-port: {port}"),
    );
    let _s = start_server(&ds, &yaml).await;
    wait_ready(&ds.join("k3s.yaml"), "early", "True").await;
    let token = token_of(&ds);
    assert!(
        token.trim_end().ends_with("::server:early-bird-secret"),
        "the given token becomes the password"
    );
    assert!(!agent.log().contains("early-bird-secret"));
    assert!(
        agent.log().contains("does not include a CA hash"),
        "{}",
        agent.log()
    );
}

#[tokio::test]
async fn restarted_bootstrap_server_keeps_ca_token_and_patched_nodes() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("s");
    let yaml = server_yaml(&d, "boot", "127.0.0.1", "cluster-init: true\n");
    let first = start_server(&d, &yaml).await;
    let kc = d.join("k3s.yaml");
    let token = token_of(&d);
    let patch =
        r#"{"spec":{"taints":[{"key":"CriticalAddonsOnly","value":"true","effect":"NoExecute"}]}}"#;
    let r = admin_client(&kc)
        .patch(format!("{}/api/v1/nodes/boot", url_of(&kc)))
        .header("Content-Type", "application/strategic-merge-patch+json")
        .body(patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(first);
    std::fs::remove_file(&kc).unwrap();
    let _second = start_server(&d, &yaml).await;
    assert_eq!(token_of(&d), token);
    let list = nodes(&kc).await;
    assert_eq!(
        list["items"][0]["spec"]["taints"][0]["key"],
        "CriticalAddonsOnly"
    );
}

/// A client on the etcd of the server in `dir`, with the k3s client certificate.
fn etcd_client(dir: &Path) -> fks_bootstrap::etcd::Client {
    let tls = fks_bootstrap::etcd::Tls::from_k3s_data_dir(&dir.join("data")).unwrap();
    let port = etcd_ports(dir).split(',').next().unwrap().to_owned();
    fks_bootstrap::etcd::Client::new(
        &format!("https://127.0.0.1:{port}"),
        &tls,
        Duration::from_secs(15),
    )
    .unwrap()
}

async fn three_servers(t: &Path) -> (Vec<PathBuf>, Vec<Proc>, String) {
    let d1 = t.join("s1");
    let mut procs = vec![
        start_server(
            &d1,
            &server_yaml(&d1, "ctrl0", "127.0.0.1", "cluster-init: true\n"),
        )
        .await,
    ];
    let url = url_of(&d1.join("k3s.yaml"));
    let join = format!(
        "server: \"{url}\"\ntoken-file: \"{}\"\n",
        d1.join("data/server/token").display()
    );
    let mut dirs = vec![d1];
    for n in ["ctrl1", "ctrl2"] {
        let d = t.join(n);
        procs.push(start_server(&d, &server_yaml(&d, n, "127.0.0.1", &join)).await);
        dirs.push(d);
    }
    (dirs, procs, join)
}

/// The API status of `GET /api/v1/nodes` on the server whose kubeconfig is `kc`.
async fn nodes_status(kc: &Path) -> u16 {
    admin_client(kc)
        .get(format!("{}/api/v1/nodes", url_of(kc)))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn three_servers_are_etcd_members_named_like_k3s_and_share_the_node_data() {
    let t = tempfile::tempdir().unwrap();
    let (dirs, _procs, _) = three_servers(t.path()).await;
    let kc0 = dirs[0].join("k3s.yaml");
    for n in ["ctrl0", "ctrl1", "ctrl2"] {
        wait_ready(&kc0, n, "True").await;
    }
    let members = etcd_client(&dirs[1]).member_list().await.unwrap();
    assert_eq!(members.len(), 3, "{members:?}");
    for (d, n) in dirs.iter().zip(["ctrl0", "ctrl1", "ctrl2"]) {
        // k3s's member name: <node-name>-<8 hex>, kept in <data-dir>/server/db/etcd/name.
        let name = std::fs::read_to_string(d.join("data/server/db/etcd/name")).unwrap();
        let (node, hex) = name.rsplit_once('-').unwrap();
        assert_eq!(node, n);
        assert!(
            hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
        let m = fks_bootstrap::etcd::by_name(&members, &name).expect("a member per server");
        assert!(!m.is_learner, "{m:?}");
        let peer = etcd_ports(d).split(',').nth(1).unwrap().to_owned();
        assert_eq!(m.peer_urls, [format!("https://127.0.0.1:{peer}")]);
        etcd_client(d).health().await.unwrap();
    }
    // The node objects are in etcd under Kubernetes' key for nodes, readable from any member.
    let range = etcd_client(&dirs[2])
        .range_prefix("/registry/minions/")
        .await
        .unwrap();
    let keys: Vec<&str> = range.kvs.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "/registry/minions/ctrl0",
            "/registry/minions/ctrl1",
            "/registry/minions/ctrl2"
        ]
    );
    // A patch through one server is seen through another.
    let r = admin_client(&kc0)
        .patch(format!("{}/api/v1/nodes/ctrl2", url_of(&kc0)))
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"metadata":{"labels":{"seen":"everywhere"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let via2 = nodes(&dirs[2].join("k3s.yaml")).await;
    let n = via2["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == "ctrl2")
        .unwrap();
    assert_eq!(n["metadata"]["labels"]["seen"], "everywhere");
}

#[tokio::test]
async fn losing_two_of_three_servers_stops_the_api_and_one_back_restores_it() {
    let t = tempfile::tempdir().unwrap();
    let (dirs, mut procs, join) = three_servers(t.path()).await;
    let kc0 = dirs[0].join("k3s.yaml");
    for n in ["ctrl0", "ctrl1", "ctrl2"] {
        wait_ready(&kc0, n, "True").await;
    }
    // Two of three servers gone: etcd has no quorum, so the survivor's API fails.
    procs.truncate(1);
    let mut status = 200;
    for _ in 0..60 {
        status = nodes_status(&kc0).await;
        if status != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(status, 503, "the API still answers without quorum");
    // One back (it restarts from its own etcd data): quorum, and the API answers again.
    let yaml = server_yaml(&dirs[2], "ctrl2", "127.0.0.1", &join);
    std::fs::remove_file(dirs[2].join("k3s.yaml")).unwrap();
    procs.push(start_server(&dirs[2], &yaml).await);
    let mut back = false;
    for _ in 0..120 {
        if nodes_status(&kc0).await == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(back, "the API did not come back with 2 of 3 servers");
    let list = nodes(&kc0).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_server_back_on_a_new_peer_address_waits_until_its_member_is_updated() {
    let t = tempfile::tempdir().unwrap();
    let (dirs, mut procs, join) = three_servers(t.path()).await;
    let kc0 = dirs[0].join("k3s.yaml");
    wait_ready(&kc0, "ctrl2", "True").await;
    // ctrl2 comes back with another peer address (as a machine moved to a new host does).
    drop(procs.pop());
    let client = etcd_ports(&dirs[2]).split(',').next().unwrap().to_owned();
    let moved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let new_peer = moved.local_addr().unwrap().port();
    drop(moved);
    std::fs::write(dirs[2].join("etcd-ports"), format!("{client},{new_peer}")).unwrap();
    std::fs::remove_file(dirs[2].join("k3s.yaml")).unwrap();
    let yaml = server_yaml(&dirs[2], "ctrl2", "127.0.0.1", &join);
    let mut p = spawn("server", &dirs[2], &yaml);
    // k3s's refusal: the member list still has the old peer URL.
    let mut refused = false;
    for _ in 0..100 {
        if p.log()
            .contains("this server is a not a member of the etcd cluster")
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refused, "no membership refusal; log:\n{}", p.log());
    assert!(
        !dirs[2].join("k3s.yaml").exists(),
        "served before its member was right"
    );
    // The product's client updates the member through a healthy peer; the server then serves.
    let peer = etcd_client(&dirs[0]);
    let name = std::fs::read_to_string(dirs[2].join("data/server/db/etcd/name")).unwrap();
    let members = peer.member_list().await.unwrap();
    let m = fks_bootstrap::etcd::by_name(&members, &name).unwrap();
    let url = format!("https://127.0.0.1:{new_peer}");
    peer.member_update(m.id, std::slice::from_ref(&url))
        .await
        .unwrap();
    wait_for_file(&dirs[2].join("k3s.yaml"), &mut p).await;
    let members = peer.member_list().await.unwrap();
    assert_eq!(
        fks_bootstrap::etcd::by_name(&members, &name)
            .unwrap()
            .peer_urls,
        [url]
    );
    wait_ready(&kc0, "ctrl2", "True").await;
    procs.push(p);
}

#[tokio::test]
async fn a_member_removed_through_a_peer_leaves_the_cluster_and_its_server_stops() {
    let t = tempfile::tempdir().unwrap();
    let (dirs, mut procs, _) = three_servers(t.path()).await;
    let kc0 = dirs[0].join("k3s.yaml");
    wait_ready(&kc0, "ctrl2", "True").await;
    let peer = etcd_client(&dirs[0]);
    let name = std::fs::read_to_string(dirs[2].join("data/server/db/etcd/name")).unwrap();
    let members = peer.member_list().await.unwrap();
    let id = fks_bootstrap::etcd::by_name(&members, &name).unwrap().id;
    // etcd refuses a removal while a member joined in the last few seconds is not yet
    // counted active ("etcdserver: unhealthy cluster"): callers retry.
    let mut after = None;
    for _ in 0..60 {
        match peer.member_remove(id).await {
            Ok(m) => {
                after = Some(m);
                break;
            }
            Err(e) if e.to_string().contains("unhealthy cluster") => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("member remove: {e}"),
        }
    }
    let after = after.expect("the removal was refused for 30 s");
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(fks_bootstrap::etcd::by_name(&after, &name).is_none());
    // etcd stops a removed member, and the server goes down with its etcd (as k3s does).
    let status = procs[2].exit().await;
    assert!(!status.success(), "{status}");
    assert!(procs[2].log().contains("etcd exited"), "{}", procs[2].log());
    // Two members remain, both voters: the API still answers.
    assert_eq!(nodes_status(&kc0).await, 200);
}

/// fks-bootstrap's node-side member query (`node etcd members`, what `status` runs through
/// exec) against real etcd: three healthy members named after their nodes, one leader; with
/// ctrl2's server stopped its member is reported unhealthy with a reason, the others healthy.
#[tokio::test]
async fn node_etcd_members_reports_each_members_health_and_a_stopped_one() {
    use fks_bootstrap::node::etcd_status::members;
    use fks_bootstrap::status::member_node;
    let t = tempfile::tempdir().unwrap();
    let (dirs, mut procs, _) = three_servers(t.path()).await;
    let kc0 = dirs[0].join("k3s.yaml");
    for n in ["ctrl0", "ctrl1", "ctrl2"] {
        wait_ready(&kc0, n, "True").await;
    }
    let local = |d: &Path| {
        let port = etcd_ports(d).split(',').next().unwrap().to_owned();
        format!("https://127.0.0.1:{port}")
    };
    let report = members(&dirs[0].join("data"), &local(&dirs[0]))
        .await
        .unwrap();
    let mut nodes: Vec<&str> = report
        .members
        .iter()
        .map(|m| member_node(&m.name).unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["ctrl0", "ctrl1", "ctrl2"], "{report:#?}");
    assert!(report
        .members
        .iter()
        .all(|m| m.healthy && m.error.is_none()));
    assert_eq!(report.members.iter().filter(|m| m.leader).count(), 1);
    // What the operator reads back is what the node printed.
    let printed = serde_json::to_string(&report).unwrap();
    let read = fks_bootstrap::status::parse_members(&fks_bootstrap::fly::types::ExecResponse {
        stdout: printed,
        exit_code: 0,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(read, report);

    procs.truncate(2);
    let report = members(&dirs[1].join("data"), &local(&dirs[1]))
        .await
        .unwrap();
    assert_eq!(report.members.len(), 3, "{report:#?}");
    for m in &report.members {
        let down = member_node(&m.name) == Some("ctrl2");
        assert_eq!(m.healthy, !down, "{m:#?}");
        assert_eq!(m.error.is_some(), down, "{m:#?}");
    }
}

/// `server replace`'s etcd half against real etcd (issue 11 item 4): the bootstrap server
/// (ctrl0) is lost; fks-bootstrap's node-side removal (`node etcd remove`, what the operator
/// runs through exec on a healthy server) takes its member out through ctrl1; a repeated
/// removal finds nothing, the local member is refused; a fresh server then joins through the
/// survivor ctrl1, not the lost bootstrap server, and the cluster has 3 healthy members again
/// with the data written before (a label in the Node objects in etcd) still readable.
#[tokio::test]
async fn node_etcd_remove_takes_a_lost_servers_member_out_and_a_fresh_server_joins_a_survivor() {
    use fks_bootstrap::node::etcd_remove::remove;
    use fks_bootstrap::node::etcd_status::members;
    use fks_bootstrap::status::member_node;
    let t = tempfile::tempdir().unwrap();
    let (dirs, mut procs, _) = three_servers(t.path()).await;
    let kc1 = dirs[1].join("k3s.yaml");
    for n in ["ctrl0", "ctrl1", "ctrl2"] {
        wait_ready(&kc1, n, "True").await;
    }
    let r = admin_client(&kc1)
        .patch(format!("{}/api/v1/nodes/ctrl2", url_of(&kc1)))
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"metadata":{"labels":{"written-before":"replace"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let local = |d: &Path| {
        let port = etcd_ports(d).split(',').next().unwrap().to_owned();
        format!("https://127.0.0.1:{port}")
    };
    let data1 = dirs[1].join("data");

    // The bootstrap server is lost. As the operator does before touching anything, wait until
    // the survivors' members answer quorum reads again (a lost leader means an election).
    let lost = procs.remove(0);
    drop(lost);
    let mut healthy = false;
    for _ in 0..120 {
        if let Ok(r) = members(&data1, &local(&dirs[1])).await {
            let up: Vec<&str> = r
                .members
                .iter()
                .filter(|m| m.healthy)
                .filter_map(|m| member_node(&m.name))
                .collect();
            if up.contains(&"ctrl1") && up.contains(&"ctrl2") {
                healthy = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(healthy, "the survivors never answered quorum reads again");
    // etcd refuses a removal while a member joined moments ago is not yet counted active;
    // the operator retries on that refusal, so does this test.
    let mut report = None;
    for _ in 0..60 {
        match remove(&data1, &local(&dirs[1]), "ctrl0").await {
            Ok(r) => {
                report = Some(r);
                break;
            }
            Err(e) if fks_bootstrap::membership::is_retryable(&e.to_string()) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!(
                "node etcd remove ctrl0: {}",
                fks_bootstrap::errors::chain(&e)
            ),
        }
    }
    let report = report.expect("the removal was refused for 30 s");
    let removed = report.removed.clone().expect("a member removed");
    assert_eq!(member_node(&removed.name), Some("ctrl0"), "{report:?}");
    let mut left: Vec<&str> = report
        .members
        .iter()
        .map(|m| member_node(&m.name).unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["ctrl1", "ctrl2"]);
    // Again: nothing to remove. Its own member: refused.
    let again = remove(&data1, &local(&dirs[1]), &removed.id).await.unwrap();
    assert_eq!(again.removed, None);
    assert_eq!(again.members.len(), 2);
    let own = remove(&data1, &local(&dirs[1]), "ctrl1")
        .await
        .expect_err("its own member");
    assert!(
        fks_bootstrap::errors::chain(&own).contains("this server's own"),
        "{own}"
    );
    // Two healthy members of two: quorum, the API answers.
    assert_eq!(nodes_status(&kc1).await, 200);

    // A fresh server (new data dir, new name) joins through the survivor ctrl1.
    let join = format!(
        "server: \"{}\"\ntoken-file: \"{}\"\n",
        url_of(&kc1),
        data1.join("server/token").display()
    );
    let d = t.path().join("ctrl0new");
    procs.push(start_server(&d, &server_yaml(&d, "ctrl0new", "127.0.0.1", &join)).await);
    wait_ready(&kc1, "ctrl0new", "True").await;
    let mut report = members(&data1, &local(&dirs[1])).await.unwrap();
    for _ in 0..60 {
        if report.members.len() == 3 && report.members.iter().all(|m| m.healthy && !m.learner) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        report = members(&data1, &local(&dirs[1])).await.unwrap();
    }
    let mut names: Vec<&str> = report
        .members
        .iter()
        .map(|m| member_node(&m.name).unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ctrl0new", "ctrl1", "ctrl2"], "{report:#?}");
    assert!(
        report.members.iter().all(|m| m.healthy && !m.learner),
        "{report:#?}"
    );
    // The data written before is read through the new server.
    let list = nodes(&d.join("k3s.yaml")).await;
    let n = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == "ctrl2")
        .unwrap();
    assert_eq!(n["metadata"]["labels"]["written-before"], "replace");
}
