//! `server` and `agent` runs: bootstrap (new CA, token, kubeconfig; with `cluster-init` a new
//! one-member etcd cluster), joining server (CA, token and etcd CAs from the server it joined,
//! then an etcd member added through it), and agent (register, then heartbeat).
//!
//! Servers with embedded etcd keep the node state in etcd (`store`), so every server answers
//! from the same data and quorum is etcd's. A bootstrap server without `cluster-init` (where
//! real k3s would use kine on SQLite) keeps it in memory and saves it to
//! `<data-dir>/server/db/standin-nodes.json` after each change. Must not log the token.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpListener;

use crate::config::{Role, Settings};
use crate::etcd::{self, Cas};
use crate::http::{self, Backend, Bootstrap, State};
use crate::join::{self, Joined};
use crate::kubeconfig;
use crate::log;
use crate::nodes::{Cluster, Registration};
use crate::pki::{self, Pair};
use crate::store::Store;

/// Errors that stop a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] pki::Error),
    #[error(transparent)]
    Join(#[from] join::Error),
    #[error(transparent)]
    Http(#[from] http::Error),
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::Error),
    #[error(transparent)]
    Nodes(#[from] crate::nodes::Error),
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
    #[error("registering this server's node: {0}")]
    Register(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("critical configuration value mismatch between servers: {key} is {ours:?} here and {theirs:?} on {server}")]
    Critical {
        key: &'static str,
        ours: Vec<String>,
        theirs: Vec<String>,
        server: String,
    },
    #[error("bad bootstrap data from {server}: {reason}")]
    BootstrapData { server: String, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_mode(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    std::fs::write(path, text).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

fn symlink(target: &str, link: &Path) -> Result<(), Error> {
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(link)(e)),
    }
    std::os::unix::fs::symlink(target, link).map_err(io(link))
}

fn u64_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Heartbeat interval (stand-in knob `K3S_STANDIN_HEARTBEAT_SECONDS`, default 10).
fn heartbeat() -> Duration {
    Duration::from_secs(u64_env("K3S_STANDIN_HEARTBEAT_SECONDS", 10).max(1))
}

/// When this node starts reporting Ready: `K3S_STANDIN_READY_DELAY` milliseconds (default 0)
/// after `start`. A stand-in knob, not a k3s setting: it lets benchmarks give the stand-in the
/// time real k3s takes to become Ready; until then the node registers and heartbeats with
/// Ready=False (reason KubeletNotReady), as a kubelet that is still starting does.
fn ready_at(start: tokio::time::Instant) -> tokio::time::Instant {
    start + Duration::from_millis(u64_env("K3S_STANDIN_READY_DELAY", 0))
}

/// When the next heartbeat goes out: the next tick, or the moment the node turns Ready if that
/// comes first and has not been reported yet. Heartbeats are sent one after another, so a
/// late "not ready" can never overtake the "ready" one.
fn next_beat(
    tick: tokio::time::Instant,
    ready_at: tokio::time::Instant,
    ready_sent: bool,
) -> tokio::time::Instant {
    if ready_sent {
        tick
    } else {
        tick.min(ready_at)
    }
}

fn node_name(s: &Settings) -> String {
    if s.with_node_id {
        let id = pki::random_password();
        format!("{}-{}", s.node_name, &id[..8])
    } else {
        s.node_name.clone()
    }
}

fn registration(s: &Settings, name: &str) -> Registration {
    Registration {
        name: name.to_owned(),
        role: match s.role {
            Role::Server => "server".to_owned(),
            Role::Agent => "agent".to_owned(),
        },
        node_ips: s.node_ips.clone(),
        external_ips: s.node_external_ips.clone(),
        labels: s.node_labels.clone(),
        taints: s
            .node_taints
            .iter()
            .map(|t| (t.key.clone(), t.value.clone(), t.effect.clone()))
            .collect(),
        ready: true,
        version: Some(crate::log::version().to_owned()),
    }
}

fn first_ip(n: &IpNet) -> IpAddr {
    match n {
        IpNet::V4(n) => IpAddr::from((u32::from(n.network()) + 1).to_be_bytes()),
        IpNet::V6(n) => IpAddr::from((u128::from(n.network()) + 1).to_be_bytes()),
    }
}

fn strs<T: ToString>(v: &[T]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

struct Tls {
    dir: PathBuf,
}

impl Tls {
    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    fn write_pair(&self, name: &str, p: &Pair) -> Result<(), Error> {
        write_mode(&self.path(&format!("{name}.crt")), &p.cert_pem, 0o644)?;
        write_mode(&self.path(&format!("{name}.key")), &p.key_pem, 0o600)
    }

    fn load_pair(&self, name: &str) -> Option<Pair> {
        let cert_pem = std::fs::read_to_string(self.path(&format!("{name}.crt"))).ok()?;
        let key_pem = std::fs::read_to_string(self.path(&format!("{name}.key"))).ok()?;
        Some(Pair { cert_pem, key_pem })
    }
}

/// Write `<data-dir>/server/token` (0600, trailing newline), the `node-token` symlink and
/// `agent-token` (reference/k3s.md §4 files).
fn write_tokens(
    server_dir: &Path,
    ca_pem: &str,
    server_pw: &str,
    agent_pw: Option<&str>,
) -> Result<(), Error> {
    let hash = pki::ca_hash(ca_pem.as_bytes());
    write_mode(
        &server_dir.join("token"),
        &format!("{}\n", pki::format_token(&hash, "server", server_pw)),
        0o600,
    )?;
    symlink("token", &server_dir.join("node-token"))?;
    match agent_pw {
        Some(pw) => write_mode(
            &server_dir.join("agent-token"),
            &format!("{}\n", pki::format_token(&hash, "node", pw)),
            0o600,
        ),
        None => symlink("token", &server_dir.join("agent-token")),
    }
}

/// Serving and admin certificates, kubeconfig, listener: the parts every server does alike.
async fn serve_server(s: &Settings, name: &str, state: Arc<State>) -> Result<(), Error> {
    let ca = &state.ca;
    let tls = Tls {
        dir: s.data_dir.join("server").join("tls"),
    };
    let mut extra = s.node_external_ips.clone();
    extra.push(first_ip(&s.service_cidrs[0]));
    let sans = pki::serving_sans(&s.tls_sans, name, &s.node_ips, &extra, &s.cluster_domain);
    let serving = pki::serving(ca, &sans)?;
    tls.write_pair("serving-kube-apiserver", &serving)?;
    let admin = pki::admin_client(ca)?;
    tls.write_pair("client-admin", &admin)?;

    let bind = s.bind_address.unwrap_or(IpAddr::from([0u16; 8]));
    let addr = SocketAddr::new(bind, s.https_port);
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        // No IPv6 on this machine: the unspecified IPv4 address is the next best default.
        // (EAFNOSUPPORT is errno 97 on Linux.)
        Err(e)
            if s.bind_address.is_none()
                && (e.kind() == std::io::ErrorKind::AddrNotAvailable
                    || e.raw_os_error() == Some(97)) =>
        {
            let v4 = SocketAddr::new(IpAddr::from([0u8; 4]), s.https_port);
            log::warn(format!("cannot listen on {addr} ({e}), using {v4}"));
            TcpListener::bind(v4)
                .await
                .map_err(|source| Error::Listen { addr: v4, source })?
        }
        Err(source) => return Err(Error::Listen { addr, source }),
    };
    let port = listener
        .local_addr()
        .map_err(|source| Error::Listen { addr, source })?
        .port();
    let url = kubeconfig::server_url(
        s.bind_address,
        matches!(s.service_cidrs[0], IpNet::V6(_)),
        port,
    );
    let text = kubeconfig::render(&url, &ca.cert_pem, &admin.cert_pem, &admin.key_pem).map_err(
        |source| kubeconfig::Error::Yaml {
            path: s.write_kubeconfig.display().to_string(),
            source,
        },
    )?;
    let acceptor = http::tls_acceptor(ca, &serving)?;
    log::info(format!(
        "Running kube-apiserver stand-in on {addr} (port {port}); serving certificate SANs: {}",
        sans.join(",")
    ));
    // Written after the listener is up, so a kubeconfig on disk means the API answers.
    kubeconfig::write(&s.write_kubeconfig, &text, s.write_kubeconfig_mode)?;
    log::info(format!("Wrote kubeconfig {}", s.write_kubeconfig.display()));
    http::serve(listener, acceptor, state).await;
    Ok(())
}

fn bootstrap_data(s: &Settings, ca: &Pair, node_pw: &str, cas: Option<&Cas>) -> Bootstrap {
    let pair = |p: &Pair| (p.cert_pem.clone(), p.key_pem.clone());
    Bootstrap {
        etcd_server_ca: cas.map(|c| pair(&c.server)),
        etcd_peer_ca: cas.map(|c| pair(&c.peer)),
        ca_cert: ca.cert_pem.clone(),
        ca_key: ca.key_pem.clone(),
        node_password: node_pw.to_owned(),
        cluster_cidr: strs(&s.cluster_cidrs),
        service_cidr: strs(&s.service_cidrs),
        cluster_dns: strs(&s.cluster_dns),
        cluster_domain: s.cluster_domain.clone(),
        flannel_backend: s.flannel_backend.clone(),
    }
}

/// `k3s server` without `server:`: the first server of a cluster.
pub async fn bootstrap_server(s: Settings) -> Result<(), Error> {
    let start = tokio::time::Instant::now();
    let server_dir = s.data_dir.join("server");
    let tls = Tls {
        dir: server_dir.join("tls"),
    };
    let ca = match tls.load_pair("server-ca") {
        Some(ca) => {
            log::info("Using the existing cluster CA in the data dir");
            ca
        }
        None => {
            let ca = pki::new_ca()?;
            tls.write_pair("server-ca", &ca)?;
            ca
        }
    };
    // Keep the password across restarts; else the given token's password; else a random one.
    let existing = std::fs::read_to_string(server_dir.join("token"))
        .ok()
        .and_then(|t| pki::parse_token(&t).ok());
    let server_pw = match (existing, &s.token) {
        (Some(t), _) => t.password,
        (None, Some(t)) => pki::parse_token(t)?.password,
        (None, None) => pki::random_password(),
    };
    let agent_pw = s
        .agent_token
        .as_deref()
        .map(pki::parse_token)
        .transpose()?
        .map(|t| t.password);
    write_tokens(&server_dir, &ca.cert_pem, &server_pw, agent_pw.as_deref())?;
    log::info(format!(
        "Wrote server token {}",
        server_dir.join("token").display()
    ));

    let name = node_name(&s);
    let node_pw = agent_pw.unwrap_or_else(|| server_pw.clone());
    // k3s's datastore choice (reference/k3s.md §4 "Datastore selection"): an etcd member on
    // disk is used; else embedded etcd with cluster-init; else kine on SQLite, which the
    // stand-in replaces with its JSON file.
    let use_etcd = s.cluster_init || fks_bootstrap::etcd::is_initialized(&s.data_dir);
    let (backend, persist, cas) = if use_etcd {
        let cas = etcd::ensure_cas(&s.data_dir)?;
        let member = etcd::start(&s.data_dir, &name, &s.node_ips, &cas, etcd::Start::New).await?;
        (Backend::Etcd(store(&s, member)), None, Some(cas))
    } else {
        let mut cluster = new_cluster(&s);
        // The stand-in's substitute for kine/SQLite: node objects saved as JSON.
        let saved = server_dir.join("db").join("standin-nodes.json");
        if let Ok(text) = std::fs::read_to_string(&saved) {
            cluster.restore(&text)?;
            log::info(format!("Restored node state from {}", saved.display()));
        }
        (Backend::Local(Mutex::new(cluster)), Some(saved), None)
    };
    let state = Arc::new(State {
        bootstrap: bootstrap_data(&s, &ca, &node_pw, cas.as_ref()),
        ca,
        server_password: server_pw,
        backend,
        persist,
    });
    own_node(&s, &name, state.clone(), start, "bootstrap server").await?;
    serve_server(&s, &name, state).await
}

fn new_cluster(s: &Settings) -> Cluster {
    Cluster::new(
        s.cluster_cidrs.clone(),
        s.node_mask_v4,
        s.node_mask_v6,
        u64_env("K3S_STANDIN_NODE_TIMEOUT_SECONDS", 40),
    )
}

fn store(s: &Settings, member: etcd::Etcd) -> Store {
    Store::new(
        member.local,
        s.cluster_cidrs.clone(),
        s.node_mask_v4,
        s.node_mask_v6,
        u64_env("K3S_STANDIN_NODE_TIMEOUT_SECONDS", 40),
    )
}

/// Register this server's own node in its backend, then heartbeat it there forever (a
/// failure, e.g. etcd without quorum, is logged and tried again at the next beat).
async fn own_node(
    s: &Settings,
    name: &str,
    state: Arc<State>,
    start: tokio::time::Instant,
    what: &str,
) -> Result<(), Error> {
    let ready_at = ready_at(start);
    let mut me = registration(s, name);
    me.ready = tokio::time::Instant::now() >= ready_at;
    let mut delay = Duration::from_millis(500);
    loop {
        match http::on_nodes(&state, |c| c.register(&me, log::now_secs())).await {
            Ok(_) => break,
            Err(r) if r.status().is_server_error() => {
                log::info(format!(
                    "Waiting to register node {name}: the datastore answered {}",
                    r.status()
                ));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(r) => return Err(Error::Register(format!("{}", r.status()))),
        }
    }
    log::info(format!(
        "Registered node {name} ({what}, cluster-init={})",
        s.cluster_init
    ));
    tokio::spawn(async move {
        let period = heartbeat();
        let mut tick = tokio::time::Instant::now() + period;
        let mut ready_sent = me.ready;
        loop {
            let wake = next_beat(tick, ready_at, ready_sent);
            tokio::time::sleep_until(wake).await;
            if wake == tick {
                tick += period;
            }
            me.ready = tokio::time::Instant::now() >= ready_at;
            match http::on_nodes(&state, |c| c.register(&me, log::now_secs())).await {
                Ok(_) => ready_sent |= me.ready,
                Err(r) => log::error(format!("heartbeat for {}: {}", me.name, r.status())),
            }
        }
    });
    Ok(())
}

/// Join `server` with the token: check the CA hash (retrying while the server is not up) and
/// return the verified connection and the credentials to use.
async fn join_ca(
    server: &str,
    token_text: &str,
    default_user: &str,
) -> Result<(Joined, String, String), Error> {
    let token = pki::parse_token(token_text)?;
    let joined = join::with_backoff("join", || join::fetch_ca(server, &token)).await?;
    let user = if token.username.is_empty() {
        default_user.to_owned()
    } else {
        token.username.clone()
    };
    Ok((joined, user, token.password))
}

async fn register_upstream(
    client: &reqwest::Client,
    server: &str,
    user: &str,
    pw: &str,
    r: &Registration,
) -> Result<(), join::Error> {
    let url = format!("{}/v1-k3s-standin/register", server.trim_end_matches('/'));
    let body = serde_json::to_string(r).expect("a registration serialises");
    join::call(client, reqwest::Method::POST, &url, user, pw, Some(body))
        .await
        .map(|_| ())
}

/// Register, then heartbeat forever (logging failures: the server may be restarting). The
/// node reports Ready from `ready_at` on (see [`ready_at`]).
async fn register_and_heartbeat(
    client: reqwest::Client,
    server: String,
    user: String,
    pw: String,
    mut r: Registration,
    ready_at: tokio::time::Instant,
) -> Result<(), Error> {
    r.ready = tokio::time::Instant::now() >= ready_at;
    join::with_backoff("node registration", || {
        register_upstream(&client, &server, &user, &pw, &r)
    })
    .await?;
    log::info(format!("Registered node {} with {server}", r.name));
    tokio::spawn(async move {
        let period = heartbeat();
        let mut tick = tokio::time::Instant::now() + period;
        let mut ready_sent = r.ready;
        loop {
            let wake = next_beat(tick, ready_at, ready_sent);
            tokio::time::sleep_until(wake).await;
            if wake == tick {
                tick += period;
            }
            r.ready = tokio::time::Instant::now() >= ready_at;
            match register_upstream(&client, &server, &user, &pw, &r).await {
                Ok(()) => ready_sent |= r.ready,
                Err(e) => log::warn(format!(
                    "heartbeat for node {} to {server} failed: {e}",
                    r.name
                )),
            }
        }
    });
    Ok(())
}

/// `k3s server` with `server:` and a token: a joining server.
pub async fn joining_server(s: Settings) -> Result<(), Error> {
    let start = tokio::time::Instant::now();
    let server = s
        .server
        .clone()
        .expect("joining server has server set (checked by the caller)");
    let token_text = s
        .token
        .clone()
        .expect("config::resolve requires a token to join");
    // A server that already is an etcd member restarts from its own data, as k3s does: it
    // does not need the server it first joined.
    if fks_bootstrap::etcd::is_initialized(&s.data_dir) {
        if let Some(state) = restart_member(&s)? {
            let name = node_name(&s);
            let state = state_with_member(&s, &name, state).await?;
            own_node(&s, &name, state.clone(), start, "server").await?;
            return serve_server(&s, &name, state).await;
        }
    }
    let (joined, user, pw) = join_ca(&server, &token_text, "server").await?;
    let url = format!(
        "{}/v1-k3s-standin/server-bootstrap",
        server.trim_end_matches('/')
    );
    let text = join::call(&joined.client, reqwest::Method::GET, &url, &user, &pw, None).await?;
    let boot: Bootstrap = serde_json::from_str(&text).map_err(|e| Error::BootstrapData {
        server: server.clone(),
        reason: e.to_string(),
    })?;
    if boot.ca_cert != joined.ca_pem {
        return Err(Error::BootstrapData {
            server,
            reason: "the bootstrap CA differs from /cacerts".to_owned(),
        });
    }
    for (key, ours, theirs) in [
        (
            "cluster-cidr",
            strs(&s.cluster_cidrs),
            boot.cluster_cidr.clone(),
        ),
        (
            "service-cidr",
            strs(&s.service_cidrs),
            boot.service_cidr.clone(),
        ),
        (
            "cluster-dns",
            strs(&s.cluster_dns),
            boot.cluster_dns.clone(),
        ),
        (
            "cluster-domain",
            vec![s.cluster_domain.clone()],
            vec![boot.cluster_domain.clone()],
        ),
        (
            "flannel-backend",
            vec![s.flannel_backend.clone()],
            vec![boot.flannel_backend.clone()],
        ),
    ] {
        if ours != theirs {
            return Err(Error::Critical {
                key,
                ours,
                theirs,
                server,
            });
        }
    }
    let server_dir = s.data_dir.join("server");
    let tls = Tls {
        dir: server_dir.join("tls"),
    };
    let ca = Pair {
        cert_pem: boot.ca_cert.clone(),
        key_pem: boot.ca_key.clone(),
    };
    tls.write_pair("server-ca", &ca)?;
    let agent_pw = (boot.node_password != pw).then_some(boot.node_password.as_str());
    write_tokens(&server_dir, &ca.cert_pem, &pw, agent_pw)?;
    log::info(format!(
        "Joined cluster at {server}; wrote server token {}",
        server_dir.join("token").display()
    ));

    let name = node_name(&s);
    let (Some((sc, sk)), Some((pc, pk))) = (&boot.etcd_server_ca, &boot.etcd_peer_ca) else {
        return Err(Error::BootstrapData {
            server,
            reason: "it runs no embedded etcd (started without cluster-init), so a server cannot join it".to_owned(),
        });
    };
    let cas = Cas {
        server: Pair {
            cert_pem: sc.clone(),
            key_pem: sk.clone(),
        },
        peer: Pair {
            cert_pem: pc.clone(),
            key_pem: pk.clone(),
        },
    };
    etcd::store_cas(&s.data_dir, &cas)?;
    let member = etcd::start(
        &s.data_dir,
        &name,
        &s.node_ips,
        &cas,
        etcd::Start::Join {
            server: &server,
            http: &joined.client,
            user: &user,
            password: &pw,
        },
    )
    .await?;
    let state = Arc::new(State {
        ca,
        server_password: pw,
        bootstrap: boot,
        backend: Backend::Etcd(store(&s, member)),
        persist: None,
    });
    own_node(&s, &name, state.clone(), start, "server").await?;
    serve_server(&s, &name, state).await
}

/// What a restarting etcd member needs from its data dir: the cluster CA, the etcd CAs and
/// the tokens. `None` when something is missing (then it joins again through its server).
struct Restart {
    ca: Pair,
    cas: Cas,
    server_pw: String,
    node_pw: String,
}

fn restart_member(s: &Settings) -> Result<Option<Restart>, Error> {
    let server_dir = s.data_dir.join("server");
    let tls = Tls {
        dir: server_dir.join("tls"),
    };
    let read_token = |f: &str| {
        std::fs::read_to_string(server_dir.join(f))
            .ok()
            .and_then(|t| pki::parse_token(&t).ok())
    };
    let (Some(ca), Some(cas), Some(token)) = (
        tls.load_pair("server-ca"),
        etcd::load_cas(&s.data_dir),
        read_token("token"),
    ) else {
        return Ok(None);
    };
    let node_pw = read_token("agent-token").map_or_else(|| token.password.clone(), |t| t.password);
    Ok(Some(Restart {
        ca,
        cas,
        server_pw: token.password,
        node_pw,
    }))
}

async fn state_with_member(s: &Settings, name: &str, r: Restart) -> Result<Arc<State>, Error> {
    let member = etcd::start(&s.data_dir, name, &s.node_ips, &r.cas, etcd::Start::New).await?;
    Ok(Arc::new(State {
        bootstrap: bootstrap_data(s, &r.ca, &r.node_pw, Some(&r.cas)),
        ca: r.ca,
        server_password: r.server_pw,
        backend: Backend::Etcd(store(s, member)),
        persist: None,
    }))
}

/// `k3s agent`: join, register the node, heartbeat.
pub async fn agent(s: Settings) -> Result<(), Error> {
    let start = tokio::time::Instant::now();
    let server = s
        .server
        .clone()
        .expect("config::resolve requires server for agents");
    let token_text = s
        .token
        .clone()
        .expect("config::resolve requires a token for agents");
    let (joined, user, pw) = join_ca(&server, &token_text, "node").await?;
    let agent_dir = s.data_dir.join("agent");
    write_mode(&agent_dir.join("server-ca.crt"), &joined.ca_pem, 0o644)?;
    let name = node_name(&s);
    register_and_heartbeat(
        joined.client,
        server,
        user,
        pw,
        registration(&s, &name),
        ready_at(start),
    )
    .await?;
    std::future::pending::<()>().await;
    Ok(())
}
