//! `.internal` names looked up through the tunnel: AAAA over TCP to the org's resolver
//! `<org /48>::3` (flyctl's agent uses TCP too, reference fly-runtime.md §5).
//! Must not: fall back to the system resolver (it cannot see 6PN).

use std::net::Ipv6Addr;
use std::str::FromStr;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::device::Handle;
use super::Error;

/// The AAAA records of `name` from `server`, port 53, through `tunnel`.
pub async fn lookup(tunnel: &Handle, server: Ipv6Addr, name: &str) -> Result<Vec<Ipv6Addr>, Error> {
    let fail = |message: String| Error::Resolve {
        name: name.to_string(),
        server,
        message,
    };
    let qname = Name::from_str(name).map_err(|e| fail(e.to_string()))?;
    let mut m = Message::query();
    m.metadata.id = rand::random();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(qname, RecordType::AAAA));
    let query = m.to_vec().map_err(|e| fail(e.to_string()))?;
    let mut conn = tunnel
        .connect((server, 53).into())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let io = async {
        let len = u16::try_from(query.len()).unwrap_or(u16::MAX);
        conn.write_all(&len.to_be_bytes()).await?;
        conn.write_all(&query).await?;
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).await?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), io)
        .await
        .map_err(|_| fail("no answer within 5s".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let reply = Message::from_vec(&answer).map_err(|e| fail(e.to_string()))?;
    Ok(reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect())
}
