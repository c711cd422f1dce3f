//! The host's view of the lab's `.internal` names: `fks-lab hosts --apply` asks the lab's own
//! DNS (reference/fly-machines-api.md §7; served on `[fdaa::3]:53` on the lab bridge) which
//! machines are started and keeps a marked block of their names in `/etc/hosts`, so programs on
//! the host (kubectl with a kubeconfig naming `https://<cluster>-cp.internal:6443`) resolve
//! them without a DNS change. `--remove` takes the block out again.
//!
//! The block is a snapshot: it lists `<id>.vm.<app>.internal` and `<app>.internal` of every
//! machine started when it was written, and must be applied again after machines change.
//! Where systemd-resolved runs, `resolvectl dns <bridge> fdaa::3; resolvectl domain <bridge>
//! '~internal'` follows every change instead (lab/README.md).
//! Block editing ([`replace_block`], [`render_block`], [`parse_instances`]) is pure; only
//! [`lookup`] and [`apply`] do I/O. Must not touch a line outside its own markers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// How long one DNS question over TCP may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the hosts block.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("asking the lab dns at {server} for {name}")]
    Dns {
        server: SocketAddr,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the lab dns at {server} answered {name} with {reason}")]
    Answer {
        server: SocketAddr,
        name: String,
        reason: String,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has a `{begin}` line without its `{end}` line: fix it by hand")]
    Unclosed {
        path: PathBuf,
        begin: String,
        end: String,
    },
}

/// One started machine as the lab's DNS lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub app: String,
    pub id: String,
    pub ip: Ipv6Addr,
}

/// The marker lines of the block of the lab on `bridge`.
pub fn markers(bridge: &str) -> (String, String) {
    (
        format!("# BEGIN fks-lab {bridge} (fks-lab hosts --apply; removed by --remove)"),
        format!("# END fks-lab {bridge}"),
    )
}

/// The block's lines for `entries` (without markers): one line per machine,
/// `<ip> <id>.vm.<app>.internal <app>.internal`.
pub fn render_block(entries: &[Entry]) -> String {
    let mut sorted = entries.to_vec();
    sorted.sort();
    sorted
        .iter()
        .map(|e| {
            format!(
                "{} {}.vm.{}.internal {}.internal\n",
                e.ip, e.id, e.app, e.app
            )
        })
        .collect()
}

/// `hosts` with the block between `markers` replaced by `block` (or removed when `None`). A
/// missing block is appended; everything outside the markers stays byte for byte.
pub fn replace_block(
    hosts: &str,
    (begin, end): (&str, &str),
    block: Option<&str>,
) -> Result<String, (String, String)> {
    let mut out = String::with_capacity(hosts.len());
    let mut lines = hosts.split_inclusive('\n');
    let mut found = false;
    while let Some(line) = lines.next() {
        if line.trim_end() != begin {
            out.push_str(line);
            continue;
        }
        found = true;
        if !lines.by_ref().any(|l| l.trim_end() == end) {
            return Err((begin.to_string(), end.to_string()));
        }
        if let Some(b) = block {
            push_block(&mut out, begin, end, b);
        }
    }
    if !found {
        if let Some(b) = block {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            push_block(&mut out, begin, end, b);
        }
    }
    Ok(out)
}

fn push_block(out: &mut String, begin: &str, end: &str, block: &str) {
    out.push_str(begin);
    out.push('\n');
    out.push_str(block);
    out.push_str(end);
    out.push('\n');
}

/// Reads `_instances.internal` TXT strings (`instance=<id>,app=<app>,ip=<6pn>,region=<r>`) into
/// entries; strings without an id, app or IPv6 address are skipped.
pub fn parse_instances(texts: &[String]) -> Vec<Entry> {
    texts
        .iter()
        .filter_map(|t| {
            let kv: BTreeMap<&str, &str> = t.split(',').filter_map(|p| p.split_once('=')).collect();
            Some(Entry {
                app: kv.get("app")?.to_string(),
                id: kv.get("instance")?.to_string(),
                ip: kv.get("ip")?.parse().ok()?,
            })
        })
        .collect()
}

/// One question to the lab's DNS over TCP (answers can be larger than a UDP datagram).
fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Message, Error> {
    let dns = |source| Error::Dns {
        server,
        name: name.to_string(),
        source,
    };
    let answer = |reason: String| Error::Answer {
        server,
        name: name.to_string(),
        reason,
    };
    let qname = Name::from_str(name).map_err(|e| answer(format!("a bad name: {e}")))?;
    let mut m = Message::query();
    m.metadata.id = std::process::id() as u16;
    m.add_query(Query::query(qname, rtype));
    let bytes = m
        .to_vec()
        .map_err(|e| answer(format!("an unencodable query: {e}")))?;
    let mut s = TcpStream::connect_timeout(&server, DNS_TIMEOUT).map_err(dns)?;
    s.set_read_timeout(Some(DNS_TIMEOUT)).map_err(dns)?;
    s.set_write_timeout(Some(DNS_TIMEOUT)).map_err(dns)?;
    let len = u16::try_from(bytes.len()).map_err(|_| answer("an oversized query".into()))?;
    s.write_all(&len.to_be_bytes()).map_err(dns)?;
    s.write_all(&bytes).map_err(dns)?;
    let mut lenb = [0u8; 2];
    s.read_exact(&mut lenb).map_err(dns)?;
    let mut buf = vec![0u8; u16::from_be_bytes(lenb) as usize];
    s.read_exact(&mut buf).map_err(dns)?;
    let reply =
        Message::from_vec(&buf).map_err(|e| answer(format!("an undecodable reply: {e}")))?;
    match reply.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(reply),
        rc => Err(answer(format!("rcode {rc}"))),
    }
}

/// The lab's started machines, asked from its DNS at `server`: every instance of
/// `_instances.internal`, kept when its address is among the AAAA answers of `<app>.internal`
/// (which list started machines only).
pub fn lookup(server: SocketAddr) -> Result<Vec<Entry>, Error> {
    let reply = ask(server, "_instances.internal.", RecordType::TXT)?;
    let texts: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect();
    let all = parse_instances(&texts);
    let mut started_by_app: BTreeMap<String, Vec<Ipv6Addr>> = BTreeMap::new();
    for app in all.iter().map(|e| e.app.clone()) {
        if started_by_app.contains_key(&app) {
            continue;
        }
        let reply = ask(server, &format!("{app}.internal."), RecordType::AAAA)?;
        let ips = reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect();
        started_by_app.insert(app, ips);
    }
    Ok(all
        .into_iter()
        .filter(|e| {
            started_by_app
                .get(&e.app)
                .is_some_and(|ips| ips.contains(&e.ip))
        })
        .collect())
}

/// Writes (or with `None` removes) the block in the hosts file at `path`, in place (a
/// container's /etc/hosts is often a bind mount that cannot be replaced by rename). Returns
/// whether the file changed.
pub fn apply(path: &Path, bridge: &str, block: Option<&str>) -> Result<bool, Error> {
    let io = |op| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    let old = std::fs::read_to_string(path).map_err(io("reading"))?;
    let (begin, end) = markers(bridge);
    let new =
        replace_block(&old, (&begin, &end), block).map_err(|(begin, end)| Error::Unclosed {
            path: path.to_path_buf(),
            begin,
            end,
        })?;
    if new == old {
        return Ok(false);
    }
    std::fs::write(path, new).map_err(io("writing"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: (&str, &str) = ("# BEGIN fks-lab x", "# END fks-lab x");

    fn entry(app: &str, id: &str, ip: &str) -> Entry {
        Entry {
            app: app.into(),
            id: id.into(),
            ip: ip.parse().expect("ip"),
        }
    }

    #[test]
    fn block_is_appended_replaced_and_removed_leaving_other_lines_alone() {
        let hosts = "127.0.0.1 localhost\n::1 localhost";
        let b1 = render_block(&[entry("lab-cp", "abc", "fdaa:0:1::2")]);
        assert_eq!(b1, "fdaa:0:1::2 abc.vm.lab-cp.internal lab-cp.internal\n");
        let with = replace_block(hosts, M, Some(&b1)).expect("append");
        assert_eq!(
            with,
            "127.0.0.1 localhost\n::1 localhost\n# BEGIN fks-lab x\n\
             fdaa:0:1::2 abc.vm.lab-cp.internal lab-cp.internal\n# END fks-lab x\n"
        );
        let tail = format!("{with}10.0.0.1 other\n");
        let b2 = render_block(&[entry("lab-cp", "def", "fdaa:0:1::3")]);
        let replaced = replace_block(&tail, M, Some(&b2)).expect("replace");
        assert_eq!(replaced.matches("# BEGIN fks-lab x").count(), 1);
        assert!(replaced.contains("def.vm.lab-cp.internal") && !replaced.contains("abc."));
        assert!(replaced.ends_with("# END fks-lab x\n10.0.0.1 other\n"));
        let removed = replace_block(&replaced, M, None).expect("remove");
        assert_eq!(
            removed,
            "127.0.0.1 localhost\n::1 localhost\n10.0.0.1 other\n"
        );
        assert_eq!(replace_block(&removed, M, None).expect("again"), removed);
    }

    #[test]
    fn an_unclosed_block_is_refused() {
        assert!(replace_block("# BEGIN fks-lab x\n1.2.3.4 a\n", M, None).is_err());
    }

    #[test]
    fn instances_text_is_parsed_and_bad_strings_skipped() {
        let texts = vec![
            "instance=e28650,app=lab-cp,ip=fdaa:0:1:a7b:1::2,region=sjc".to_string(),
            "instance=x,app=y,ip=not-an-ip,region=sjc".to_string(),
            "garbage".to_string(),
        ];
        assert_eq!(
            parse_instances(&texts),
            vec![entry("lab-cp", "e28650", "fdaa:0:1:a7b:1::2")]
        );
    }

    #[test]
    fn apply_writes_in_place_and_reports_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hosts");
        std::fs::write(&path, "127.0.0.1 localhost\n").expect("write");
        let block = render_block(&[entry("a", "1", "fdaa::5")]);
        assert!(apply(&path, "br0", Some(&block)).expect("apply"));
        assert!(!apply(&path, "br0", Some(&block)).expect("again"));
        assert!(std::fs::read_to_string(&path)
            .expect("read")
            .contains("fdaa::5 1.vm.a.internal a.internal"));
        assert!(apply(&path, "br0", None).expect("remove"));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "127.0.0.1 localhost\n"
        );
    }
}
