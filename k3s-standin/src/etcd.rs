//! The servers' embedded etcd, modelled on k3s's (k3s-io/k3s `pkg/etcd/etcd.go`, read at
//! commit 001bb933; `pkg/daemons/control/server.go` for the TLS paths): a real etcd (Debian's
//! `etcd-server`, `/usr/bin/etcd`) run as a child of the stand-in, its log lines forwarded into
//! the stand-in's log with an `etcd: ` prefix, and the stand-in exiting when it exits (k3s runs
//! etcd in-process, so etcd dying takes k3s down; the child also gets SIGKILL when the
//! stand-in dies, through `PR_SET_PDEATHSIG`).
//!
//! What follows k3s:
//! - data in `<data-dir>/server/db/etcd`, member name `<node-name>-<8 hex>` kept in
//!   `<data-dir>/server/db/etcd/name` (`setName`); a member counts as initialised when
//!   `db/etcd/member/wal` exists (`IsInitialized`);
//! - TLS in `<data-dir>/server/tls/etcd/`: `server-ca`, `peer-ca`, `server-client` (serving),
//!   `peer-server-client` (peer), `client` (what k3s's own client uses); client and peer
//!   certificate auth on;
//! - client URL `https://<addr>:2379` (also on 127.0.0.1), peer URL `https://<addr>:2380`,
//!   `<addr>` the first node-ip (`GetAdvertiseAddress(PrivateIP)`), election timeout 5000 ms,
//!   heartbeat 500 ms;
//! - `cluster-init` starts a one-member cluster (`newCluster`: `initial-cluster NAME=PEER`,
//!   state `new`); a joining server asks the server it joins for `/db/info` (the member list,
//!   with its token), adds itself as a **learner** through a member's client URL, then starts
//!   with the member list and state `existing` (`join`); a restart with data starts etcd on
//!   its data alone;
//! - before serving, `Test`: the member must be a voter and its peer URL must be this
//!   server's; else k3s's message "this server is a not a member of the etcd cluster. Found
//!   [...], expect: NAME=ADDR", retried, and the API is not served.
//!
//! Differences: the joiner promotes itself once etcd lets it (k3s's leader does it every 15 s,
//! `manageLearners`); the etcd CAs travel in the stand-in's own bootstrap data; the address and
//! ports can be moved by the stand-in knobs `K3S_STANDIN_ETCD_ADDRESS` and
//! `K3S_STANDIN_ETCD_PORTS=client,peer` so several servers fit on one test host.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fks_bootstrap::etcd::{self as client, Client, Member, Tls};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::join;
use crate::log;
use crate::pki::{self, Pair, ETCD_PEER_CA_CN, ETCD_SERVER_CA_CN};

/// Errors starting or joining etcd.
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
    #[error("starting etcd ({bin}; the stand-in runs Debian's etcd-server): {source}")]
    Spawn {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd: {0}")]
    Client(#[from] client::Error),
    #[error("joining etcd through {server}: {source}")]
    DbInfo {
        server: String,
        #[source]
        source: join::Error,
    },
    #[error("joining etcd: no member of {0} answered: {1}")]
    NoMember(String, String),
    #[error("bad {what}: {reason}")]
    Bad { what: String, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where and how etcd listens.
#[derive(Debug, Clone)]
pub struct Net {
    /// The advertised address (k3s: the first node-ip).
    pub address: IpAddr,
    /// Client port (2379).
    pub client_port: u16,
    /// Peer port (2380).
    pub peer_port: u16,
}

impl Net {
    /// k3s's defaults, with the stand-in knobs applied.
    pub fn from_env(first_node_ip: IpAddr) -> Result<Net, Error> {
        let address = match std::env::var("K3S_STANDIN_ETCD_ADDRESS") {
            Ok(a) => a.parse().map_err(|_| Error::Bad {
                what: "K3S_STANDIN_ETCD_ADDRESS".into(),
                reason: format!("{a:?} is not an IP address"),
            })?,
            Err(_) => first_node_ip,
        };
        let (client_port, peer_port) = match std::env::var("K3S_STANDIN_ETCD_PORTS") {
            Ok(p) => {
                let bad = || Error::Bad {
                    what: "K3S_STANDIN_ETCD_PORTS".into(),
                    reason: format!("{p:?} is not CLIENT,PEER (two ports)"),
                };
                let (c, q) = p.split_once(',').ok_or_else(bad)?;
                (
                    c.trim().parse().map_err(|_| bad())?,
                    q.trim().parse().map_err(|_| bad())?,
                )
            }
            Err(_) => (client::CLIENT_PORT, client::PEER_PORT),
        };
        Ok(Net {
            address,
            client_port,
            peer_port,
        })
    }

    /// `https://<addr>:<peer port>`.
    pub fn peer_url(&self) -> String {
        client::url(self.address, self.peer_port)
    }

    /// `https://<addr>:<client port>`.
    pub fn client_url(&self) -> String {
        client::url(self.address, self.client_port)
    }

    /// The URL the server's own client uses: loopback, as k3s's `https://127.0.0.1:2379`.
    pub fn local_url(&self) -> String {
        client::url(IpAddr::from([127, 0, 0, 1]), self.client_port)
    }
}

/// The two etcd CAs (cert and key), shared by every server of a cluster.
#[derive(Debug, Clone)]
pub struct Cas {
    /// Signs serving and client certificates.
    pub server: Pair,
    /// Signs peer certificates.
    pub peer: Pair,
}

fn tls_dir(data_dir: &Path) -> PathBuf {
    client::tls_dir(data_dir)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    std::fs::write(path, text).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

fn write_pair(dir: &Path, name: &str, p: &Pair) -> Result<(), Error> {
    write(&dir.join(format!("{name}.crt")), &p.cert_pem, 0o644)?;
    write(&dir.join(format!("{name}.key")), &p.key_pem, 0o600)
}

fn load_pair(dir: &Path, name: &str) -> Option<Pair> {
    Some(Pair {
        cert_pem: std::fs::read_to_string(dir.join(format!("{name}.crt"))).ok()?,
        key_pem: std::fs::read_to_string(dir.join(format!("{name}.key"))).ok()?,
    })
}

/// The CAs in the data dir, if both are there.
pub fn load_cas(data_dir: &Path) -> Option<Cas> {
    let dir = tls_dir(data_dir);
    Some(Cas {
        server: load_pair(&dir, "server-ca")?,
        peer: load_pair(&dir, "peer-ca")?,
    })
}

/// The CAs in the data dir, made on first use (the cluster-init server).
pub fn ensure_cas(data_dir: &Path) -> Result<Cas, Error> {
    if let Some(c) = load_cas(data_dir) {
        return Ok(c);
    }
    let cas = Cas {
        server: pki::new_named_ca(ETCD_SERVER_CA_CN)?,
        peer: pki::new_named_ca(ETCD_PEER_CA_CN)?,
    };
    store_cas(data_dir, &cas)?;
    Ok(cas)
}

/// Write CAs received from the server joined.
pub fn store_cas(data_dir: &Path, cas: &Cas) -> Result<(), Error> {
    let dir = tls_dir(data_dir);
    write_pair(&dir, "server-ca", &cas.server)?;
    write_pair(&dir, "peer-ca", &cas.peer)
}

/// The leaf certificates, made again at every start so a changed address is in their SANs
/// (k3s regenerates certificates whose SANs changed).
fn write_leaves(data_dir: &Path, cas: &Cas, net: &Net, node_ips: &[IpAddr]) -> Result<(), Error> {
    let dir = tls_dir(data_dir);
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for ip in std::iter::once(&net.address).chain(node_ips) {
        let s = ip.to_string();
        if !sans.contains(&s) {
            sans.push(s);
        }
    }
    let serving = pki::etcd_leaf(&cas.server, ETCD_SERVER_CA_CN, "etcd-server", &sans)?;
    write_pair(&dir, "server-client", &serving)?;
    let peer = pki::etcd_leaf(&cas.peer, ETCD_PEER_CA_CN, "etcd-peer", &sans)?;
    write_pair(&dir, "peer-server-client", &peer)?;
    let own = pki::etcd_leaf(&cas.server, ETCD_SERVER_CA_CN, "etcd-client", &[])?;
    write_pair(&dir, "client", &own)
}

/// The member name: kept in the name file, made on first use as `<node>-<8 hex>`.
fn member_name(data_dir: &Path, node_name: &str) -> Result<String, Error> {
    let file = client::name_file(data_dir);
    if let Ok(n) = std::fs::read_to_string(&file) {
        let n = n.trim().to_owned();
        if !n.is_empty() {
            return Ok(n);
        }
    }
    let name = format!("{node_name}-{}", &pki::random_password()[..8]);
    std::fs::create_dir_all(client::db_dir(data_dir)).map_err(io(&client::db_dir(data_dir)))?;
    write(&file, &name, 0o600)?;
    Ok(name)
}

/// How this start joins the cluster.
pub enum Start<'a> {
    /// `cluster-init`: a new one-member cluster.
    New,
    /// Join through the server at `server` (its `/db/info`), with the token's credentials.
    Join {
        server: &'a str,
        http: &'a reqwest::Client,
        user: &'a str,
        password: &'a str,
    },
}

/// A running etcd member.
pub struct Etcd {
    /// A client on the local member.
    pub local: Client,
    /// This member's name.
    pub name: String,
    /// Where it listens.
    pub net: Net,
    /// The voter it joined through (a learner cannot serve member calls in etcd 3.4).
    via: Option<Client>,
}

fn tls_of(data_dir: &Path) -> Result<Tls, Error> {
    Ok(Tls::from_k3s_data_dir(data_dir)?)
}

/// k3s's `join`: the member list from the server joined, add this member as a learner
/// through one of the voters, and the `initial-cluster` value to start with.
async fn join_cluster(
    start: &Start<'_>,
    tls: &Tls,
    name: &str,
    net: &Net,
) -> Result<(String, Option<Client>), Error> {
    let Start::Join {
        server,
        http,
        user,
        password,
    } = start
    else {
        return Ok((format!("{name}={}", net.peer_url()), None));
    };
    let url = format!("{}/db/info", server.trim_end_matches('/'));
    let text = join::with_backoff("etcd member list", || {
        join::call(http, reqwest::Method::GET, &url, user, password, None)
    })
    .await
    .map_err(|source| Error::DbInfo {
        server: server.to_string(),
        source,
    })?;
    #[derive(serde::Deserialize)]
    struct Info {
        members: Vec<Member>,
    }
    let info: Info = serde_json::from_str(&text).map_err(|e| Error::Bad {
        what: format!("{url} answer"),
        reason: e.to_string(),
    })?;
    let urls: Vec<String> = info
        .members
        .iter()
        .filter(|m| !m.is_learner)
        .flat_map(|m| m.client_urls.clone())
        .filter(|u| *u != net.client_url())
        .collect();
    // etcd refuses to add a member while a recently added one is not yet connected
    // ("etcdserver: unhealthy cluster"); k3s's join fails and its service restarts. The
    // stand-in tries again in place, for up to two minutes.
    let mut last = String::from("no client URLs");
    for attempt in 0..60 {
        if attempt > 0 {
            log::info(format!(
                "Waiting to retry adding etcd member {name}: {last}"
            ));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if let Some(done) = add_through(&urls, tls, name, net, &mut last).await? {
            return Ok(done);
        }
    }
    Err(Error::NoMember(url, last))
}

/// One pass over the voters' client URLs: add this member through the first that takes it.
async fn add_through(
    urls: &[String],
    tls: &Tls,
    name: &str,
    net: &Net,
    last: &mut String,
) -> Result<Option<(String, Option<Client>)>, Error> {
    for u in urls {
        let c = Client::new(u, tls, Duration::from_secs(20))?;
        let mut members = match c.member_list().await {
            Ok(m) => m,
            Err(e) => {
                *last = e.to_string();
                continue;
            }
        };
        let peer = net.peer_url();
        let present = members
            .iter()
            .any(|m| m.peer_urls.contains(&peer) && (m.name == name || m.name.is_empty()));
        if !present {
            log::info(format!(
                "Adding member {name}={peer} to etcd cluster {}",
                cluster_arg(&members, name, &peer)
            ));
            let (_, after) = match c.member_add(std::slice::from_ref(&peer), true).await {
                Ok(x) => x,
                Err(e) => {
                    *last = e.to_string();
                    continue;
                }
            };
            members = after;
        }
        return Ok(Some((cluster_arg(&members, name, &peer), Some(c))));
    }
    Ok(None)
}

/// `name=peer,...` for `--initial-cluster`; the unnamed member with our peer URL is us.
fn cluster_arg(members: &[Member], name: &str, peer: &str) -> String {
    members
        .iter()
        .filter_map(|m| {
            let first = m.peer_urls.first()?;
            let n = if m.name.is_empty() && first == peer {
                name
            } else {
                m.name.as_str()
            };
            Some(format!("{n}={first}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Start etcd for this server (new cluster, join, or restart on existing data), wait until it
/// answers, promote a joining learner, and check membership as k3s's `Test` does. Returns
/// once the member is a voter with this server's peer URL; until then it retries, logging
/// why, as k3s does.
pub async fn start(
    data_dir: &Path,
    node_name: &str,
    node_ips: &[IpAddr],
    cas: &Cas,
    start: Start<'_>,
) -> Result<Etcd, Error> {
    let first = node_ips.first().copied().ok_or_else(|| Error::Bad {
        what: "node-ip".into(),
        reason: "a server with embedded etcd needs a node IP for its peer URL".into(),
    })?;
    let net = Net::from_env(first)?;
    write_leaves(data_dir, cas, &net, node_ips)?;
    let tls = tls_of(data_dir)?;
    let db = client::db_dir(data_dir);
    let existing = client::is_initialized(data_dir);
    let name = member_name(data_dir, node_name)?;
    std::fs::create_dir_all(&db).map_err(io(&db))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o700)).map_err(io(&db))?;
    }
    // The voter a joiner added itself through, kept beside the data: a member restarted while
    // still a learner promotes itself through it (a learner serves no member calls).
    let via_file = db.parent().map_or_else(
        || db.join("standin-etcd-via"),
        |d| d.join("standin-etcd-via"),
    );
    let (initial, via) = if existing {
        log::info(format!(
            "Starting etcd member {name} on its existing data in {}",
            db.display()
        ));
        let via = match std::fs::read_to_string(&via_file) {
            Ok(u) => Some(Client::new(u.trim(), &tls, Duration::from_secs(10))?),
            Err(_) => None,
        };
        (None, via)
    } else {
        let (cluster, via) = join_cluster(&start, &tls, &name, &net).await?;
        if let Some(c) = &via {
            write(&via_file, c.endpoint(), 0o600)?;
        }
        log::info(format!("Starting etcd for cluster [{cluster}]"));
        let state = if via.is_some() { "existing" } else { "new" };
        (Some((cluster, state)), via)
    };
    spawn(
        data_dir,
        &name,
        &net,
        initial.as_ref().map(|(c, s)| (c.as_str(), *s)),
    )?;
    let local = Client::new(&net.local_url(), &tls, Duration::from_secs(10))?;
    let etcd = Etcd {
        local,
        name,
        net,
        via,
    };
    etcd.wait_ready().await;
    Ok(etcd)
}

fn bin() -> String {
    std::env::var("K3S_STANDIN_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned())
}

fn spawn(
    data_dir: &Path,
    name: &str,
    net: &Net,
    initial: Option<(&str, &str)>,
) -> Result<(), Error> {
    let tls = tls_dir(data_dir);
    let f = |n: &str| tls.join(n).display().to_string();
    let mut listen_client = net.client_url();
    if net.address != IpAddr::from([127, 0, 0, 1]) {
        listen_client.push(',');
        listen_client.push_str(&net.local_url());
    }
    let mut args: Vec<String> = vec![
        format!("--name={name}"),
        format!("--data-dir={}", client::db_dir(data_dir).display()),
        format!("--listen-client-urls={listen_client}"),
        format!("--advertise-client-urls={}", net.client_url()),
        format!("--listen-peer-urls={}", net.peer_url()),
        format!("--cert-file={}", f("server-client.crt")),
        format!("--key-file={}", f("server-client.key")),
        "--client-cert-auth=true".into(),
        format!("--trusted-ca-file={}", f("server-ca.crt")),
        format!("--peer-cert-file={}", f("peer-server-client.crt")),
        format!("--peer-key-file={}", f("peer-server-client.key")),
        "--peer-client-cert-auth=true".into(),
        format!("--peer-trusted-ca-file={}", f("peer-ca.crt")),
        "--election-timeout=5000".into(),
        "--heartbeat-interval=500".into(),
        "--logger=zap".into(),
        "--log-outputs=stderr".into(),
    ];
    if let Some((cluster, state)) = initial {
        args.push(format!("--initial-advertise-peer-urls={}", net.peer_url()));
        args.push(format!("--initial-cluster={cluster}"));
        args.push(format!("--initial-cluster-state={state}"));
    }
    let bin = bin();
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe; it makes the kernel kill etcd when the stand-in dies.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        bin: bin.clone(),
        source,
    })?;
    log::info(format!(
        "Started etcd ({bin}, pid {}) as member {name}, peer URL {}, client URL {}",
        child.id().unwrap_or(0),
        net.peer_url(),
        net.client_url()
    ));
    for out in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                eprintln!("etcd: {l}");
            }
        });
    }
    // etcd dying takes the server down, as in k3s (etcd runs inside its process).
    tokio::spawn(async move {
        let status = child.wait().await;
        log::fatal(format!("etcd exited: {status:?}"));
        std::process::exit(1);
    });
    Ok(())
}

impl Etcd {
    /// Wait until the local member answers, is promoted if it joined as a learner, and holds
    /// this server's peer URL (k3s's `Test`); log and retry until then.
    async fn wait_ready(&self) {
        let peer = self.net.peer_url();
        let mut said = String::new();
        loop {
            let why = match self.check(&peer).await {
                Ok(()) => {
                    log::info(format!(
                        "etcd member {} is a voting member with peer URL {peer}",
                        self.name
                    ));
                    return;
                }
                Err(why) => why,
            };
            if why != said {
                log::info(format!("Failed to test data store connection: {why}"));
                said = why;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn check(&self, peer: &str) -> Result<(), String> {
        let status = self.local.status().await.map_err(|e| e.to_string())?;
        if status.is_learner {
            // The stand-in promotes itself once etcd allows it (k3s's leader does this),
            // through the voter it joined by: a learner serves no member calls.
            let via = self.via.as_ref().unwrap_or(&self.local);
            if let Err(e) = via.member_promote(status.member_id).await {
                return Err(format!(
                    "this server has not yet been promoted from learner to voting member ({e})"
                ));
            }
            log::info(format!("Promoted learner {}", self.name));
            return Err("promoted; checking membership again".into());
        }
        let members = self.local.member_list().await.map_err(|e| e.to_string())?;
        if members
            .iter()
            .any(|m| m.name == self.name && m.peer_urls.iter().any(|u| u == peer))
        {
            return Ok(());
        }
        let found: Vec<String> = members
            .iter()
            .filter_map(|m| Some(format!("{}={}", m.name, m.peer_urls.first()?)))
            .collect();
        Err(format!(
            "this server is a not a member of the etcd cluster. Found [{}], expect: {}={}",
            found.join(" "),
            self.name,
            self.net.address
        ))
    }
}
