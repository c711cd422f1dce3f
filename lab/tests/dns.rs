//! Lab DNS tests: the real server on loopback ports (and on `fdaa::3` port 53 inside a fresh
//! network namespace, root only), queried with `dig` and with hickory's resolver over UDP and
//! TCP.
//!
//! Every test starts its own server on port 0 and its own fake upstream, so tests run in
//! parallel. `dig` comes from Debian's bind9-dnsutils (scripts/setup.sh test); without it, or
//! without root for the namespace test, a test prints why and returns, except under `CI=true`
//! where it fails.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fks_lab::dns::{Config, Directory, Handle, Machine, Server};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use tokio::net::UdpSocket;

mod common;
use common::have_root;

fn ip(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfdaa, 0, 7, 0xa7b, 0, 0, n, 2)
}

/// demo-cp: m1 sjc started (role=server), m2 ams started (role=agent), m3 sjc stopped.
fn directory() -> Arc<RwLock<Directory>> {
    let mut d = Directory::new();
    for (id, region, n, started, role) in [
        ("m1", "sjc", 1, true, "server"),
        ("m2", "ams", 2, true, "agent"),
        ("m3", "sjc", 3, false, "server"),
    ] {
        d.upsert_machine(Machine {
            id: id.into(),
            app: "demo-cp".into(),
            region: region.into(),
            private_ip: ip(n),
            started,
            metadata: BTreeMap::from([("role".to_string(), role.to_string())]),
            process_group: Some("app".into()),
            skip_registration: false,
        });
    }
    d.add_app("demo-w");
    Arc::new(RwLock::new(d))
}

fn loopbacks() -> Vec<SocketAddr> {
    vec![
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
        SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 0),
    ]
}

async fn start(config: Config, directory: Arc<RwLock<Directory>>) -> Handle {
    Server::start(config, directory)
        .await
        .expect("starting dns server")
}

fn have_dig() -> bool {
    if Command::new("dig").arg("-v").output().is_ok() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("dig not found and CI=true: run scripts/setup.sh test (bind9-dnsutils)");
    }
    eprintln!("skipping dig test: dig not found (apt-get install bind9-dnsutils)");
    false
}

/// Runs dig against `server` and returns its stdout; `extra` are dig options and the question.
async fn dig(server: SocketAddr, extra: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new("dig");
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+tries=1", "+time=3"])
        .args(extra);
    let out = cmd.output().await.expect("running dig");
    String::from_utf8(out.stdout).expect("dig output is utf-8")
}

/// `dig +short` answers, sorted.
async fn dig_short(server: SocketAddr, proto: &str, rtype: &str, name: &str) -> Vec<String> {
    let out = dig(server, &[proto, "+short", rtype, name]).await;
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The `status:` of a dig reply header.
async fn dig_status(server: SocketAddr, proto: &str, rtype: &str, name: &str) -> String {
    let out = dig(server, &[proto, "+noall", "+comments", rtype, name]).await;
    out.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{out}"))
        .to_string()
}

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| (*s).to_string()).collect()
}

fn resolver(server: SocketAddr, tcp: bool) -> TokioResolver {
    let mut connection = if tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    connection.port = server.port();
    let name_server = NameServerConfig::new(server.ip(), true, vec![connection]);
    let config = ResolverConfig::from_name_servers(vec![name_server]);
    let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    let options = builder.options_mut();
    // Every answer must come from the server, not from a cache: the tests change the directory.
    options.cache_size = 0;
    options.attempts = 1;
    options.timeout = Duration::from_secs(3);
    builder.build().expect("building resolver")
}

async fn resolve_aaaa(r: &TokioResolver, name: &str) -> Vec<Ipv6Addr> {
    let lookup = r.lookup(name, RecordType::AAAA).await.expect("AAAA lookup");
    let mut ips: Vec<Ipv6Addr> = lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::AAAA(aaaa) => Some(aaaa.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

async fn resolve_txt(r: &TokioResolver, name: &str) -> Vec<String> {
    let lookup = r.lookup(name, RecordType::TXT).await.expect("TXT lookup");
    lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn dig_resolves_internal_names_over_udp_and_tcp_on_v4_and_v6() {
    if !have_dig() {
        return;
    }
    let handle = start(Config::new(loopbacks()), directory()).await;
    let both = strings(&[&ip(1).to_string(), &ip(2).to_string()]);
    for &server in handle.local_addrs() {
        for proto in ["+notcp", "+tcp"] {
            let q = |rtype, name| dig_short(server, proto, rtype, name);
            assert_eq!(
                q("AAAA", "demo-cp.internal").await,
                both,
                "{server} {proto}"
            );
            assert_eq!(q("AAAA", "Global.DEMO-CP.internal").await, both);
            assert_eq!(
                q("AAAA", "sjc.demo-cp.internal").await,
                strings(&[&ip(1).to_string()])
            );
            assert_eq!(
                q("AAAA", "m2.vm.demo-cp.internal").await,
                strings(&[&ip(2).to_string()])
            );
            assert_eq!(
                q("AAAA", "top1.nearest.of.demo-cp.internal").await,
                strings(&[&ip(2).to_string()])
            );
            assert_eq!(q("AAAA", "app.process.demo-cp.internal").await, both);
            assert_eq!(
                q("AAAA", "server.role.kv._metadata.demo-cp.internal").await,
                strings(&[&ip(1).to_string()])
            );
            assert_eq!(
                q("TXT", "vms.demo-cp.internal").await,
                strings(&["\"m1 sjc,m2 ams\""])
            );
            assert_eq!(
                q("TXT", "all.vms.demo-cp.internal").await,
                strings(&["\"m1 sjc,m2 ams,m3 sjc\""])
            );
            assert_eq!(
                q("TXT", "regions.demo-cp.internal").await,
                strings(&["\"ams,sjc\""])
            );
            assert_eq!(
                q("TXT", "_apps.internal").await,
                strings(&["\"demo-cp,demo-w\""])
            );
            assert_eq!(
                q("TXT", "_instances.internal").await,
                strings(&[
                    &format!("\"instance=m1,app=demo-cp,ip={},region=sjc\"", ip(1)),
                    &format!("\"instance=m2,app=demo-cp,ip={},region=ams\"", ip(2)),
                ])
            );
            let status = |rtype, name| dig_status(server, proto, rtype, name);
            assert_eq!(status("AAAA", "nope.internal").await, "NXDOMAIN");
            assert_eq!(status("AAAA", "m9.vm.demo-cp.internal").await, "NXDOMAIN");
            assert_eq!(status("AAAA", "demo-w.internal").await, "NOERROR");
            assert!(q("AAAA", "demo-w.internal").await.is_empty());
            assert_eq!(status("AAAA", "vms.demo-cp.internal").await, "NOERROR");
            assert!(q("AAAA", "vms.demo-cp.internal").await.is_empty());
        }
    }
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn dig_sees_ttl_of_five_seconds_and_authoritative_flag() {
    if !have_dig() {
        return;
    }
    let handle = start(Config::new(loopbacks()), directory()).await;
    let server = handle.local_addrs()[0];
    let out = dig(
        server,
        &[
            "+noall",
            "+comments",
            "+answer",
            "AAAA",
            "m1.vm.demo-cp.internal",
        ],
    )
    .await;
    assert!(out.contains(" aa"), "authoritative flag expected:\n{out}");
    let answer = out
        .lines()
        .find(|l| l.starts_with("m1.vm.demo-cp.internal."))
        .unwrap_or_else(|| panic!("answer line expected:\n{out}"));
    let fields: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(
        fields[1..],
        ["5", "IN", "AAAA", &ip(1).to_string()],
        "{answer}"
    );
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn hickory_resolver_reads_aaaa_and_txt_over_udp_and_tcp() {
    let handle = start(Config::new(loopbacks()), directory()).await;
    for &server in handle.local_addrs() {
        for tcp in [false, true] {
            let r = resolver(server, tcp);
            assert_eq!(
                resolve_aaaa(&r, "demo-cp.internal.").await,
                vec![ip(1), ip(2)]
            );
            assert_eq!(
                resolve_aaaa(&r, "M1.VM.demo-cp.internal.").await,
                vec![ip(1)]
            );
            assert_eq!(
                resolve_txt(&r, "vms.demo-cp.internal.").await,
                vec!["m1 sjc,m2 ams"]
            );
            assert_eq!(
                resolve_txt(&r, "all.regions.demo-cp.internal.").await,
                vec!["ams,sjc"]
            );
            let err = r
                .lookup("nope.internal.", RecordType::AAAA)
                .await
                .expect_err("unknown app");
            assert!(err.is_nx_domain(), "{server} tcp={tcp}: {err}");
            let err = r
                .lookup("demo-w.internal.", RecordType::AAAA)
                .await
                .expect_err("no started machine");
            assert!(err.is_no_records_found() && !err.is_nx_domain(), "{err}");
        }
    }
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn stopped_machine_disappears_from_answers() {
    let directory = directory();
    let handle = start(Config::new(loopbacks()), directory.clone()).await;
    let server = handle.local_addrs()[0];
    let r = resolver(server, false);
    assert_eq!(
        resolve_aaaa(&r, "demo-cp.internal.").await,
        vec![ip(1), ip(2)]
    );
    assert!(directory.write().expect("lock").set_started("m1", false));
    assert_eq!(resolve_aaaa(&r, "demo-cp.internal.").await, vec![ip(2)]);
    assert_eq!(
        resolve_txt(&r, "vms.demo-cp.internal.").await,
        vec!["m2 ams"]
    );
    let err = r
        .lookup("m1.vm.demo-cp.internal.", RecordType::AAAA)
        .await
        .expect_err("stopped machine");
    assert!(err.is_no_records_found() && !err.is_nx_domain(), "{err}");
    if have_dig() {
        assert_eq!(
            dig_short(server, "+tcp", "AAAA", "demo-cp.internal").await,
            strings(&[&ip(2).to_string()])
        );
        assert!(directory.write().expect("lock").set_started("m3", true));
        assert_eq!(
            dig_short(server, "+notcp", "AAAA", "sjc.demo-cp.internal").await,
            strings(&[&ip(3).to_string()])
        );
    }
    handle.shutdown().await.expect("shutdown");
}

/// The fake upstream's reply to any question: A 192.0.2.7.
fn upstream_reply(request: &[u8]) -> Vec<u8> {
    let request = Message::from_vec(request).expect("forwarded request decodes");
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_available = true;
    reply.queries = request.queries.clone();
    let name = request.queries[0].name().clone();
    reply.answers = vec![Record::from_rdata(name, 60, RData::A(A(UPSTREAM_A)))];
    reply.to_vec().expect("encode reply")
}

const UPSTREAM_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// A stand-in for the host's resolver on one loopback port, UDP and TCP: answers every question
/// with [`UPSTREAM_A`] and records the protocol each question came over.
struct FakeUpstream {
    addr: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<&'static str>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FakeUpstream {
    async fn start() -> FakeUpstream {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("binding fake upstream");
        let addr = udp.local_addr().expect("fake upstream address");
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .expect("binding fake upstream tcp on the udp port");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let udp_seen = seen.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
                udp_seen.lock().expect("lock").push("udp");
                let bytes = upstream_reply(&buf[..len]);
                udp.send_to(&bytes, peer)
                    .await
                    .expect("fake upstream reply");
            }
        });
        let tcp_seen = seen.clone();
        let tcp_task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = tcp.accept().await {
                let len = stream.read_u16().await.expect("length");
                let mut request = vec![0u8; usize::from(len)];
                stream.read_exact(&mut request).await.expect("request");
                tcp_seen.lock().expect("lock").push("tcp");
                let bytes = upstream_reply(&request);
                let len = u16::try_from(bytes.len()).expect("small reply");
                stream.write_all(&len.to_be_bytes()).await.expect("write");
                stream.write_all(&bytes).await.expect("write");
            }
        });
        FakeUpstream {
            addr,
            seen,
            tasks: vec![udp_task, tcp_task],
        }
    }

    fn seen(&self) -> Vec<&'static str> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[tokio::test]
async fn outside_names_are_forwarded_to_the_upstream_over_the_same_protocol() {
    let upstream = FakeUpstream::start().await;
    let mut config = Config::new(loopbacks());
    config.upstreams = vec![upstream.addr];
    let handle = start(config, directory()).await;
    let mut want_seen = Vec::new();
    for &server in handle.local_addrs() {
        for tcp in [false, true] {
            let r = resolver(server, tcp);
            let lookup = r
                .lookup("registry.example.", RecordType::A)
                .await
                .expect("forwarded lookup");
            let got: Vec<RData> = lookup
                .answers()
                .iter()
                .map(|rec| rec.data.clone())
                .collect();
            assert_eq!(got, vec![RData::A(A(UPSTREAM_A))], "{server} tcp={tcp}");
            want_seen.push(if tcp { "tcp" } else { "udp" });
            // .internal stays local while forwarding is on.
            assert_eq!(
                resolve_aaaa(&r, "m1.vm.demo-cp.internal.").await,
                vec![ip(1)]
            );
        }
        if have_dig() {
            for proto in ["+notcp", "+tcp"] {
                assert_eq!(
                    dig_short(server, proto, "A", "Example.COM").await,
                    strings(&["192.0.2.7"])
                );
                want_seen.push(if proto == "+tcp" { "tcp" } else { "udp" });
            }
        }
    }
    // Each question reached the upstream over the protocol it came in on (a client retry under
    // load may add one more of the same protocol, hence at least).
    let seen = upstream.seen();
    for proto in ["udp", "tcp"] {
        let count = |v: &[&str]| v.iter().filter(|p| **p == proto).count();
        assert!(
            count(&seen) >= count(&want_seen),
            "{seen:?} vs {want_seen:?}"
        );
    }
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn outside_names_get_servfail_when_the_upstream_is_silent() {
    // A bound socket nobody reads from: the question goes out and nothing comes back.
    let silent = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("silent socket");
    let mut config = Config::new(vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)]);
    config.upstreams = vec![silent.local_addr().expect("silent address")];
    config.forward_timeout = Duration::from_millis(200);
    let handle = start(config, directory()).await;
    let reply = raw_udp_query(handle.local_addrs()[0], "example.com.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn outside_names_are_refused_without_upstream() {
    let handle = start(Config::new(loopbacks()), directory()).await;
    for &server in handle.local_addrs() {
        let reply = raw_udp_query(server, "example.com.", RecordType::AAAA).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
        assert!(!reply.metadata.recursion_available);
        if have_dig() {
            assert_eq!(
                dig_status(server, "+tcp", "A", "example.com").await,
                "REFUSED"
            );
        }
    }
    handle.shutdown().await.expect("shutdown");
}

/// One question over UDP without any resolver logic in between; returns the decoded reply.
async fn raw_udp_query(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.expect("client socket");
    let mut query = Message::query();
    query.add_query(hickory_resolver::proto::op::Query::query(
        Name::from_str(name).expect("name"),
        rtype,
    ));
    let bytes = query.to_vec().expect("encode query");
    socket.send_to(&bytes, server).await.expect("send query");
    let mut buf = vec![0u8; 4096];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("reply within 5 s")
        .expect("receive reply");
    let reply = Message::from_vec(&buf[..len]).expect("decode reply");
    assert_eq!(reply.metadata.id, query.metadata.id);
    reply
}

#[tokio::test]
async fn shutdown_releases_the_ports() {
    let handle = start(Config::new(loopbacks()), directory()).await;
    let addrs = handle.local_addrs().to_vec();
    assert_eq!(
        raw_udp_query(addrs[0], "demo-cp.internal.", RecordType::AAAA)
            .await
            .answers
            .len(),
        2
    );
    // An idle TCP client must not hold shutdown up.
    let _idle = tokio::net::TcpStream::connect(addrs[1])
        .await
        .expect("tcp connect");
    tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
        .await
        .expect("shutdown within 5 s")
        .expect("shutdown");
    for addr in addrs {
        UdpSocket::bind(addr).await.expect("udp port free again");
        tokio::net::TcpListener::bind(addr)
            .await
            .expect("tcp port free again");
    }
}

#[tokio::test]
async fn bind_failure_names_the_address() {
    let taken = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("socket");
    let addr = taken.local_addr().expect("address");
    let err = Server::start(Config::new(vec![addr]), directory())
        .await
        .err()
        .expect("port already taken");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the namespace (and the dummy link inside it) when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// The production binding: `[fdaa::3]:53` in a fresh "host" network namespace, asked by dig
/// (UDP and TCP) from a second "guest" namespace over a veth link, as a guest would through its
/// resolv.conf. (A dummy link would do for the binding alone, but containers often lack the
/// dummy module; veth is what the guest runtime uses anyway.)
#[test]
fn serves_fdaa_3_port_53_to_another_network_namespace() {
    if !have_root("namespace dns") || !have_dig() {
        return;
    }
    let pid = std::process::id();
    let name = format!("fksdns{pid}h");
    let guest = format!("fksdns{pid}g");
    for n in [&name, &guest] {
        // Left by an aborted earlier run with the same pid, usually absent.
        let _ = Command::new("ip")
            .args(["netns", "delete", n])
            .stderr(std::process::Stdio::null())
            .status();
        ip_cmd(&["netns", "add", n]);
    }
    let ns = Netns(name.clone());
    let guest_ns = Netns(guest.clone());
    let (host_if, guest_if) = (format!("fkd{pid}h"), format!("fkd{pid}g"));
    ip_cmd(&[
        "link", "add", &host_if, "netns", &name, "type", "veth", "peer", "name", &guest_if,
        "netns", &guest,
    ]);
    let exec = |ns: &str, args: &[&str]| {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        ip_cmd(&all);
    };
    exec(&name, &["link", "set", "lo", "up"]);
    exec(&name, &["link", "set", &host_if, "up"]);
    exec(
        &name,
        &["-6", "addr", "add", "fdaa::3/16", "dev", &host_if, "nodad"],
    );
    exec(&guest, &["link", "set", "lo", "up"]);
    exec(&guest, &["link", "set", &guest_if, "up"]);
    exec(
        &guest,
        &["-6", "addr", "add", "fdaa::7/16", "dev", &guest_if, "nodad"],
    );

    let directory = directory();
    let ns_path = format!("/run/netns/{name}");
    // The server's sockets must be made inside the namespace: a thread enters it and runs its
    // own runtime there; the test's other threads stay in the host namespace.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let file = std::fs::File::open(&ns_path).expect("opening netns");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("entering netns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let config = Config::new(vec![SocketAddr::new(
                fks_lab::dns::RESOLVER_ADDR.into(),
                fks_lab::dns::PORT,
            )]);
            let handle = start(config, directory).await;
            ready_tx
                .send(handle.local_addrs().to_vec())
                .expect("report addresses");
            let _ = stop_rx.await;
            handle.shutdown().await.expect("shutdown");
        });
    });
    let addrs = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server started in the namespace");
    assert_eq!(
        addrs,
        vec![SocketAddr::from_str("[fdaa::3]:53").expect("addr")]
    );

    for proto in ["+notcp", "+tcp"] {
        let out = Command::new("ip")
            .args(["netns", "exec", &guest, "dig", "@fdaa::3", proto])
            .args([
                "+short",
                "+tries=1",
                "+time=3",
                "AAAA",
                "m1.vm.demo-cp.internal",
            ])
            .output()
            .expect("dig in netns");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            ip(1).to_string(),
            "{proto}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = stop_tx.send(());
    server.join().expect("server thread");
    drop(ns);
    drop(guest_ns);
    for n in [&name, &guest] {
        assert!(!std::path::Path::new(&format!("/run/netns/{n}")).exists());
    }
}
