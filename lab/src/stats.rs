//! Introspection for tests and benchmarks: request counts by route and status, and a bounded
//! log of requests (`/lab/v1/stats`, `/lab/v1/events`). Pure bookkeeping, no I/O.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// How many request log entries are kept (oldest dropped first).
pub const LOG_CAPACITY: usize = 20_000;

/// One logged request.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: u64,
    pub at_ms: u64,
    pub method: String,
    pub path: String,
    /// The route template, e.g. `POST /v1/apps/{app}/machines`.
    pub route: String,
    pub status: u16,
}

/// Counters and the request log.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: u64,
    pub mutations: u64,
    /// Successful exec calls: commands run inside a machine, which change nothing on the
    /// platform and so are not counted as mutations.
    pub execs: u64,
    pub by_route: BTreeMap<String, BTreeMap<String, u64>>,
    pub log: VecDeque<Entry>,
    seq: u64,
}

impl Stats {
    /// Count one `/v1` request. Mutations are successful (2xx) POST/PUT/PATCH/DELETE requests
    /// that change platform state; a successful exec (a command inside the machine) is counted
    /// under `execs` instead.
    pub fn record(&mut self, method: &str, path: &str, route: &str, status: u16, at_ms: u64) {
        self.requests += 1;
        if method != "GET" && method != "HEAD" && (200..300).contains(&status) {
            if route.ends_with("/exec") {
                self.execs += 1;
            } else {
                self.mutations += 1;
            }
        }
        *self
            .by_route
            .entry(route.to_string())
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
        self.seq += 1;
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(Entry {
            seq: self.seq,
            at_ms,
            method: method.into(),
            path: path.into(),
            route: route.into(),
            status,
        });
    }

    /// The counters as JSON.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "mutations": self.mutations,
            "execs": self.execs,
            "by_route": self.by_route,
        })
    }

    /// Log entries with `seq > since`, oldest first.
    pub fn since(&self, since: u64) -> Vec<Entry> {
        self.log.iter().filter(|e| e.seq > since).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_mutations_only_for_successful_writes() {
        let mut s = Stats::default();
        s.record("POST", "/v1/apps", "POST /v1/apps", 201, 1);
        s.record("POST", "/v1/apps", "POST /v1/apps", 422, 2);
        s.record("GET", "/v1/apps/a", "GET /v1/apps/{app}", 200, 3);
        assert_eq!(s.requests, 3);
        assert_eq!(s.mutations, 1);
        assert_eq!(s.by_route["POST /v1/apps"]["422"], 1);
        assert_eq!(s.since(1).len(), 2);
        let exec = "POST /v1/apps/{app}/machines/{id}/exec";
        s.record("POST", "/v1/apps/a/machines/m/exec", exec, 200, 4);
        assert_eq!(
            (s.mutations, s.execs),
            (1, 1),
            "exec changes no platform state"
        );
    }
}
