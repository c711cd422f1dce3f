//! The servers' node store in etcd: every API call reads the node records from etcd
//! (linearizable, so it needs quorum), applies the pure `nodes::Cluster` operation, and writes
//! back the records it changed in one transaction that holds only if none of them changed in
//! between (optimistic concurrency, as the apiserver's etcd3 store does with mod revisions);
//! on a conflict it reads again and retries.
//!
//! So every server answers from the same data, and with quorum lost every call fails with
//! etcd's own error. Must not hold a lock across an etcd call.

use std::collections::BTreeMap;

use fks_bootstrap::etcd::{self as client, Client, Write};
use ipnet::IpNet;

use crate::nodes::{self, Cluster, REGISTRY_PREFIX};

/// How many times a conflicting write is tried again before giving up.
const TRIES: usize = 20;

/// A node store on an etcd member.
pub struct Store {
    /// The local member.
    pub client: Client,
    cluster_cidrs: Vec<IpNet>,
    mask_v4: u8,
    mask_v6: u8,
    timeout: u64,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Etcd(#[from] client::Error),
    #[error("node store: {0}")]
    Data(#[from] nodes::Error),
    #[error("node store: the write conflicted {TRIES} times in a row")]
    Conflict,
}

impl Store {
    /// A store allocating pod CIDRs as `Cluster::new` does.
    pub fn new(
        client: Client,
        cluster_cidrs: Vec<IpNet>,
        mask_v4: u8,
        mask_v6: u8,
        timeout: u64,
    ) -> Store {
        Store {
            client,
            cluster_cidrs,
            mask_v4,
            mask_v6,
            timeout,
        }
    }

    /// Run `op` on the cluster as stored now and write back what it changed. The outer error
    /// is the store's (etcd unreachable, no quorum); the inner one is `op`'s.
    pub async fn apply<T, F>(&self, mut op: F) -> Result<Result<T, nodes::Error>, Error>
    where
        F: FnMut(&mut Cluster) -> Result<T, nodes::Error>,
    {
        for _ in 0..TRIES {
            let range = self.client.range_prefix(REGISTRY_PREFIX).await?;
            let mut revs: BTreeMap<String, i64> = BTreeMap::new();
            let mut before: BTreeMap<String, String> = BTreeMap::new();
            for kv in range.kvs {
                revs.insert(kv.key.clone(), kv.mod_revision);
                before.insert(kv.key, String::from_utf8_lossy(&kv.value).into_owned());
            }
            let mut cluster = Cluster::new(
                self.cluster_cidrs.clone(),
                self.mask_v4,
                self.mask_v6,
                self.timeout,
            );
            cluster.import(&before)?;
            // The import normalises; compare against the normalised form.
            let base = cluster.export();
            let out = op(&mut cluster);
            let after = cluster.export();
            let mut writes = Vec::new();
            let mut expect = Vec::new();
            for (k, v) in &after {
                if base.get(k) != Some(v) {
                    writes.push(Write::Put(k.clone(), v.clone().into_bytes()));
                    expect.push((k.clone(), revs.get(k).copied().unwrap_or(0)));
                }
            }
            for k in base.keys().filter(|k| !after.contains_key(*k)) {
                writes.push(Write::Delete(k.clone()));
                expect.push((k.clone(), revs.get(k).copied().unwrap_or(0)));
            }
            if writes.is_empty() || self.client.txn(&expect, &writes).await? {
                return Ok(out);
            }
        }
        Err(Error::Conflict)
    }
}
