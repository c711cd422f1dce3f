//! Names outside `.internal`: which upstream resolvers the lab forwards to, and the forwarding
//! itself (the request bytes go out unchanged, the first matching reply comes back).
//!
//! Fly's `fdaa::3` resolves public names too (reference fly-machines-api.md §7), so the lab
//! passes them to the host's resolvers from /etc/resolv.conf. The forwarder runs in the host's
//! network namespace, so a host-local resolver on loopback (systemd-resolved's 127.0.0.53,
//! Docker's 127.0.0.11) is a valid upstream; what is left out is the lab's own resolver: any
//! address the lab listens on, loopback when it listens on a wildcard address at port 53, and
//! 6PN addresses (`fdaa::/16`). This module must not decide what is answered locally.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::wire::{message_id, Transport};
use super::{Error, Result};

/// Port upstream resolvers are asked on.
const DNS_PORT: u16 = 53;

/// Nameserver addresses of a resolv.conf text, in file order. Scoped link-local entries
/// (`fe80::1%eth0`) and malformed lines are skipped.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => addr.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

/// The nameservers of the resolv.conf file at `path`.
pub fn nameservers_from(path: &Path) -> Result<Vec<IpAddr>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadResolvConf {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(nameservers(&text))
}

/// Upstreams to forward to: `nameservers` on port 53, less the lab's own resolver (see the
/// module comment), deduplicated, in order.
pub fn upstreams(nameservers: &[IpAddr], bind: &[SocketAddr]) -> Vec<SocketAddr> {
    let six_pn = |ip: &IpAddr| matches!(ip, IpAddr::V6(v6) if v6.segments()[0] == 0xfdaa);
    let ourselves = |ip: &IpAddr| {
        bind.iter().any(|b| {
            b.port() == DNS_PORT && (b.ip() == *ip || (b.ip().is_unspecified() && ip.is_loopback()))
        })
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for ip in nameservers {
        let ip = canonical(*ip);
        let addr = SocketAddr::new(ip, DNS_PORT);
        if !six_pn(&ip) && !ourselves(&ip) && !ip.is_unspecified() && !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// IPv4-mapped IPv6 addresses as IPv4, so comparisons see one form.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Sends `request` to each upstream in turn until one answers; returns its reply bytes.
/// Each upstream gets `timeout`; the error is the last upstream's.
pub async fn forward(
    request: &[u8],
    upstreams: &[SocketAddr],
    transport: Transport,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let mut last = Error::NoUpstream;
    for &upstream in upstreams {
        let attempt = async {
            match transport {
                Transport::Udp => forward_udp(request, upstream).await,
                Transport::Tcp => forward_tcp(request, upstream).await,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(e)) => last = e,
            Err(_) => last = Error::ForwardTimeout { upstream, timeout },
        }
    }
    Err(last)
}

async fn forward_udp(request: &[u8], upstream: SocketAddr) -> Result<Vec<u8>> {
    let io = |source| Error::Forward {
        upstream,
        protocol: "udp",
        source,
    };
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(request).await.map_err(io)?;
    let want = message_id(request);
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buf).await.map_err(io)?;
        // A stray datagram with another id is not our answer (RFC 5452 §9.1).
        if message_id(&buf[..len]) == want {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(request: &[u8], upstream: SocketAddr) -> Result<Vec<u8>> {
    let io = |source| Error::Forward {
        upstream,
        protocol: "tcp",
        source,
    };
    let len = u16::try_from(request.len()).map_err(|_| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "request longer than 65535 bytes",
        ))
    })?;
    let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await.map_err(io)?;
    let len = stream.read_u16().await.map_err(io)?;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await.map_err(io)?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn nameservers_are_read_in_order_skipping_junk() {
        let conf = "# generated\nsearch lan\nnameserver 10.0.0.2\n; comment\n\
                    nameserver  2001:db8::53 \nnameserver fe80::1%eth0\nnameserver\n\
                    options ndots:2\nnameserver 127.0.0.53\n";
        let want: Vec<IpAddr> = vec![
            "10.0.0.2".parse().expect("ip"),
            "2001:db8::53".parse().expect("ip"),
            "127.0.0.53".parse().expect("ip"),
        ];
        assert_eq!(nameservers(conf), want);
    }

    #[test]
    fn upstreams_leave_out_the_lab_resolver_itself() {
        let ns: Vec<IpAddr> = [
            "fdaa::3",
            "10.0.0.2",
            "127.0.0.53",
            "10.0.0.2",
            "::ffff:1.2.3.4",
        ]
        .iter()
        .map(|s| s.parse().expect("ip"))
        .collect();
        // Bound on fdaa::3 only: host-local resolvers stay.
        assert_eq!(
            upstreams(&ns, &[sa("[fdaa::3]:53")]),
            vec![sa("10.0.0.2:53"), sa("127.0.0.53:53"), sa("1.2.3.4:53")]
        );
        // Bound on the wildcard at 53: loopback would be ourselves.
        assert_eq!(
            upstreams(&ns, &[sa("0.0.0.0:53")]),
            vec![sa("10.0.0.2:53"), sa("1.2.3.4:53")]
        );
        // Bound exactly on one upstream address.
        assert_eq!(
            upstreams(&ns, &[sa("10.0.0.2:53")]),
            vec![sa("127.0.0.53:53"), sa("1.2.3.4:53")]
        );
        // Same address on a test port is not us.
        assert_eq!(upstreams(&ns, &[sa("127.0.0.53:5353")]).len(), 3);
    }

    #[test]
    fn missing_resolv_conf_names_the_file() {
        let err = nameservers_from(Path::new("/nonexistent/resolv.conf")).expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/resolv.conf"),
            "{err}"
        );
    }
}
