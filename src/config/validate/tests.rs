//! Unit tests of every validation rule: each bad value names its key and line and says what
//! to write instead.
use super::*;
use crate::config::{parse_shell, CpuKind};

const FILE: &str = "clusters/demo/config";

/// A valid config, one key per line, in this order (line = index + 1).
const BASE: &[(&str, &str)] = &[
    ("CLUSTER_NAME", "demo"),
    ("CLUSTER_CIDR", "\"fd00:42::/56,10.42.0.0/16\""),
    ("SERVICE_CIDR", "\"fd00:43::/112,10.43.0.0/16\""),
    ("CLUSTER_DNS", "\"fd00:43::a,10.43.0.10\""),
    ("REGION", "sjc"),
    ("NODE_GROUP_SIZE", "3"),
    ("VOLUME_SIZE", "10"),
    ("VOLUME_NAME", "demo_data"),
    ("WORKER_VM_SIZE", "shared-cpu-1x"),
    ("WORKER_VM_MEMORY", "1024"),
    ("CP_VM_SIZE", "performance-2x"),
    ("CP_VM_MEMORY", "8192"),
    ("K3S_VERSION", "\"v1.33.7+k3s1\""),
    ("ORG_NAME", "personal"),
];

fn text_with(changes: &[(&str, Option<&str>)]) -> String {
    let mut out = String::new();
    for (key, value) in BASE {
        match changes.iter().find(|(k, _)| k == key) {
            Some((_, Some(v))) => out.push_str(&format!("{key}={v}\n")),
            Some((_, None)) => out.push('\n'),
            None => out.push_str(&format!("{key}={value}\n")),
        }
    }
    for (key, value) in changes {
        if let (false, Some(v)) = (BASE.iter().any(|(k, _)| k == key), value) {
            out.push_str(&format!("{key}={v}\n"));
        }
    }
    out
}

fn parse(text: &str) -> Result<Config, Diagnostics> {
    parse_shell(text, Path::new(FILE))
}

fn line_of(key: &str) -> usize {
    BASE.iter()
        .position(|(k, _)| *k == key)
        .expect("key in BASE")
        + 1
}

/// Set `key=value` in a valid config and return the one problem it causes, checking that
/// it names the key and the key's line.
fn bad(key: &str, value: &str) -> Diagnostic {
    let diags = parse(&text_with(&[(key, Some(value))])).expect_err("must be rejected");
    let all: Vec<_> = diags.iter().cloned().collect();
    assert_eq!(all.len(), 1, "{key}={value}: {diags}");
    let d = all[0].clone();
    assert_eq!(d.key.as_deref(), Some(key), "{d}");
    let line = BASE
        .iter()
        .position(|(k, _)| *k == key)
        .map_or(BASE.len() + 1, |i| i + 1);
    assert_eq!(d.line, Some(line), "{d}");
    assert!(
        d.to_string()
            .starts_with(&format!("{FILE}:{line}: {key}: ")),
        "{d}"
    );
    assert!(d.help.is_some(), "{d}");
    d
}

/// Apply `changes` to a valid config and return the one problem they cause, which must
/// name `key` on its line.
fn bad_with(changes: &[(&str, Option<&str>)], key: &str) -> Diagnostic {
    let diags = parse(&text_with(changes)).expect_err("must be rejected");
    let all: Vec<_> = diags.iter().cloned().collect();
    assert_eq!(all.len(), 1, "{changes:?}: {diags}");
    assert_eq!(all[0].key.as_deref(), Some(key), "{diags}");
    assert_eq!(all[0].line, Some(line_of(key)), "{diags}");
    all[0].clone()
}

fn good(key: &str, value: &str) -> Config {
    parse(&text_with(&[(key, Some(value))]))
        .unwrap_or_else(|e| panic!("{key}={value} should be accepted: {e}"))
}

#[test]
fn valid_config_resolves_every_field_with_defaults() {
    let c = parse(&text_with(&[])).expect("valid");
    assert_eq!(c.source, Path::new(FILE));
    assert_eq!(c.cluster_name, "demo");
    assert_eq!(c.cluster_cidr.len(), 2);
    assert_eq!(c.cluster_dns[1].to_string(), "10.43.0.10");
    assert_eq!(c.node_group_size, 3);
    assert_eq!(c.volume_size_gb, 10);
    assert_eq!(
        c.cp_vm,
        VmSpec {
            preset: "performance-2x".into(),
            cpu_kind: CpuKind::Performance,
            cpus: 2,
            memory_mb: 8192
        }
    );
    assert_eq!(c.worker_vm.cpu_kind, CpuKind::Shared);
    assert_eq!(c.flannel_backend, FlannelBackend::WireguardNative);
    assert_eq!(c.image, None, "IMAGE has no default");
}

#[test]
fn missing_required_key_is_named_with_an_example() {
    let diags = parse(&text_with(&[("REGION", None)])).expect_err("missing");
    let d: Vec<_> = diags.iter().collect();
    assert_eq!(d.len(), 1, "{diags}");
    assert_eq!(d[0].key.as_deref(), Some("REGION"));
    assert_eq!(d[0].line, None);
    assert!(
        d[0].to_string()
            .contains("REGION: required but not set (help: add a line REGION=sjc)"),
        "{}",
        d[0]
    );
}

#[test]
fn unknown_key_suggests_the_closest_known_key() {
    let d = bad("FLANEL_BACKEND", "vxlan");
    assert!(d.message.contains("unknown key"), "{d}");
    assert!(
        d.help
            .as_deref()
            .unwrap_or("")
            .contains("did you mean FLANNEL_BACKEND?"),
        "{d}"
    );
    let d = bad("ZZZZZZZZ", "1");
    assert!(
        d.help.as_deref().unwrap_or("").contains("known keys are"),
        "{d}"
    );
}

#[test]
fn cluster_name_must_be_a_fly_app_name() {
    assert!(bad("CLUSTER_NAME", "Demo").message.contains("'D'"));
    assert!(bad("CLUSTER_NAME", "demo_1")
        .help
        .unwrap_or_default()
        .contains("CLUSTER_NAME=demo-1"));
    assert!(bad("CLUSTER_NAME", "1demo")
        .message
        .contains("start with a letter"));
    assert!(bad("CLUSTER_NAME", "demo-")
        .message
        .contains("ends with a dash"));
    assert!(bad("CLUSTER_NAME", "''").message.contains("empty"));
    let long = "a".repeat(MAX_CLUSTER_NAME_LEN + 1);
    let d = bad("CLUSTER_NAME", &long);
    assert!(d
        .help
        .clone()
        .unwrap_or_default()
        .contains(&format!("at most {MAX_CLUSTER_NAME_LEN} characters")));
    let max = "a".repeat(MAX_CLUSTER_NAME_LEN);
    let c = good("CLUSTER_NAME", &max);
    assert!(c.node_group_app(&"g".repeat(MAX_NODE_GROUP_LEN)).len() <= MAX_APP_NAME_LEN);
}

#[test]
fn cidr_lists_must_be_ipv6_first() {
    let d = bad("CLUSTER_CIDR", "\"10.0.0.0/16,fd00:42::/56\"");
    assert!(d.message.contains("lists IPv4 first"), "{d}");
    assert!(d
        .help
        .clone()
        .unwrap_or_default()
        .contains("\"fd00:42::/56,10.0.0.0/16\""));
    let d = bad("SERVICE_CIDR", "10.43.0.0/16");
    assert_eq!(
        d.to_string(),
        "clusters/demo/config:3: SERVICE_CIDR: \"10.43.0.0/16\" lists IPv4 first (help: the \
         cluster is IPv6-first: put an IPv6 range first, e.g. \"fd00:43::/112,10.43.0.0/16\")"
    );
    let d = bad("CLUSTER_CIDR", "\"fd00:42::/56,fd00:44::/56\"");
    assert!(d.message.contains("2 ranges"), "{d}");
    let d = bad("CLUSTER_CIDR", "\"fd00:42::/56,10.42.0.0/16,10.44.0.0/16\"");
    assert!(d.message.contains("3 ranges"), "{d}");
}

#[test]
fn cidr_must_parse_and_have_no_host_bits() {
    assert!(bad("CLUSTER_CIDR", "banana")
        .message
        .contains("not a CIDR range"));
    assert!(bad("CLUSTER_CIDR", "fd00:42::1")
        .message
        .contains("no /prefix"));
    let d = bad("CLUSTER_CIDR", "\"fd00:42::1/56,10.42.0.0/16\"");
    assert!(d.message.contains("host bits"), "{d}");
    assert!(d.help.clone().unwrap_or_default().contains("fd00:42::/56"));
}

#[test]
fn cidr_sizes_follow_the_kubernetes_limits() {
    assert!(bad("SERVICE_CIDR", "\"fd00:43::/108,10.43.0.0/16\"")
        .help
        .unwrap_or_default()
        .contains("/112"));
    let d = bad_with(
        &[
            ("SERVICE_CIDR", Some("\"fd00:43::/112,11.0.0.0/8\"")),
            ("CLUSTER_DNS", Some("\"fd00:43::a,11.0.0.10\"")),
        ],
        "SERVICE_CIDR",
    );
    assert!(d.help.clone().unwrap_or_default().contains("/12"), "{d}");
    assert!(bad("CLUSTER_CIDR", "\"fd00::/40,10.42.0.0/16\"")
        .help
        .unwrap_or_default()
        .contains("/48"));
    assert!(bad("CLUSTER_CIDR", "\"fd00:42::/56,12.0.0.0/6\"")
        .help
        .unwrap_or_default()
        .contains("/8"));
    assert!(bad("CLUSTER_CIDR", "\"fd00:42::/96,10.42.0.0/16\"")
        .message
        .contains("too small"));
    good("CLUSTER_CIDR", "\"fd00::/48,10.0.0.0/8\"");
}

#[test]
fn ranges_must_avoid_fly_6pn() {
    let d = bad("CLUSTER_CIDR", "\"fdaa:1::/56,10.42.0.0/16\"");
    assert!(d.message.contains("fdaa::/16"), "{d}");
}

#[test]
fn cluster_and_service_families_must_match() {
    let d = bad_with(
        &[
            ("SERVICE_CIDR", Some("fd00:43::/112")),
            ("CLUSTER_DNS", Some("fd00:43::a")),
        ],
        "SERVICE_CIDR",
    );
    assert!(d.message.contains("CLUSTER_CIDR (line 2)"), "{d}");
}

#[test]
fn service_range_must_not_contain_or_equal_the_cluster_range() {
    let d = bad_with(
        &[
            ("SERVICE_CIDR", Some("\"fd00:43::/112,10.42.0.0/16\"")),
            ("CLUSTER_DNS", Some("\"fd00:43::a,10.42.0.10\"")),
        ],
        "SERVICE_CIDR",
    );
    assert!(
        d.message
            .contains("overlaps CLUSTER_CIDR range 10.42.0.0/16"),
        "{d}"
    );
    let d = bad_with(
        &[
            ("SERVICE_CIDR", Some("\"fd00:42::/112,10.40.0.0/13\"")),
            ("CLUSTER_DNS", Some("\"fd00:42::a,10.40.0.10\"")),
        ],
        "SERVICE_CIDR",
    );
    // The IPv6 service range inside the cluster range is tolerated; the IPv4 one that
    // contains the cluster range is not.
    assert!(d.message.contains("10.40.0.0/13 overlaps"), "{d}");
}

#[test]
fn service_range_inside_the_cluster_range_is_allowed_as_in_the_seed_config() {
    let text = text_with(&[
        ("CLUSTER_CIDR", Some("\"dead:beef:1:0::/56,10.1.0.0/16\"")),
        ("SERVICE_CIDR", Some("\"dead:beef:1:1::/112,10.2.0.0/16\"")),
        ("CLUSTER_DNS", Some("\"dead:beef:1:1::10\"")),
    ]);
    let c = parse(&text).expect("seed ranges are valid");
    assert_eq!(c.cluster_dns.len(), 1);
}

#[test]
fn cluster_dns_must_sit_inside_the_matching_service_range() {
    let d = bad("CLUSTER_DNS", "\"fd00:44::a\"");
    assert!(
        d.message
            .contains("outside SERVICE_CIDR range fd00:43::/112"),
        "{d}"
    );
    assert!(d.help.clone().unwrap_or_default().contains("fd00:43::a"));
    let d = bad("CLUSTER_DNS", "\"fd00:43::\"");
    assert!(d.message.contains("network address"), "{d}");
    let d = bad("CLUSTER_DNS", "\"10.43.0.10,fd00:43::a\"");
    assert!(d.message.contains("lists IPv4 first"), "{d}");
    let d = bad("CLUSTER_DNS", "10.43.0.10");
    assert!(
        d.message.contains("is IPv4 but SERVICE_CIDR range 1"),
        "{d}"
    );
    let d = bad("CLUSTER_DNS", "\"fd00:43::a,10.43.0.10,10.43.0.11\"");
    assert!(d.message.contains("3 addresses"), "{d}");
    assert!(bad("CLUSTER_DNS", "dns")
        .message
        .contains("not an IP address"));
    let d = bad("CLUSTER_DNS", "\"fd00:43::a,10.43.255.255\"");
    assert!(d.message.contains("broadcast"), "{d}");
    good("CLUSTER_DNS", "fd00:43::a");
}

#[test]
fn cluster_dns_needs_a_service_range_per_address() {
    let text = text_with(&[
        ("CLUSTER_CIDR", Some("fd00:42::/56")),
        ("SERVICE_CIDR", Some("fd00:43::/112")),
    ]);
    let diags = parse(&text).expect_err("two addresses, one range");
    let d: Vec<_> = diags.iter().collect();
    assert_eq!(d.len(), 1, "{diags}");
    assert_eq!(d[0].line, Some(line_of("CLUSTER_DNS")));
    assert!(
        d[0].message.contains("no matching SERVICE_CIDR range"),
        "{}",
        d[0]
    );
}

#[test]
fn region_must_be_a_fly_region() {
    let d = bad("REGION", "sjx");
    assert!(
        d.help
            .clone()
            .unwrap_or_default()
            .contains("did you mean sjc?"),
        "{d}"
    );
    let d = bad("REGION", "mars");
    assert!(
        d.help.clone().unwrap_or_default().contains("ams arn"),
        "{d}"
    );
}

#[test]
fn vm_size_must_be_a_fly_preset() {
    let d = bad("CP_VM_SIZE", "performance-3x");
    assert!(
        d.help
            .clone()
            .unwrap_or_default()
            .contains("did you mean performance-"),
        "{d}"
    );
    let c = parse(&text_with(&[
        ("CP_VM_SIZE", Some("a100-40gb")),
        ("CP_VM_MEMORY", Some("32768")),
    ]))
    .expect("gpu preset");
    assert_eq!(c.cp_vm.cpus, 8);
}

#[test]
fn vm_memory_must_fit_the_preset_and_its_step() {
    let d = bad("WORKER_VM_MEMORY", "4096");
    assert!(
        d.help.clone().unwrap_or_default().contains("256 to 2048"),
        "{d}"
    );
    let d = bad("WORKER_VM_MEMORY", "1000");
    assert!(d.message.contains("multiple of 256"), "{d}");
    let d = bad("CP_VM_MEMORY", "8448");
    assert!(d.message.contains("multiple of 1024"), "{d}");
    let d = bad("CP_VM_MEMORY", "8G");
    assert!(d.message.contains("not a whole number"), "{d}");
    assert_eq!(good("CP_VM_MEMORY", "9216").cp_vm.memory_mb, 9216);
}

#[test]
fn volume_and_group_numbers_are_bounded_integers() {
    assert!(bad("VOLUME_SIZE", "0")
        .help
        .unwrap_or_default()
        .contains("1 to 500"));
    assert!(bad("VOLUME_SIZE", "501").message.contains("out of range"));
    assert!(bad("VOLUME_SIZE", "-1")
        .message
        .contains("not a whole number"));
    assert!(bad("VOLUME_SIZE", "10GB")
        .message
        .contains("not a whole number"));
    assert!(bad("NODE_GROUP_SIZE", "0")
        .help
        .unwrap_or_default()
        .contains("1 to 1000"));
    assert!(bad("NODE_GROUP_SIZE", "1001")
        .message
        .contains("out of range"));
    assert!(bad("NODE_GROUP_SIZE", "99999999999")
        .message
        .contains("not a whole number"));
    assert_eq!(good("VOLUME_SIZE", "500").volume_size_gb, 500);
}

#[test]
fn a_node_group_must_fit_the_pod_ranges_of_cluster_cidr() {
    // The base CLUSTER_CIDR is fd00:42::/56,10.42.0.0/16: 256 node ranges in each family.
    assert_eq!(good("NODE_GROUP_SIZE", "253").node_group_size, 253);
    let d = bad("NODE_GROUP_SIZE", "254");
    assert!(
        d.message.contains(
            "254 workers and 3 servers need 257 pod ranges, but CLUSTER_CIDR fd00:42::/56 (line"
        ) && d.message.contains("holds 256 (one /64 per node)"),
        "{d}"
    );
    assert!(d.help.unwrap_or_default().contains("at most 253 workers"));
    // A /48 and a /15 hold 65536 and 512: 500 workers fit.
    let c = parse(&text_with(&[
        ("NODE_GROUP_SIZE", Some("500")),
        ("CLUSTER_CIDR", Some("\"fd00:42::/48,10.42.0.0/15\"")),
        ("SERVICE_CIDR", Some("\"fd00:43::/112,10.44.0.0/16\"")),
        ("CLUSTER_DNS", Some("\"fd00:43::a,10.44.0.10\"")),
    ]))
    .unwrap_or_else(|e| panic!("500 workers in a /48 and a /15: {e}"));
    assert_eq!(c.node_group_size, 500);
    // Only the IPv4 range too small: named with its own size.
    let d = bad_with(
        &[
            ("NODE_GROUP_SIZE", Some("300")),
            ("CLUSTER_CIDR", Some("\"fd00:42::/48,10.42.0.0/16\"")),
        ],
        "NODE_GROUP_SIZE",
    );
    assert!(d.message.contains("CLUSTER_CIDR 10.42.0.0/16"), "{d}");
}

#[test]
fn volume_name_uses_letters_digits_and_underscores() {
    let d = bad("VOLUME_NAME", "demo-data");
    assert!(
        d.help
            .clone()
            .unwrap_or_default()
            .contains("VOLUME_NAME=demo_data"),
        "{d}"
    );
    assert!(bad("VOLUME_NAME", &"v".repeat(31))
        .message
        .contains("31 characters"));
    assert!(bad("VOLUME_NAME", "''").message.contains("empty"));
    good("VOLUME_NAME", &"v".repeat(30));
}

#[test]
fn k3s_version_must_be_a_release_tag() {
    for ok in ["v1.24.15+k3s1", "v1.33.7-rc4+k3s1", "v1.34.3+k3s12"] {
        assert!(is_k3s_version(ok), "{ok}");
    }
    for no in [
        "1.24.15+k3s1",
        "v1.24+k3s1",
        "v1.24.15",
        "v1.24.15+k3s",
        "v1.24.15-+k3s1",
        "v1.24.x+k3s1",
    ] {
        assert!(!is_k3s_version(no), "{no}");
    }
    assert!(bad("K3S_VERSION", "latest")
        .message
        .contains("not a k3s release tag"));
}

#[test]
fn org_name_must_be_a_slug() {
    assert!(bad("ORG_NAME", "\"My Org\"")
        .message
        .contains("not a Fly organization slug"));
    assert!(bad("ORG_NAME", "''").message.contains("empty"));
}

#[test]
fn optional_keys_are_checked_when_present() {
    let d = bad("FLANNEL_BACKEND", "wireguard");
    assert!(
        d.help
            .clone()
            .unwrap_or_default()
            .contains("wireguard-native"),
        "{d}"
    );
    assert_eq!(
        good("FLANNEL_BACKEND", "none").flannel_backend,
        FlannelBackend::None
    );
    assert!(bad("IMAGE", "\"a b\"").message.contains("whitespace"));
    assert!(bad("IMAGE", "''").message.contains("empty"));
    assert!(bad("IMAGE", "Not/A:Ref:x")
        .message
        .contains("not an image reference"));
    assert_eq!(
        good("IMAGE", "lab/fks-node").image.as_deref(),
        Some("lab/fks-node")
    );
}

#[test]
fn all_problems_are_reported_at_once_in_line_order() {
    let text = text_with(&[
        ("CLUSTER_NAME", Some("Bad_Name")),
        ("CLUSTER_CIDR", Some("\"10.42.0.0/16,fd00:42::/56\"")),
        ("REGION", None),
        ("VOLUME_SIZE", Some("$(touch /tmp/fks-config-test)")),
        ("VOLUME_NAME", Some("bad-name")),
        ("CP_VM_MEMORY", Some("100")),
        ("K3S_VERSION", Some("1.2")),
        ("BOGUS", Some("1")),
    ]);
    let diags = parse(&text).expect_err("many problems");
    let keys: Vec<_> = diags
        .iter()
        .map(|d| (d.key.as_deref().unwrap_or(""), d.line))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("CLUSTER_NAME", Some(1)),
            ("CLUSTER_CIDR", Some(2)),
            ("VOLUME_SIZE", Some(7)),
            ("VOLUME_NAME", Some(8)),
            ("CP_VM_MEMORY", Some(12)),
            ("K3S_VERSION", Some(13)),
            ("BOGUS", Some(15)),
            ("REGION", None),
        ],
        "{diags}"
    );
}

#[test]
fn a_key_with_a_syntax_error_is_not_also_reported_missing() {
    let diags = parse(&text_with(&[("REGION", Some("`hostname`"))])).expect_err("rejected");
    assert_eq!(diags.len(), 1, "{diags}");
}

/// BASE made IPv6-only: one range in each network list.
const IPV6_ONLY: &[(&str, Option<&str>)] = &[
    ("CLUSTER_CIDR", Some("\"fd00:42::/56\"")),
    ("SERVICE_CIDR", Some("\"fd00:43::/112\"")),
    ("CLUSTER_DNS", Some("\"fd00:43::a\"")),
];

#[test]
fn dual_stack_with_vxlan_or_host_gw_is_refused_on_the_flannel_backend_line() {
    for backend in ["vxlan", "host-gw"] {
        let d = bad("FLANNEL_BACKEND", backend);
        let text = d.to_string();
        let line = BASE.len() + 1;
        assert!(
            text.starts_with(&format!("{FILE}:{line}: FLANNEL_BACKEND: {backend} carries IPv4 pods over the nodes' IPv4 addresses, which on Fly reach only their own host")),
            "{text}"
        );
        assert!(text.contains("CLUSTER_CIDR (line 2)"), "{text}");
        let help = d.help.unwrap_or_default();
        for fix in [
            "FLANNEL_BACKEND=wireguard-native",
            "IPv6-only CLUSTER_CIDR=\"fd00:42::/56\"",
            "ALLOW_IPV6_ONLY_POD_TRAFFIC=true",
        ] {
            assert!(help.contains(fix), "{backend}: {help}");
        }
    }
}

#[test]
fn dual_stack_with_vxlan_is_accepted_when_ipv6_only_pod_traffic_is_allowed() {
    for backend in ["vxlan", "host-gw"] {
        let c = parse(&text_with(&[
            ("FLANNEL_BACKEND", Some(backend)),
            (ALLOW_IPV6_ONLY_POD_TRAFFIC, Some("true")),
        ]))
        .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert!(c.allow_ipv6_only_pod_traffic);
        assert!(c.is_dual_stack());
    }
    // `false` is the default spelled out: still refused.
    let diags = parse(&text_with(&[
        ("FLANNEL_BACKEND", Some("vxlan")),
        (ALLOW_IPV6_ONLY_POD_TRAFFIC, Some("false")),
    ]))
    .expect_err("false does not accept");
    assert_eq!(diags.len(), 1, "{diags}");
    assert_eq!(
        diags.iter().next().and_then(|d| d.key.clone()).as_deref(),
        Some("FLANNEL_BACKEND")
    );
}

#[test]
fn ipv6_only_cluster_cidr_is_valid_with_every_backend() {
    for backend in ["vxlan", "host-gw", "wireguard-native", "none"] {
        let mut changes = IPV6_ONLY.to_vec();
        changes.push(("FLANNEL_BACKEND", Some(backend)));
        let c = parse(&text_with(&changes)).unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert!(!c.is_dual_stack());
        assert!(!c.allow_ipv6_only_pod_traffic);
    }
    for backend in ["wireguard-native", "none"] {
        assert_eq!(
            good("FLANNEL_BACKEND", backend).flannel_backend.as_str(),
            backend
        );
    }
}

#[test]
fn allowing_ipv6_only_pod_traffic_where_it_changes_nothing_is_a_problem() {
    // The default wireguard-native carries IPv4 pods over the 6PN.
    let d = bad(ALLOW_IPV6_ONLY_POD_TRAFFIC, "true");
    assert!(
        d.message
            .starts_with("has no effect: FLANNEL_BACKEND wireguard-native"),
        "{d}"
    );
    assert!(d.help.unwrap_or_default().starts_with("delete the line"));
    // An IPv6-only cluster has no IPv4 pods.
    let mut changes = IPV6_ONLY.to_vec();
    changes.extend([
        ("FLANNEL_BACKEND", Some("vxlan")),
        (ALLOW_IPV6_ONLY_POD_TRAFFIC, Some("true")),
    ]);
    let diags = parse(&text_with(&changes)).expect_err("no effect");
    assert_eq!(diags.len(), 1, "{diags}");
    let d = diags.iter().next().expect("one");
    assert_eq!(d.key.as_deref(), Some(ALLOW_IPV6_ONLY_POD_TRAFFIC));
    assert!(d.message.contains("CLUSTER_CIDR is IPv6-only"), "{d}");
    // Not a boolean.
    let d = bad(ALLOW_IPV6_ONLY_POD_TRAFFIC, "yes");
    assert_eq!(d.message, "\"yes\" is not true or false");
}
