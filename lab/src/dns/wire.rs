//! DNS messages in and out: decodes a query, asks the [`Directory`], encodes the reply
//! (RFC 1035 via `hickory-proto`).
//!
//! Pure: bytes in, bytes out. No sockets, no forwarding I/O (that is `server.rs` and
//! `upstream.rs`); this module only says when a question must be forwarded.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{AAAA, TXT};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use super::records::{is_internal, Data, Directory, Qtype, Rcode, TTL};

/// Plain DNS over UDP without EDNS carries at most 512 bytes (RFC 1035 §4.2.1).
const UDP_PLAIN_MAX: usize = 512;
/// The largest UDP payload we honour from a client's EDNS, whatever it offers.
const UDP_EDNS_CAP: u16 = 4096;
/// The UDP payload size we advertise (the DNS flag day 2020 value, no fragmentation).
const ADVERTISED_PAYLOAD: u16 = 1232;

/// How the question came in; UDP answers are truncated to fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagram: the reply must fit the client's size (512 or its EDNS size).
    Udp,
    /// Stream (two-byte length prefix): up to 65535 bytes.
    Tcp,
}

/// What to do with a received message.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back to the client.
    Send(Vec<u8>),
    /// A name outside `.internal` while forwarding is on: pass the request bytes, unchanged,
    /// to an upstream resolver and relay its reply.
    Forward,
    /// Not worth a reply (a response, or shorter than a header).
    Drop,
}

/// Answers one received message from `directory`.
///
/// `forwarding` says whether names outside `.internal` go upstream ([`Reply::Forward`]) or get
/// REFUSED; it is also the RA flag of every reply.
pub fn respond(
    request: &[u8],
    directory: &Directory,
    client: IpAddr,
    transport: Transport,
    forwarding: bool,
) -> Reply {
    let message = match Message::from_vec(request) {
        Ok(m) => m,
        Err(_) => {
            return match error_reply(request, ResponseCode::FormErr) {
                Some(bytes) => Reply::Send(bytes),
                None => Reply::Drop,
            }
        }
    };
    if message.metadata.message_type != MessageType::Query {
        return Reply::Drop;
    }
    let mut response = Message::response(message.metadata.id, message.metadata.op_code);
    response.metadata = Metadata::response_from_request(&message.metadata);
    response.metadata.recursion_available = forwarding;
    response.queries = message.queries.clone();
    if message.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(ADVERTISED_PAYLOAD);
        response.edns = Some(edns);
    }
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => match &message.edns {
            Some(edns) => usize::from(edns.max_payload().min(UDP_EDNS_CAP)).max(UDP_PLAIN_MAX),
            None => UDP_PLAIN_MAX,
        },
    };

    let query = match (message.metadata.op_code, message.queries.as_slice()) {
        (OpCode::Query, [query]) => query,
        (OpCode::Query, _) => return finish(response, ResponseCode::FormErr, limit),
        _ => return finish(response, ResponseCode::NotImp, limit),
    };
    let name = query.name().to_ascii();
    if !is_internal(&name) {
        if forwarding {
            return Reply::Forward;
        }
        return finish(response, ResponseCode::Refused, limit);
    }
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return finish(response, ResponseCode::Refused, limit);
    }
    let answer = directory.answer_from(&name, qtype(query), Some(client));
    response.metadata.authoritative = true;
    response.answers = answer
        .records
        .into_iter()
        .map(|data| Record::from_rdata(query.name().clone(), TTL, rdata(data)))
        .collect();
    let rcode = match answer.rcode {
        Rcode::NoError => ResponseCode::NoError,
        Rcode::NxDomain => ResponseCode::NXDomain,
        Rcode::Refused => ResponseCode::Refused,
    };
    finish(response, rcode, limit)
}

/// A reply with `rcode` and no records to whatever `request` is, built from its header and
/// question alone; `None` when it is not even a header. Used for FORMERR and for SERVFAIL after
/// a failed forward.
pub fn error_reply(request: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*request.first()?, *request.get(1)?]);
    if let Ok(message) = Message::from_vec(request) {
        let mut response = Message::response(id, message.metadata.op_code);
        response.metadata = Metadata::response_from_request(&message.metadata);
        response.metadata.response_code = rcode;
        response.queries = message.queries;
        if let Ok(bytes) = response.to_vec() {
            return Some(bytes);
        }
    }
    Message::error_msg(id, OpCode::Query, rcode).to_vec().ok()
}

/// The question's id, for matching a forwarded reply to its request.
pub fn message_id(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
}

fn finish(mut response: Message, rcode: ResponseCode, limit: usize) -> Reply {
    response.metadata.response_code = rcode;
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Reply::Send(bytes),
        // Too big for this transport: header, question and TC=1, so the client retries over TCP.
        Ok(_) => match response.truncate().to_vec() {
            Ok(bytes) => Reply::Send(bytes),
            Err(_) => Reply::Drop,
        },
        Err(_) => {
            response.answers.clear();
            response.metadata.response_code = ResponseCode::ServFail;
            match response.to_vec() {
                Ok(bytes) => Reply::Send(bytes),
                Err(_) => Reply::Drop,
            }
        }
    }
}

fn qtype(query: &Query) -> Qtype {
    match query.query_type() {
        RecordType::A => Qtype::A,
        RecordType::AAAA => Qtype::Aaaa,
        RecordType::TXT => Qtype::Txt,
        RecordType::ANY => Qtype::Any,
        other => Qtype::Other(u16::from(other)),
    }
}

fn rdata(data: Data) -> RData {
    match data {
        Data::Aaaa(ip) => RData::AAAA(AAAA(ip)),
        Data::Txt(strings) => RData::TXT(TXT::new(strings)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv6Addr;
    use std::str::FromStr;

    use hickory_proto::rr::Name;

    use super::*;
    use crate::dns::records::Machine;

    const CLIENT: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    fn directory(machines: u16) -> Directory {
        let mut d = Directory::new();
        for n in 0..machines {
            d.upsert_machine(Machine {
                id: format!("m{n}"),
                app: "demo".into(),
                region: "sjc".into(),
                private_ip: Ipv6Addr::new(0xfdaa, 0, 1, 0, 0, 0, n, 2),
                started: true,
                metadata: BTreeMap::new(),
                process_group: None,
                skip_registration: false,
            });
        }
        d
    }

    fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).expect("name"), rtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.edns = Some(e);
        }
        m.to_vec().expect("encode")
    }

    fn decode(reply: Reply) -> Message {
        match reply {
            Reply::Send(bytes) => Message::from_vec(&bytes).expect("decode reply"),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn internal_question_gets_authoritative_answers_with_ttl() {
        let d = directory(2);
        let q = query("Demo.internal.", RecordType::AAAA, None);
        let m = decode(respond(&q, &d, CLIENT, Transport::Udp, false));
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert!(m.metadata.authoritative);
        assert!(m.metadata.recursion_desired);
        assert!(!m.metadata.recursion_available);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.answers.len(), 2);
        for r in &m.answers {
            assert_eq!(r.ttl, TTL);
            assert!(r.name.to_ascii().eq_ignore_ascii_case("demo.internal."));
            assert_eq!(r.record_type(), RecordType::AAAA);
        }
    }

    #[test]
    fn unknown_internal_name_is_nxdomain() {
        let d = directory(1);
        let q = query("nope.internal.", RecordType::AAAA, None);
        let m = decode(respond(&q, &d, CLIENT, Transport::Udp, true));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn txt_answer_carries_the_list() {
        let d = directory(2);
        let q = query("vms.demo.internal.", RecordType::TXT, None);
        let m = decode(respond(&q, &d, CLIENT, Transport::Tcp, false));
        assert_eq!(m.answers.len(), 1);
        let RData::TXT(txt) = &m.answers[0].data else {
            panic!("TXT expected: {:?}", m.answers[0]);
        };
        let text: Vec<u8> = txt
            .txt_data
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(text, b"m0 sjc,m1 sjc");
    }

    #[test]
    fn outside_names_are_refused_or_forwarded() {
        let d = directory(1);
        let q = query("example.com.", RecordType::A, None);
        let m = decode(respond(&q, &d, CLIENT, Transport::Udp, false));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.authoritative);
        assert_eq!(
            respond(&q, &d, CLIENT, Transport::Udp, true),
            Reply::Forward
        );
    }

    #[test]
    fn big_udp_answer_is_truncated_and_tcp_is_not() {
        let d = directory(40);
        let q = query("demo.internal.", RecordType::AAAA, None);
        let m = decode(respond(&q, &d, CLIENT, Transport::Udp, false));
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        let m = decode(respond(&q, &d, CLIENT, Transport::Tcp, false));
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 40);
        // An EDNS client offering 4096 bytes gets them all over UDP too.
        let q = query("demo.internal.", RecordType::AAAA, Some(4096));
        let m = decode(respond(&q, &d, CLIENT, Transport::Udp, false));
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 40);
        assert_eq!(m.edns.map(|e| e.max_payload()), Some(ADVERTISED_PAYLOAD));
    }

    #[test]
    fn garbage_gets_formerr_and_responses_are_ignored() {
        let d = directory(1);
        let m = decode(respond(
            &[0x12, 0x34, 0xff],
            &d,
            CLIENT,
            Transport::Udp,
            false,
        ));
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(
            respond(&[7], &d, CLIENT, Transport::Udp, false),
            Reply::Drop
        );
        let q = query("demo.internal.", RecordType::AAAA, None);
        let Reply::Send(reply) = respond(&q, &d, CLIENT, Transport::Udp, false) else {
            panic!("reply expected");
        };
        assert_eq!(
            respond(&reply, &d, CLIENT, Transport::Udp, false),
            Reply::Drop
        );
    }

    #[test]
    fn error_reply_keeps_id_and_question() {
        let q = query("example.com.", RecordType::A, None);
        let bytes = error_reply(&q, ResponseCode::ServFail).expect("reply");
        let m = Message::from_vec(&bytes).expect("decode");
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(m.queries[0].name().to_ascii(), "example.com.");
        assert_eq!(message_id(&bytes), Some(4242));
    }
}
