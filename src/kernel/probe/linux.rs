//! The link probe of [`super`] on Linux: create and delete a VXLAN or WireGuard link over
//! rtnetlink in a scratch network namespace. Linux only (declared under
//! `cfg(target_os = "linux")`); must not touch the node's own namespace.

use super::{Finding, LinkKind};

/// Create and delete a link of `kind` in a scratch network namespace, on a thread of its own
/// (a network namespace belongs to a thread; the namespace goes away with the thread).
pub(super) fn link(kind: LinkKind) -> Finding {
    let handle = std::thread::spawn(move || {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            return Finding::Unknown(format!(
                "cannot make a scratch network namespace to create a {} link in: {e}",
                kind.as_str()
            ));
        }
        netlink::create_and_delete(kind)
    });
    handle
        .join()
        .unwrap_or_else(|_| Finding::Unknown("the probe thread panicked".to_string()))
}

/// The rtnetlink requests of the link probe.
mod netlink {
    use netlink_packet_core::{
        NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
        NLM_F_REQUEST,
    };
    use netlink_packet_route::link::LinkMessage;
    use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    use super::super::{Finding, LinkKind};

    /// The probe link's name, in its own namespace, so it cannot clash.
    const NAME: &str = "fks-probe0";

    pub fn create_and_delete(kind: LinkKind) -> Finding {
        let socket = match open() {
            Ok(s) => s,
            Err(e) => return Finding::Unknown(format!("opening an rtnetlink socket: {e}")),
        };
        let info = match kind {
            LinkKind::Vxlan => vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(42),
                    InfoVxlan::Port(4789),
                ])),
            ],
            LinkKind::Wireguard => vec![LinkInfo::Kind(InfoKind::Wireguard)],
        };
        let mut create = LinkMessage::default();
        create.attributes = vec![
            LinkAttribute::IfName(NAME.to_string()),
            LinkAttribute::LinkInfo(info),
        ];
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let what = kind.as_str();
        match request(&socket, RouteNetlinkMessage::NewLink(create), flags) {
            Ok(()) => {}
            Err(errno) => return super::super::classify_create_error(what, errno),
        }
        let mut delete = LinkMessage::default();
        delete.attributes = vec![LinkAttribute::IfName(NAME.to_string())];
        match request(
            &socket,
            RouteNetlinkMessage::DelLink(delete),
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            Ok(()) => Finding::Present(format!("created and deleted a {what} link")),
            // Created is what counts; the namespace (and the link) go with the thread.
            Err(errno) => Finding::Present(format!(
                "created a {what} link (deleting it failed: {}; it goes with its scratch namespace)",
                std::io::Error::from_raw_os_error(errno)
            )),
        }
    }

    fn open() -> std::io::Result<Socket> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(socket)
    }

    /// Send one request and wait for its acknowledgement: `Err(errno)` on a negative one, or
    /// on a socket error (its errno, or EIO).
    fn request(socket: &Socket, message: RouteNetlinkMessage, flags: u16) -> Result<(), i32> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = 1;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(message));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        let io_errno = |e: std::io::Error| e.raw_os_error().unwrap_or(super::super::EIO);
        socket.send(&buf, 0).map_err(io_errno)?;
        loop {
            let (bytes, _) = socket.recv_from_full().map_err(io_errno)?;
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes)
                .map_err(|_| super::super::EIO)?;
            match reply.payload {
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(()),
                        Some(code) => Err(-code.get()),
                    }
                }
                NetlinkPayload::Done(_) => return Ok(()),
                // Anything else (a notification) is not the answer; read on.
                _ => continue,
            }
        }
    }
}
