//! The `.internal` record set and the answering logic (reference fly-machines-api.md §7, §8.13).
//!
//! Pure: a [`Directory`] is a value (apps and machines as the API server last saw them) and
//! [`Directory::answer`] maps a question to an [`Answer`]. No sockets, no clock, no tokio, no
//! wire format here (that is `wire.rs`).
//!
//! Rules this module decides (Fly does not document them):
//! - Matching is ASCII case-insensitive; a trailing dot is optional.
//! - A name *exists* when something it denotes exists in any state; its AAAA answers list only
//!   started machines. So `<app>.internal` of an app whose machines are all stopped, or a stopped
//!   machine's `<id>.vm.<app>.internal`, is NOERROR with no answers (NODATA), while an unknown
//!   app, region, machine, process group or metadata pair is NXDOMAIN.
//! - A name of one kind asked for another record type (AAAA of a TXT name, TXT or A of an AAAA
//!   name) is NODATA. There are no A records: 6PN is IPv6 only. ANY gets what the name holds.
//! - Machines with `dns.skip_registration` are invisible in every name, `all.*` ones included
//!   (§8.13).
//! - List TXT names (`vms`, `regions`, `_apps`) hold one record whose text is the comma-separated
//!   list, split into 255-byte character-strings when longer (join the strings of the record,
//!   as Go's `net.LookupTXT` does). An empty list is NODATA.
//! - `_instances.internal` holds one TXT record per machine,
//!   `instance=<id>,app=<app>,ip=<6pn ip>,region=<region>`, ordered by app then id.
//! - `top<N>.nearest.of.<app>.internal` (N >= 1): started machines in the asking machine's
//!   region first, then the others, each part ordered by region then id. The lab has no
//!   distances, so this is the deterministic stand-in for "nearest".
//! - The lab has one org and no WireGuard peers: `_peer.internal` is NODATA and
//!   `<peer>._peer.internal` NXDOMAIN; `_api.internal` answers only when an API address is set.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

/// TTL of every answer, in seconds (the example TTL in §7; short because machines come and go).
pub const TTL: u32 = 5;

/// Longest character-string a TXT record can carry (RFC 1035 §3.3).
const TXT_STRING_MAX: usize = 255;

/// What the DNS knows about one machine. The API server builds it from its machine record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// Machine id, e.g. `3d8d9d1b2e3f48`.
    pub id: String,
    /// App the machine belongs to.
    pub app: String,
    /// Region code, e.g. `sjc`.
    pub region: String,
    /// The machine's 6PN address (FLY_PRIVATE_IP).
    pub private_ip: Ipv6Addr,
    /// True only in state `started`; every other state is left out of AAAA answers (§7).
    pub started: bool,
    /// `config.metadata`, for `<value>.<key>.kv._metadata.<app>.internal`.
    pub metadata: BTreeMap<String, String>,
    /// Process group, for `<group>.process.<app>.internal`. When `None`, the
    /// `fly_process_group` metadata value is used, which is where Fly keeps it (§7).
    pub process_group: Option<String>,
    /// `config.dns.skip_registration`: the machine is in no name at all (§8.13).
    pub skip_registration: bool,
}

/// The org's apps and machines, as the DNS answers from them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    apps: BTreeSet<String>,
    machines: BTreeMap<String, Machine>,
    api: Option<Ipv6Addr>,
}

/// The kind of record a question asks for, as far as `.internal` cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qtype {
    /// IPv4 address: never present (6PN is IPv6 only).
    A,
    /// IPv6 address.
    Aaaa,
    /// Text.
    Txt,
    /// Everything the name holds.
    Any,
    /// Any other type, by number: always NODATA.
    Other(u16),
}

/// The data of one answer record; the owner name is the question's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// An AAAA record.
    Aaaa(Ipv6Addr),
    /// A TXT record: its character-strings, each at most 255 bytes.
    Txt(Vec<String>),
}

/// Response code of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rcode {
    /// The name exists; `records` may still be empty (NODATA).
    NoError,
    /// The `.internal` name does not exist.
    NxDomain,
    /// The name is not under `.internal`: not ours to answer.
    Refused,
}

/// The answer to one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Answer records, all with TTL [`TTL`].
    pub records: Vec<Data>,
    /// Response code.
    pub rcode: Rcode,
}

/// What a name denotes before the record type is applied.
enum Node {
    Hosts(Vec<Ipv6Addr>),
    /// TXT records, each a list of character-strings. Empty: the name exists with no records.
    Text(Vec<Vec<String>>),
    Missing,
}

/// True when `name` is `internal` or under it (case-insensitive, trailing dot optional).
pub fn is_internal(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let Some(last) = name.rsplit('.').next() else {
        return false;
    };
    last.eq_ignore_ascii_case("internal")
}

impl Machine {
    /// The process group: the field, else the `fly_process_group` metadata value.
    fn group(&self) -> Option<&str> {
        self.process_group
            .as_deref()
            .or_else(|| self.metadata.get("fly_process_group").map(String::as_str))
    }
}

impl Directory {
    /// An empty directory: no apps, no machines, no API address.
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory of these apps and machines (apps of the machines are added), for rebuilding
    /// the whole directory from the API server's state after a change.
    pub fn from_parts(
        apps: impl IntoIterator<Item = String>,
        machines: impl IntoIterator<Item = Machine>,
    ) -> Self {
        let mut d = Directory {
            apps: apps.into_iter().collect(),
            ..Directory::default()
        };
        for m in machines {
            d.upsert_machine(m);
        }
        d
    }

    /// Adds an app of the org (listed in `_apps.internal` even before it has machines).
    pub fn add_app(&mut self, app: &str) {
        self.apps.insert(app.to_string());
    }

    /// Removes an app and every machine of it.
    pub fn remove_app(&mut self, app: &str) {
        self.apps.remove(app);
        self.machines.retain(|_, m| m.app != app);
    }

    /// Adds a machine or replaces the one with the same id; its app is added to the app list.
    pub fn upsert_machine(&mut self, machine: Machine) {
        self.apps.insert(machine.app.clone());
        self.machines.insert(machine.id.clone(), machine);
    }

    /// Removes a machine (destroyed); returns it if it was there.
    pub fn remove_machine(&mut self, id: &str) -> Option<Machine> {
        self.machines.remove(id)
    }

    /// Marks a machine started or not; false if there is no machine with that id.
    pub fn set_started(&mut self, id: &str, started: bool) -> bool {
        match self.machines.get_mut(id) {
            Some(m) => {
                m.started = started;
                true
            }
            None => false,
        }
    }

    /// Sets the address `_api.internal` answers with (the lab's Machines API), or none.
    pub fn set_api(&mut self, api: Option<Ipv6Addr>) {
        self.api = api;
    }

    /// The machine with this id, if any.
    pub fn machine(&self, id: &str) -> Option<&Machine> {
        self.machines.get(id)
    }

    /// Answers `name`/`qtype` with no knowledge of who asks (nearest = plain order).
    pub fn answer(&self, name: &str, qtype: Qtype) -> Answer {
        self.answer_from(name, qtype, None)
    }

    /// Answers `name`/`qtype` asked by `client`; the client's address only orders
    /// `top<N>.nearest.of.<app>.internal` (its machine's region first).
    pub fn answer_from(&self, name: &str, qtype: Qtype, client: Option<IpAddr>) -> Answer {
        if !is_internal(name) {
            return Answer {
                records: Vec::new(),
                rcode: Rcode::Refused,
            };
        }
        let lower = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let mut labels: Vec<&str> = lower.split('.').collect();
        labels.pop(); // "internal"
        let node = self.resolve(&labels, client);
        let (records, rcode) = match (node, qtype) {
            (Node::Missing, _) => (Vec::new(), Rcode::NxDomain),
            (Node::Hosts(ips), Qtype::Aaaa | Qtype::Any) => {
                (ips.into_iter().map(Data::Aaaa).collect(), Rcode::NoError)
            }
            (Node::Text(txts), Qtype::Txt | Qtype::Any) => {
                (txts.into_iter().map(Data::Txt).collect(), Rcode::NoError)
            }
            (Node::Hosts(_) | Node::Text(_), _) => (Vec::new(), Rcode::NoError),
        };
        Answer { records, rcode }
    }

    /// What the labels before `internal` denote.
    fn resolve(&self, labels: &[&str], client: Option<IpAddr>) -> Node {
        match labels {
            [] => Node::Hosts(Vec::new()),
            ["_apps"] => Node::Text(list_record(self.app_names())),
            ["_instances"] => Node::Text(self.instances(true)),
            ["all", "_instances"] => Node::Text(self.instances(false)),
            ["_api"] => match self.api {
                Some(ip) => Node::Hosts(vec![ip]),
                None => Node::Missing,
            },
            ["_peer"] => Node::Text(Vec::new()),
            [app] => self.app_all(app),
            ["global", app] => self.app_all(app),
            ["vms", app] => self.vms(app, true),
            ["all", "vms", app] => self.vms(app, false),
            ["regions", app] => self.regions(app, true),
            ["all", "regions", app] => self.regions(app, false),
            [id, "vm", app] => self.app_subset(app, |m| m.id.eq_ignore_ascii_case(id)),
            [top, "nearest", "of", app] => self.nearest(top, app, client),
            [group, "process", app] => self.app_subset(app, |m| {
                m.group().is_some_and(|g| g.eq_ignore_ascii_case(group))
            }),
            [value, key, "kv", "_metadata", app] => self.app_subset(app, |m| {
                m.metadata
                    .iter()
                    .any(|(k, v)| k.eq_ignore_ascii_case(key) && v.eq_ignore_ascii_case(value))
            }),
            [region, app] => self.app_subset(app, |m| m.region.eq_ignore_ascii_case(region)),
            _ => Node::Missing,
        }
    }

    /// Machines that are in DNS at all (§8.13: `skip_registration` hides a machine).
    fn visible(&self) -> impl Iterator<Item = &Machine> {
        self.machines.values().filter(|m| !m.skip_registration)
    }

    /// The app by its lowercase DNS label: listed, or owning a visible machine.
    fn app_exists(&self, app: &str) -> bool {
        self.apps.iter().any(|a| a.eq_ignore_ascii_case(app))
            || self.visible().any(|m| m.app.eq_ignore_ascii_case(app))
    }

    /// Visible machines of `app`, in id order.
    fn app_machines<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a Machine> + 'a {
        self.visible()
            .filter(move |m| m.app.eq_ignore_ascii_case(app))
    }

    /// AAAA set of every started machine of `app`; missing unless the app exists.
    fn app_all(&self, app: &str) -> Node {
        if !self.app_exists(app) {
            return Node::Missing;
        }
        hosts_of(self.app_machines(app).collect())
    }

    /// AAAA set of `app`'s started machines matching `pick`; missing unless some machine of the
    /// app matches in any state.
    fn app_subset(&self, app: &str, pick: impl Fn(&Machine) -> bool) -> Node {
        let matching: Vec<&Machine> = self.app_machines(app).filter(|m| pick(m)).collect();
        if matching.is_empty() {
            return Node::Missing;
        }
        hosts_of(matching)
    }

    fn vms(&self, app: &str, started_only: bool) -> Node {
        if !self.app_exists(app) {
            return Node::Missing;
        }
        let items = self
            .app_machines(app)
            .filter(|m| m.started || !started_only)
            .map(|m| format!("{} {}", m.id, m.region));
        Node::Text(list_record(items))
    }

    fn regions(&self, app: &str, started_only: bool) -> Node {
        if !self.app_exists(app) {
            return Node::Missing;
        }
        let regions: BTreeSet<&str> = self
            .app_machines(app)
            .filter(|m| m.started || !started_only)
            .map(|m| m.region.as_str())
            .collect();
        Node::Text(list_record(regions.into_iter().map(str::to_string)))
    }

    fn nearest(&self, top: &str, app: &str, client: Option<IpAddr>) -> Node {
        let n = match top.strip_prefix("top").map(str::parse::<usize>) {
            Some(Ok(n)) if n >= 1 => n,
            _ => return Node::Missing,
        };
        if !self.app_exists(app) {
            return Node::Missing;
        }
        let home = client.and_then(|ip| {
            let ip = match ip {
                IpAddr::V6(v6) => v6,
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            };
            self.visible()
                .find(|m| m.private_ip == ip)
                .map(|m| m.region.clone())
        });
        let mut started: Vec<&Machine> = self.app_machines(app).filter(|m| m.started).collect();
        started.sort_by(|a, b| {
            let away = |m: &Machine| home.as_deref() != Some(m.region.as_str());
            (away(a), &a.region, &a.id).cmp(&(away(b), &b.region, &b.id))
        });
        Node::Hosts(started.iter().take(n).map(|m| m.private_ip).collect())
    }

    /// App names for `_apps.internal`: the listed apps plus any app of a visible machine.
    fn app_names(&self) -> impl Iterator<Item = String> + '_ {
        let names: BTreeSet<&str> = self
            .apps
            .iter()
            .map(String::as_str)
            .chain(self.visible().map(|m| m.app.as_str()))
            .collect();
        names.into_iter().map(str::to_string)
    }

    fn instances(&self, started_only: bool) -> Vec<Vec<String>> {
        let mut machines: Vec<&Machine> = self
            .visible()
            .filter(|m| m.started || !started_only)
            .collect();
        machines.sort_by(|a, b| (&a.app, &a.id).cmp(&(&b.app, &b.id)));
        machines
            .iter()
            .map(|m| {
                character_strings(&format!(
                    "instance={},app={},ip={},region={}",
                    m.id, m.app, m.private_ip, m.region
                ))
            })
            .collect()
    }
}

/// AAAA set of the started ones of `machines`.
fn hosts_of(machines: Vec<&Machine>) -> Node {
    Node::Hosts(
        machines
            .iter()
            .filter(|m| m.started)
            .map(|m| m.private_ip)
            .collect(),
    )
}

/// One TXT record holding the comma-separated `items`, or none for an empty list.
fn list_record(items: impl Iterator<Item = String>) -> Vec<Vec<String>> {
    let text = items.collect::<Vec<_>>().join(",");
    if text.is_empty() {
        Vec::new()
    } else {
        vec![character_strings(&text)]
    }
}

/// Splits `text` into character-strings of at most 255 bytes, on char boundaries.
fn character_strings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if current.len() + c.len_utf8() > TXT_STRING_MAX {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfdaa, 0, 1, 0xa7b, 0, 0, n, 2)
    }

    fn machine(id: &str, app: &str, region: &str, n: u16, started: bool) -> Machine {
        Machine {
            id: id.to_string(),
            app: app.to_string(),
            region: region.to_string(),
            private_ip: ip(n),
            started,
            metadata: BTreeMap::new(),
            process_group: None,
            skip_registration: false,
        }
    }

    /// demo-cp: m1 sjc started (role=server, group app), m2 sjc stopped (role=server),
    /// m3 ams started (role=agent, group worker); demo-w: w1 ord stopped; empty-app: none.
    fn directory() -> Directory {
        let mut d = Directory::new();
        let mut m1 = machine("m1", "demo-cp", "sjc", 1, true);
        m1.metadata.insert("role".into(), "server".into());
        m1.process_group = Some("app".into());
        let mut m2 = machine("m2", "demo-cp", "sjc", 2, false);
        m2.metadata.insert("role".into(), "server".into());
        m2.process_group = Some("app".into());
        let mut m3 = machine("m3", "demo-cp", "ams", 3, true);
        m3.metadata.insert("role".into(), "agent".into());
        m3.process_group = Some("worker".into());
        d.upsert_machine(m1);
        d.upsert_machine(m2);
        d.upsert_machine(m3);
        d.upsert_machine(machine("w1", "demo-w", "ord", 11, false));
        d.add_app("empty-app");
        d
    }

    fn aaaa(d: &Directory, name: &str) -> Answer {
        d.answer(name, Qtype::Aaaa)
    }

    fn hosts(ns: &[u16]) -> Answer {
        Answer {
            records: ns.iter().map(|&n| Data::Aaaa(ip(n))).collect(),
            rcode: Rcode::NoError,
        }
    }

    fn txt(records: &[&str]) -> Answer {
        Answer {
            records: records
                .iter()
                .map(|r| Data::Txt(vec![(*r).to_string()]))
                .collect(),
            rcode: Rcode::NoError,
        }
    }

    fn nodata() -> Answer {
        Answer {
            records: Vec::new(),
            rcode: Rcode::NoError,
        }
    }

    fn nxdomain() -> Answer {
        Answer {
            records: Vec::new(),
            rcode: Rcode::NxDomain,
        }
    }

    #[test]
    fn app_name_lists_started_machines_only() {
        let d = directory();
        assert_eq!(aaaa(&d, "demo-cp.internal"), hosts(&[1, 3]));
        assert_eq!(aaaa(&d, "global.demo-cp.internal."), hosts(&[1, 3]));
    }

    #[test]
    fn app_without_started_machines_is_nodata_and_unknown_app_nxdomain() {
        let d = directory();
        assert_eq!(aaaa(&d, "demo-w.internal"), nodata());
        assert_eq!(aaaa(&d, "empty-app.internal"), nodata());
        assert_eq!(aaaa(&d, "nope.internal"), nxdomain());
        assert_eq!(aaaa(&d, "global.nope.internal"), nxdomain());
    }

    #[test]
    fn region_name_filters_by_region() {
        let d = directory();
        assert_eq!(aaaa(&d, "sjc.demo-cp.internal"), hosts(&[1]));
        assert_eq!(aaaa(&d, "ams.demo-cp.internal"), hosts(&[3]));
        assert_eq!(aaaa(&d, "ord.demo-w.internal"), nodata());
        assert_eq!(aaaa(&d, "fra.demo-cp.internal"), nxdomain());
        assert_eq!(aaaa(&d, "fra.empty-app.internal"), nxdomain());
    }

    #[test]
    fn vm_name_answers_one_started_machine() {
        let d = directory();
        assert_eq!(aaaa(&d, "m3.vm.demo-cp.internal"), hosts(&[3]));
        assert_eq!(aaaa(&d, "m2.vm.demo-cp.internal"), nodata());
        assert_eq!(aaaa(&d, "w1.vm.demo-cp.internal"), nxdomain());
        assert_eq!(aaaa(&d, "zz.vm.demo-cp.internal"), nxdomain());
    }

    #[test]
    fn nearest_takes_n_started_machines_in_order() {
        let d = directory();
        // No client: region then id order (ams before sjc).
        assert_eq!(aaaa(&d, "top1.nearest.of.demo-cp.internal"), hosts(&[3]));
        assert_eq!(aaaa(&d, "top2.nearest.of.demo-cp.internal"), hosts(&[3, 1]));
        assert_eq!(aaaa(&d, "top9.nearest.of.demo-cp.internal"), hosts(&[3, 1]));
        assert_eq!(aaaa(&d, "top1.nearest.of.demo-w.internal"), nodata());
        assert_eq!(aaaa(&d, "top0.nearest.of.demo-cp.internal"), nxdomain());
        assert_eq!(aaaa(&d, "topx.nearest.of.demo-cp.internal"), nxdomain());
        assert_eq!(aaaa(&d, "top1.nearest.of.nope.internal"), nxdomain());
    }

    #[test]
    fn nearest_puts_the_asking_machines_region_first() {
        let d = directory();
        // m2 (sjc, stopped) asks: sjc's started m1 comes before ams's m3.
        let from_sjc = Some(IpAddr::V6(ip(2)));
        let a = d.answer_from("top1.nearest.of.demo-cp.internal", Qtype::Aaaa, from_sjc);
        assert_eq!(a, hosts(&[1]));
        let from_ams = Some(IpAddr::V6(ip(3)));
        let a = d.answer_from("top2.nearest.of.demo-cp.internal", Qtype::Aaaa, from_ams);
        assert_eq!(a, hosts(&[3, 1]));
    }

    #[test]
    fn process_group_name_filters_by_group() {
        let d = directory();
        assert_eq!(aaaa(&d, "app.process.demo-cp.internal"), hosts(&[1]));
        assert_eq!(aaaa(&d, "worker.process.demo-cp.internal"), hosts(&[3]));
        assert_eq!(aaaa(&d, "db.process.demo-cp.internal"), nxdomain());
    }

    #[test]
    fn process_group_falls_back_to_fly_process_group_metadata() {
        let mut d = directory();
        let mut m = machine("m4", "demo-cp", "sjc", 4, true);
        m.metadata.insert("fly_process_group".into(), "db".into());
        d.upsert_machine(m);
        assert_eq!(aaaa(&d, "db.process.demo-cp.internal"), hosts(&[4]));
    }

    #[test]
    fn from_parts_equals_building_step_by_step() {
        let d = directory();
        let machines: Vec<Machine> = ["m1", "m2", "m3", "w1"]
            .iter()
            .filter_map(|id| d.machine(id).cloned())
            .collect();
        let rebuilt = Directory::from_parts(["empty-app".to_string()], machines);
        assert_eq!(rebuilt, d);
    }

    #[test]
    fn metadata_name_filters_by_key_and_value() {
        let d = directory();
        assert_eq!(
            aaaa(&d, "server.role.kv._metadata.demo-cp.internal"),
            hosts(&[1])
        );
        assert_eq!(
            aaaa(&d, "agent.role.kv._metadata.demo-cp.internal"),
            hosts(&[3])
        );
        assert_eq!(aaaa(&d, "x.role.kv._metadata.demo-cp.internal"), nxdomain());
        assert_eq!(
            aaaa(&d, "server.tier.kv._metadata.demo-cp.internal"),
            nxdomain()
        );
    }

    #[test]
    fn vms_txt_lists_id_and_region() {
        let d = directory();
        let q = |n: &str| d.answer(n, Qtype::Txt);
        assert_eq!(q("vms.demo-cp.internal"), txt(&["m1 sjc,m3 ams"]));
        assert_eq!(
            q("all.vms.demo-cp.internal"),
            txt(&["m1 sjc,m2 sjc,m3 ams"])
        );
        assert_eq!(q("vms.demo-w.internal"), nodata());
        assert_eq!(q("all.vms.demo-w.internal"), txt(&["w1 ord"]));
        assert_eq!(q("vms.nope.internal"), nxdomain());
    }

    #[test]
    fn regions_txt_lists_sorted_unique_regions() {
        let d = directory();
        let q = |n: &str| d.answer(n, Qtype::Txt);
        assert_eq!(q("regions.demo-cp.internal"), txt(&["ams,sjc"]));
        assert_eq!(q("regions.demo-w.internal"), nodata());
        assert_eq!(q("all.regions.demo-w.internal"), txt(&["ord"]));
    }

    #[test]
    fn apps_txt_lists_every_app() {
        let d = directory();
        assert_eq!(
            d.answer("_apps.internal", Qtype::Txt),
            txt(&["demo-cp,demo-w,empty-app"])
        );
    }

    #[test]
    fn instances_txt_has_one_record_per_machine() {
        let d = directory();
        let item = |id: &str, app: &str, n: u16, r: &str| {
            format!("instance={id},app={app},ip={},region={r}", ip(n))
        };
        let started = [
            item("m1", "demo-cp", 1, "sjc"),
            item("m3", "demo-cp", 3, "ams"),
        ];
        let started: Vec<&str> = started.iter().map(String::as_str).collect();
        assert_eq!(d.answer("_instances.internal", Qtype::Txt), txt(&started));
        let all = d.answer("all._instances.internal", Qtype::Txt);
        assert_eq!(all.records.len(), 4);
        assert_eq!(
            all.records[3],
            Data::Txt(vec![item("w1", "demo-w", 11, "ord")])
        );
    }

    #[test]
    fn names_match_case_insensitively() {
        let d = directory();
        assert_eq!(aaaa(&d, "M1.VM.Demo-CP.Internal."), hosts(&[1]));
        assert_eq!(
            aaaa(&d, "SERVER.Role.KV._METADATA.demo-cp.INTERNAL"),
            hosts(&[1])
        );
        assert_eq!(aaaa(&d, "Top1.Nearest.Of.DEMO-CP.internal"), hosts(&[3]));
        assert_eq!(
            d.answer("VMS.demo-cp.internal", Qtype::Txt),
            txt(&["m1 sjc,m3 ams"])
        );
    }

    #[test]
    fn wrong_record_type_is_nodata() {
        let d = directory();
        assert_eq!(d.answer("vms.demo-cp.internal", Qtype::Aaaa), nodata());
        assert_eq!(d.answer("_apps.internal", Qtype::Aaaa), nodata());
        assert_eq!(d.answer("demo-cp.internal", Qtype::Txt), nodata());
        assert_eq!(d.answer("demo-cp.internal", Qtype::A), nodata());
        assert_eq!(d.answer("demo-cp.internal", Qtype::Other(33)), nodata());
        assert_eq!(d.answer("demo-cp.internal", Qtype::Any), hosts(&[1, 3]));
        assert_eq!(d.answer("nope.internal", Qtype::Txt), nxdomain());
    }

    #[test]
    fn unknown_internal_names_are_nxdomain() {
        let d = directory();
        for name in [
            "a.b.c.d.e.f.internal",
            "x.y.demo-cp.internal",
            "peer1._peer.internal",
            "_api.internal",
            "demo-cp..internal",
        ] {
            assert_eq!(aaaa(&d, name), nxdomain(), "{name}");
        }
        assert_eq!(d.answer("_peer.internal", Qtype::Txt), nodata());
        assert_eq!(aaaa(&d, "internal."), nodata());
    }

    #[test]
    fn names_outside_internal_are_refused() {
        let d = directory();
        for name in ["example.com", "example.com.", "internal.example.com", "."] {
            assert_eq!(aaaa(&d, name).rcode, Rcode::Refused, "{name}");
            assert!(!is_internal(name), "{name}");
        }
        assert!(is_internal("x.INTERNAL."));
    }

    #[test]
    fn api_name_answers_when_set() {
        let mut d = directory();
        let api = Ipv6Addr::new(0xfdaa, 0, 0, 0, 0, 0, 0, 1);
        d.set_api(Some(api));
        assert_eq!(aaaa(&d, "_api.internal").records, vec![Data::Aaaa(api)]);
    }

    #[test]
    fn skip_registration_hides_a_machine_everywhere() {
        let mut d = directory();
        let mut hidden = machine("h1", "demo-cp", "fra", 9, true);
        hidden.skip_registration = true;
        d.upsert_machine(hidden);
        assert_eq!(aaaa(&d, "demo-cp.internal"), hosts(&[1, 3]));
        assert_eq!(aaaa(&d, "h1.vm.demo-cp.internal"), nxdomain());
        assert_eq!(aaaa(&d, "fra.demo-cp.internal"), nxdomain());
        assert_eq!(
            d.answer("all._instances.internal", Qtype::Txt)
                .records
                .len(),
            4
        );
    }

    #[test]
    fn stopping_and_removing_machines_updates_answers() {
        let mut d = directory();
        assert!(d.set_started("m1", false));
        assert_eq!(aaaa(&d, "demo-cp.internal"), hosts(&[3]));
        assert!(d.set_started("m2", true));
        assert_eq!(aaaa(&d, "sjc.demo-cp.internal"), hosts(&[2]));
        assert!(d.remove_machine("m3").is_some());
        assert_eq!(aaaa(&d, "m3.vm.demo-cp.internal"), nxdomain());
        assert!(!d.set_started("m3", true));
        d.remove_app("demo-cp");
        assert_eq!(aaaa(&d, "demo-cp.internal"), nxdomain());
        assert_eq!(
            d.answer("_apps.internal", Qtype::Txt),
            txt(&["demo-w,empty-app"])
        );
    }

    #[test]
    fn long_lists_split_into_255_byte_strings() {
        let mut d = Directory::new();
        for i in 0..40u16 {
            d.upsert_machine(machine(&format!("machine{i:03}"), "big", "sjc", i, true));
        }
        let a = d.answer("vms.big.internal", Qtype::Txt);
        let [Data::Txt(strings)] = a.records.as_slice() else {
            panic!("one TXT record expected: {a:?}");
        };
        assert!(strings.len() > 1);
        assert!(strings.iter().all(|s| s.len() <= 255));
        let joined = strings.concat();
        assert_eq!(joined.split(',').count(), 40);
        assert!(joined.starts_with("machine000 sjc,machine001 sjc"));
    }
}
