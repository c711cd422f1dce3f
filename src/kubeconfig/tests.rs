//! Tests of the kubeconfig rewrite, merge and writer (temp dirs only).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

/// A kubeconfig as k3s writes it (reference/k3s.md §4), with fake but well-formed base64 data.
fn k3s_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkZBS0VDQQotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg==
    server: {server}
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkZBS0VDTElFTlQKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=
    client-key-data: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCkZBS0VLRVkKLS0tLS1FTkQgRUMgUFJJVkFURSBLRVktLS0tLQo=
"
    )
}

const KEY_DATA: &str =
    "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCkZBS0VLRVkKLS0tLS1FTkQgRUMgUFJJVkFURSBLRVktLS0tLQo=";

/// A user's existing ~/.kube/config with entries of its own and fields the model does not name.
const EXISTING: &str = "apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://prod.example.com:6443
    certificate-authority-data: UFJPRENB
    tls-server-name: prod.example.com
- name: demo
  cluster:
    server: https://stale.example.com:6443
contexts:
- name: prod
  context:
    cluster: prod
    user: prod-admin
    namespace: payments
users:
- name: prod-admin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: prod-login
- name: demo
  user:
    token: old-token
current-context: prod
preferences:
  colors: true
extensions:
- name: my-extension
  extension:
    flavour: vanilla
";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn rewrite_replaces_ipv6_loopback_server_and_renames_default() {
    let cfg = rewrite(
        &k3s_yaml("https://[::1]:6443"),
        "demo",
        &cluster_server_url("demo"),
    )
    .expect("rewrite");
    assert_eq!(cfg.clusters.len(), 1);
    assert_eq!(cfg.clusters[0].name, "demo");
    assert_eq!(
        cfg.clusters[0].cluster.server.as_deref(),
        Some("https://demo-cp.internal:6443")
    );
    assert_eq!(cfg.users[0].name, "demo");
    assert_eq!(cfg.contexts[0].name, "demo");
    assert_eq!(cfg.contexts[0].context.cluster.as_deref(), Some("demo"));
    assert_eq!(cfg.contexts[0].context.user.as_deref(), Some("demo"));
    assert_eq!(cfg.current_context.as_deref(), Some("demo"));
    // Credentials and CA are carried over untouched.
    assert!(cfg.clusters[0]
        .cluster
        .extra
        .contains_key("certificate-authority-data"));
    let key = cfg.users[0].user.fields.get("client-key-data");
    assert_eq!(key.and_then(|v| v.as_str()), Some(KEY_DATA));
    let text = cfg.to_yaml().expect("yaml");
    assert!(!text.contains("default"), "{text}");
    assert!(!text.contains("::1"));
}

#[test]
fn rewrite_replaces_ipv4_and_localhost_loopback_servers() {
    for old in ["https://127.0.0.1:6443", "https://localhost:6443"] {
        let cfg = rewrite(&k3s_yaml(old), "lab", "https://lab-cp.internal:6443").expect(old);
        assert_eq!(
            cfg.clusters[0].cluster.server.as_deref(),
            Some("https://lab-cp.internal:6443"),
            "{old}"
        );
    }
}

#[test]
fn rewrite_keeps_unknown_fields() {
    let text = k3s_yaml("https://127.0.0.1:6443").replace(
        "  name: default\ncontexts:",
        "  name: default\n  extensions: [{name: x, extension: {a: 1}}]\ncontexts:",
    ) + "x-custom: kept\n";
    let cfg = rewrite(&text, "demo", "https://demo-cp.internal:6443").expect("rewrite");
    assert!(cfg.extra.contains_key("x-custom"));
    assert!(cfg.extra.contains_key("preferences"));
    assert!(cfg.clusters[0].extra.contains_key("extensions"));
    let back = cfg.to_yaml().expect("yaml");
    assert!(back.contains("x-custom: kept"), "{back}");
}

#[test]
fn rewrite_refuses_files_that_are_not_k3s_kubeconfigs() {
    let cases = [
        (EXISTING.to_string(), "expected one cluster, found 2"),
        (
            k3s_yaml("https://127.0.0.1:6443")
                .replace("  name: default\ncontexts", "  name: x\ncontexts"),
            "cluster is named \"x\"",
        ),
        (k3s_yaml("http://127.0.0.1:6443"), "is not an https url"),
        (
            k3s_yaml("https://127.0.0.1:6443").replace("    user: default", "    user: other"),
            "context refers to user",
        ),
        (
            "apiVersion: v1\nkind: Config\n".to_string(),
            "expected one cluster, found 0",
        ),
    ];
    for (text, want) in cases {
        let err = rewrite(&text, "demo", "https://demo-cp.internal:6443").expect_err(want);
        assert!(matches!(err, Error::NotK3s { .. }), "{err:?}");
        assert!(err.to_string().contains(want), "{err} lacks {want}");
    }
}

#[test]
fn rewrite_refuses_bad_cluster_names_and_servers() {
    let text = k3s_yaml("https://[::1]:6443");
    for name in ["", "../x", "a b", ".hidden"] {
        let err = rewrite(&text, name, "https://x:6443").expect_err(name);
        assert!(err.to_string().contains("invalid cluster name"), "{err}");
    }
    let err = rewrite(&text, "demo", "demo-cp.internal:6443").expect_err("no scheme");
    assert!(err.to_string().contains("invalid server url"), "{err}");
}

#[test]
fn debug_output_never_shows_the_client_key() {
    let cfg = rewrite(&k3s_yaml("https://[::1]:6443"), "demo", "https://d:6443").expect("ok");
    let shown = format!("{cfg:?}");
    assert!(!shown.contains(KEY_DATA));
    assert!(shown.contains("client-key-data"));
}

fn demo() -> Kubeconfig {
    rewrite(
        &k3s_yaml("https://[::1]:6443"),
        "demo",
        "https://demo-cp.internal:6443",
    )
    .expect("rewrite")
}

#[test]
fn merge_replaces_same_names_and_keeps_foreign_entries_and_context() {
    let existing = parse(EXISTING, "existing").expect("parse");
    let merged = merge(Some(existing), &demo(), false);
    let names: Vec<_> = merged.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["prod", "demo"]);
    assert_eq!(
        merged.clusters[1].cluster.server.as_deref(),
        Some("https://demo-cp.internal:6443")
    );
    assert!(merged.clusters[0]
        .cluster
        .extra
        .contains_key("tls-server-name"));
    let users: Vec<_> = merged.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(users, ["prod-admin", "demo"]);
    assert!(!merged.users[1].user.fields.contains_key("token"));
    let contexts: Vec<_> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(contexts, ["prod", "demo"]);
    assert!(merged.contexts[0].context.extra.contains_key("namespace"));
    assert_eq!(merged.current_context.as_deref(), Some("prod"));
    assert!(merged.extra.contains_key("extensions"));
    assert_eq!(
        merged.extra.get("preferences"),
        parse(EXISTING, "e")
            .expect("parse")
            .extra
            .get("preferences")
    );
}

#[test]
fn merge_with_use_context_switches_to_the_new_cluster() {
    let existing = parse(EXISTING, "existing").expect("parse");
    let merged = merge(Some(existing), &demo(), true);
    assert_eq!(merged.current_context.as_deref(), Some("demo"));
}

#[test]
fn merge_with_use_context_keeps_the_context_when_new_has_none() {
    let existing = parse(EXISTING, "existing").expect("parse");
    let mut new = demo();
    new.current_context = None;
    let merged = merge(Some(existing), &new, true);
    assert_eq!(merged.current_context.as_deref(), Some("prod"));
}

#[test]
fn merge_into_nothing_gives_the_new_config() {
    assert_eq!(merge(None, &demo(), false), demo());
    let empty = parse("", "empty").expect("empty text");
    assert_eq!(merge(Some(empty), &demo(), false), demo());
    let nulls = parse("clusters: null\nusers: null\ncontexts: null\n", "nulls").expect("nulls");
    let merged = merge(Some(nulls), &demo(), false);
    assert_eq!(merged.clusters, demo().clusters);
    assert_eq!(merged.current_context.as_deref(), Some("demo"));
}

#[test]
fn write_private_creates_dirs_and_forces_mode_0600() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("home/.kube/demo");
    write_private(&path, &demo()).expect("write");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("dir")), 0o700);
    assert_eq!(read(&path).expect("read"), Some(demo()));

    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    write_private(&path, &demo()).expect("rewrite");
    assert_eq!(mode(&path), 0o600);
    let leftovers: Vec<_> = fs::read_dir(path.parent().expect("dir"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("demo")]);
}

#[test]
fn merge_into_backs_up_with_original_mode_and_writes_0600() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("config");
    fs::write(&path, EXISTING).expect("seed");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");

    let report = merge_into(&path, &demo(), false).expect("merge");
    let backup = report.backup.expect("a backup");
    assert_eq!(fs::read_to_string(&backup).expect("backup"), EXISTING);
    assert_eq!(mode(&backup), 0o644);
    let name = backup
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("config.") && name.ends_with("Z.bak"),
        "{name}"
    );
    assert_eq!(mode(&path), 0o600);
    assert_eq!(report.current_context.as_deref(), Some("prod"));
    assert!(!report.switched);
    assert_eq!(report.replaced, ["cluster demo", "user demo"]);
    assert_eq!(report.added, ["context demo"]);
    let written = read(&path).expect("read").expect("exists");
    assert_eq!(written.clusters.len(), 2);
    assert_eq!(written.current_context.as_deref(), Some("prod"));

    // A second merge in the same second keeps the first backup.
    let again = merge_into(&path, &demo(), true).expect("merge again");
    let second = again.backup.expect("second backup");
    assert_ne!(second, backup);
    assert_eq!(fs::read_to_string(&backup).expect("first backup"), EXISTING);
    assert!(again.switched);
    assert_eq!(again.current_context.as_deref(), Some("demo"));
}

#[test]
fn merge_into_a_missing_file_makes_no_backup() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join(".kube/config");
    let report = merge_into(&path, &demo(), false).expect("merge");
    assert_eq!(report.backup, None);
    assert_eq!(report.added.len(), 3);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(read(&path).expect("read"), Some(demo()));
    assert_eq!(
        fs::read_dir(tmp.path().join(".kube")).expect("ls").count(),
        1
    );
}

#[test]
fn malformed_file_error_names_the_path_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("config");
    fs::write(&path, "clusters: [unclosed\n").expect("seed");
    let err = merge_into(&path, &demo(), false).expect_err("malformed");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(&path).expect("kept"),
        "clusters: [unclosed\n"
    );
    assert_eq!(fs::read_dir(tmp.path()).expect("ls").count(), 1);
    let err = read(&path).expect_err("read malformed");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn parse_and_serialize_lose_nothing() {
    let once = parse(EXISTING, "existing").expect("parse");
    let text = once.to_yaml().expect("yaml");
    assert_eq!(parse(&text, "again").expect("reparse"), once);
    for kept in [
        "tls-server-name",
        "namespace: payments",
        "prod-login",
        "flavour: vanilla",
    ] {
        assert!(text.contains(kept), "{kept} lost:\n{text}");
    }
}

#[test]
fn merge_into_writes_through_a_symlinked_config() {
    let tmp = tempfile::tempdir().expect("tmp");
    let real = tmp.path().join("dotfiles/kubeconfig");
    fs::create_dir_all(real.parent().expect("dir")).expect("mkdir");
    fs::write(&real, EXISTING).expect("seed");
    let link = merge_path(tmp.path());
    fs::create_dir_all(link.parent().expect("dir")).expect("mkdir");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");

    let report = merge_into(&link, &demo(), false).expect("merge");
    assert!(fs::symlink_metadata(&link)
        .expect("lstat")
        .file_type()
        .is_symlink());
    assert_eq!(report.path, fs::canonicalize(&real).expect("canon"));
    let written = read(&link).expect("read").expect("exists");
    assert_eq!(written.clusters.len(), 2);
    assert_eq!(mode(&real), 0o600);
}

#[test]
fn default_paths_follow_the_issue() {
    let home = Path::new("/home/op");
    assert_eq!(cluster_path(home, "demo"), Path::new("/home/op/.kube/demo"));
    assert_eq!(merge_path(home), Path::new("/home/op/.kube/config"));
}
