//! Which Kubernetes API server a new connection goes to. Pure: no I/O and no clock here (the
//! caller passes `now`), so failover is tested without a network.
//!
//! The rule: stay with the server that answered last (its connections keep going to one
//! apiserver, which keeps watches and logs steady); when it fails, mark it and move on to the
//! next one, Ready servers before others; a server that failed is tried again only after
//! [`RETRY_AFTER`], or when every other one failed too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a server that failed a connect goes to the back of the line.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// A control-plane server the proxy may forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The node name (`ctrl-1`).
    pub name: String,
    /// Its Kubernetes API address: `[6PN address]:6443`.
    pub addr: SocketAddr,
    /// k3s reported it Ready (`fks_ready` metadata).
    pub ready: bool,
}

/// The choice of server, kept across connections.
#[derive(Debug, Default)]
pub struct Picker {
    servers: Vec<Server>,
    /// The server new connections go to first: the last one that answered, unless it failed
    /// since.
    current: Option<String>,
    /// The server the last successful connect went to (kept across a failure, for the log).
    last_used: Option<String>,
    /// When each server last failed a connect.
    failed: BTreeMap<String, Instant>,
}

/// What a successful connect changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The same server as before.
    Same,
    /// The first server used.
    First,
    /// Another server than before (failover).
    Switched {
        /// The server used before.
        from: String,
    },
}

impl Picker {
    /// A picker over `servers`.
    pub fn new(servers: Vec<Server>) -> Picker {
        Picker {
            servers,
            ..Picker::default()
        }
    }

    /// The servers now known (a refresh from the Machines API replaces them). Failure marks
    /// of servers still present are kept; a server whose address changed (it moved) loses
    /// its mark.
    pub fn set_servers(&mut self, servers: Vec<Server>) {
        let old = std::mem::take(&mut self.servers);
        self.failed.retain(|name, _| {
            servers
                .iter()
                .any(|s| &s.name == name && old.iter().any(|o| &o.name == name && o.addr == s.addr))
        });
        self.servers = servers;
    }

    /// The servers known now.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// The order to try servers in for a new connection at `now`: the current server unless
    /// it failed recently, then the Ready ones, then the others (each group by name), then
    /// the ones that failed within [`RETRY_AFTER`], longest ago first.
    pub fn order(&self, now: Instant) -> Vec<Server> {
        let recently_failed = |s: &Server| {
            self.failed
                .get(&s.name)
                .is_some_and(|at| now.saturating_duration_since(*at) < RETRY_AFTER)
        };
        let mut fresh: Vec<&Server> = self
            .servers
            .iter()
            .filter(|s| !recently_failed(s))
            .collect();
        fresh.sort_by_key(|s| {
            (
                self.current.as_deref() != Some(s.name.as_str()),
                !s.ready,
                s.name.clone(),
            )
        });
        let mut stale: Vec<&Server> = self.servers.iter().filter(|s| recently_failed(s)).collect();
        stale.sort_by_key(|s| (self.failed.get(&s.name).copied(), s.name.clone()));
        fresh.into_iter().chain(stale).cloned().collect()
    }

    /// A connect to `name` failed at `now`.
    pub fn failed(&mut self, name: &str, now: Instant) {
        self.failed.insert(name.to_string(), now);
        if self.current.as_deref() == Some(name) {
            self.current = None;
        }
    }

    /// A connect to `name` succeeded: it is the current server now. Says whether that changed,
    /// for the log.
    pub fn connected(&mut self, name: &str) -> Change {
        self.failed.remove(name);
        self.current = Some(name.to_string());
        match self.last_used.replace(name.to_string()) {
            None => Change::First,
            Some(old) if old == name => Change::Same,
            Some(old) => Change::Switched { from: old },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, last: u16, ready: bool) -> Server {
        Server {
            name: name.into(),
            addr: SocketAddr::new(
                std::net::Ipv6Addr::new(0xfdaa, 0, 1, 0, 0, 0, 0, last).into(),
                6443,
            ),
            ready,
        }
    }

    fn names(v: &[Server]) -> Vec<&str> {
        v.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn ready_servers_come_first_and_the_one_that_answered_stays_first() {
        let now = Instant::now();
        let mut p = Picker::new(vec![
            server("ctrl-0", 2, false),
            server("ctrl-1", 3, true),
            server("ctrl-2", 4, true),
        ]);
        assert_eq!(names(&p.order(now)), ["ctrl-1", "ctrl-2", "ctrl-0"]);
        assert_eq!(p.connected("ctrl-2"), Change::First);
        assert_eq!(names(&p.order(now)), ["ctrl-2", "ctrl-1", "ctrl-0"]);
        assert_eq!(p.connected("ctrl-2"), Change::Same);
    }

    #[test]
    fn a_failed_server_goes_last_until_retry_after_and_the_next_one_takes_over() {
        let t0 = Instant::now();
        let mut p = Picker::new(vec![
            server("ctrl-0", 2, true),
            server("ctrl-1", 3, true),
            server("ctrl-2", 4, true),
        ]);
        p.connected("ctrl-0");
        p.failed("ctrl-0", t0);
        assert_eq!(names(&p.order(t0)), ["ctrl-1", "ctrl-2", "ctrl-0"]);
        assert_eq!(
            p.connected("ctrl-1"),
            Change::Switched {
                from: "ctrl-0".into()
            }
        );
        // Later connections stay on ctrl-1, even after ctrl-0's mark expires.
        let later = t0 + RETRY_AFTER + Duration::from_secs(1);
        assert_eq!(names(&p.order(later)), ["ctrl-1", "ctrl-0", "ctrl-2"]);
        // Two failures: the one that failed longest ago is tried first of the two.
        p.failed("ctrl-1", t0 + Duration::from_secs(2));
        p.failed("ctrl-2", t0 + Duration::from_secs(1));
        assert_eq!(
            names(&p.order(t0 + Duration::from_secs(3))),
            ["ctrl-0", "ctrl-2", "ctrl-1"]
        );
    }

    #[test]
    fn when_every_server_failed_all_are_still_tried() {
        let t0 = Instant::now();
        let mut p = Picker::new(vec![server("ctrl-0", 2, true), server("ctrl-1", 3, true)]);
        p.failed("ctrl-1", t0);
        p.failed("ctrl-0", t0 + Duration::from_millis(1));
        assert_eq!(
            names(&p.order(t0 + Duration::from_secs(1))),
            ["ctrl-1", "ctrl-0"]
        );
        assert!(Picker::new(vec![]).order(t0).is_empty());
    }

    #[test]
    fn a_refresh_keeps_marks_of_unchanged_servers_and_drops_moved_or_gone_ones() {
        let t0 = Instant::now();
        let mut p = Picker::new(vec![
            server("ctrl-0", 2, true),
            server("ctrl-1", 3, true),
            server("ctrl-2", 4, true),
        ]);
        p.failed("ctrl-0", t0);
        p.failed("ctrl-1", t0);
        p.failed("ctrl-2", t0);
        // ctrl-1 moved (new 6PN address), ctrl-2 is gone (stopped), ctrl-3 is new.
        p.set_servers(vec![
            server("ctrl-0", 2, true),
            server("ctrl-1", 9, true),
            server("ctrl-3", 5, false),
        ]);
        assert_eq!(names(&p.order(t0)), ["ctrl-1", "ctrl-3", "ctrl-0"]);
        assert_eq!(p.servers().len(), 3);
    }
}
