//! The k3s side of a run, reached through the Machines API exec endpoint: the commands that ask
//! the bootstrap server's kubectl whether a node is Ready, read the join token, and taint a
//! server, and the pure parsing of their answers.
//!
//! Must not: print, log or put into an error the token or any command output that may hold it.

use std::collections::BTreeMap;
use std::fmt;

use crate::fly::types::{ExecRequest, ExecResponse, SecretString};
use crate::plan::{SERVER_TAINT, SERVER_TOKEN_PATH};

/// The k3s node name of a machine: its stable machine DNS name (see `render::Node`).
pub fn k3s_node_name(machine_id: &str, app: &str) -> String {
    format!("{machine_id}.vm.{app}.internal")
}

/// The machine id in a k3s node name `<id>.vm.<app>.internal` of app `app` (the inverse of
/// [`k3s_node_name`]); `None` for a node of another app or a name of another shape.
pub fn machine_of_k3s_node<'a>(k3s_node: &'a str, app: &str) -> Option<&'a str> {
    k3s_node
        .strip_suffix(&format!(".vm.{app}.internal"))
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// `k3s kubectl ARGS` as an argument vector (run without a shell).
fn kubectl(args: &[&str]) -> Vec<String> {
    ["k3s", "kubectl"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}

/// `k3s kubectl get node NAME -o jsonpath=...`: prints the Ready condition's status.
pub fn ready_command(node: &str) -> Vec<String> {
    kubectl(&[
        "get",
        "node",
        node,
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
    ])
}

/// `k3s kubectl get node NAME -o jsonpath=...`: `STATUS<TAB>BOOT_ID<TAB>HEARTBEAT<TAB>KUBELET`
/// of its Ready condition, `status.nodeInfo.bootID` and `status.nodeInfo.kubeletVersion`.
pub fn boot_command(node: &str) -> Vec<String> {
    kubectl(&[
        "get",
        "node",
        node,
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}{"\t"}{.status.nodeInfo.bootID}{"\t"}{.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}{"\t"}{.status.nodeInfo.kubeletVersion}"#,
    ])
}

/// What [`boot_command`] printed: the Ready status, the boot id, the last heartbeat and the
/// kubelet version (each empty when the node has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Boot {
    /// `True`, `False`, `Unknown` or empty.
    pub status: String,
    /// `status.nodeInfo.bootID` (k3s-standin reports none).
    pub boot_id: String,
    /// The Ready condition's `lastHeartbeatTime`, RFC 3339 in UTC (`...Z`), so later times
    /// sort later as strings.
    pub heartbeat: String,
    /// `status.nodeInfo.kubeletVersion`: `v1.34.1+k3s1` (k3s-standin: `v1.34.1+k3s-standin`).
    pub kubelet: String,
}

impl Boot {
    /// Parses [`boot_command`]'s output.
    pub fn parse(stdout: &str) -> Boot {
        let mut parts = stdout.trim_end_matches('\n').split('\t');
        let mut next = || parts.next().unwrap_or("").trim().to_string();
        Boot {
            status: next(),
            boot_id: next(),
            heartbeat: next(),
            kubelet: next(),
        }
    }

    /// Whether this answer is Ready from a boot after `before`: another boot id, or a
    /// heartbeat after `before`'s.
    pub fn ready_since(&self, before: &Boot) -> bool {
        let new_boot = !self.boot_id.is_empty() && self.boot_id != before.boot_id;
        self.status == "True" && (new_boot || self.heartbeat > before.heartbeat)
    }
}

/// `k3s kubectl get nodes -o jsonpath=...`: one line per registered node, `NAME<TAB>STATUS`
/// (its Ready condition's status, empty when it has none). One call answers for every node, so
/// the waits of a whole node group share it (see `run`'s shared Ready check).
pub fn ready_all_command() -> Vec<String> {
    kubectl(&[
        "get",
        "nodes",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name}{"\t"}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
    ])
}

/// What [`ready_all_command`] said: the Ready status by node name, or why kubectl could not
/// answer (the first line of its stderr, or of the exec error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodesReadiness(Result<BTreeMap<String, String>, String>);

impl NodesReadiness {
    /// The check itself failed (exec refused while the guest boots, kubectl unreachable).
    pub fn failed(why: impl AsRef<str>) -> Self {
        NodesReadiness(Err(first_line(why.as_ref())))
    }

    /// One node's readiness in this answer.
    pub fn of(&self, node: &str) -> Readiness {
        match &self.0 {
            Err(why) => Readiness::Unknown(why.clone()),
            Ok(nodes) => match nodes.get(node).map(String::as_str) {
                None => Readiness::Unknown(format!("node {node} is not in the node list yet")),
                Some("True") => Readiness::Ready,
                Some("") => Readiness::Unknown("no Ready condition yet".to_string()),
                Some(other) => Readiness::NotReady(other.to_string()),
            },
        }
    }
}

/// Reads the answer of [`ready_all_command`].
pub fn parse_ready_all(out: &ExecResponse) -> NodesReadiness {
    if out.exit_code != 0 {
        let why = first_line(&out.stderr);
        return NodesReadiness(Err(if why.is_empty() {
            format!("kubectl exited with {}", out.exit_code)
        } else {
            why
        }));
    }
    let nodes = out
        .stdout
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(2, '\t');
            let name = parts.next()?.trim();
            (!name.is_empty()).then(|| {
                (
                    name.to_string(),
                    parts.next().unwrap_or("").trim().to_string(),
                )
            })
        })
        .collect();
    NodesReadiness(Ok(nodes))
}

/// `k3s kubectl get nodes -o json`: every registered node with its conditions and node info
/// (the kubelet's version is the node's k3s version), for `status`.
pub fn nodes_command() -> Vec<String> {
    kubectl(&["get", "nodes", "-o", "json"])
}

/// One node of [`nodes_command`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sNode {
    /// `metadata.name`.
    pub name: String,
    /// Its Ready condition.
    pub ready: Readiness,
    /// `status.nodeInfo.kubeletVersion` (e.g. `v1.31.4+k3s1`); empty when not reported.
    pub version: String,
}

/// Reads the answer of [`nodes_command`]: the nodes by name, or why kubectl could not answer
/// (one line).
pub fn parse_nodes(out: &ExecResponse) -> Result<Vec<K3sNode>, String> {
    if out.exit_code != 0 {
        let why = first_line(&out.stderr);
        return Err(if why.is_empty() {
            format!("kubectl exited with {}", out.exit_code)
        } else {
            why
        });
    }
    let list: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("kubectl get nodes -o json: not JSON: {e}"))?;
    let items = list["items"]
        .as_array()
        .ok_or_else(|| "kubectl get nodes -o json: no items list".to_string())?;
    let mut nodes = Vec::with_capacity(items.len());
    for item in items {
        let Some(name) = item["metadata"]["name"].as_str() else {
            continue;
        };
        let ready = item["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["status"].as_str().unwrap_or(""));
        let ready = match ready {
            Some("True") => Readiness::Ready,
            None | Some("") => Readiness::Unknown("no Ready condition yet".to_string()),
            Some(other) => Readiness::NotReady(other.to_string()),
        };
        nodes.push(K3sNode {
            name: name.to_string(),
            ready,
            version: item["status"]["nodeInfo"]["kubeletVersion"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        });
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// `cat` of the server token file.
pub fn token_command() -> Vec<String> {
    vec!["cat".to_string(), SERVER_TOKEN_PATH.to_string()]
}

/// `k3s kubectl taint node NAME CriticalAddonsOnly=true:NoExecute --overwrite` (idempotent).
pub fn taint_command(node: &str) -> Vec<String> {
    kubectl(&["taint", "node", node, SERVER_TAINT, "--overwrite"])
}

/// `k3s kubectl cordon NAME`: marks the node unschedulable (`spec.unschedulable`).
pub fn cordon_command(node: &str) -> Vec<String> {
    kubectl(&["cordon", node])
}

/// `k3s kubectl uncordon NAME`: marks the node schedulable again.
pub fn uncordon_command(node: &str) -> Vec<String> {
    kubectl(&["uncordon", node])
}

/// How long one drain call may evict before kubectl gives up; the run calls it again until
/// its own deadline. Under the 60 s a Machines API call may block (reference
/// fly-machines-api.md §2.3.1, the proxy limit; the exec endpoint's own limit is not stated).
pub const DRAIN_CALL_SECS: u64 = 45;

/// `k3s kubectl drain NAME --ignore-daemonsets --delete-emptydir-data --timeout=45s`: cordons,
/// then evicts every pod through the Eviction API, which refuses an eviction that would break
/// a PodDisruptionBudget (kubectl retries those until its timeout).
pub fn drain_command(node: &str) -> Vec<String> {
    let timeout = format!("--timeout={DRAIN_CALL_SECS}s");
    kubectl(&[
        "drain",
        node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        timeout.as_str(),
    ])
}

/// `k3s kubectl delete node NAME --ignore-not-found` (idempotent).
pub fn delete_node_command(node: &str) -> Vec<String> {
    kubectl(&["delete", "node", node, "--ignore-not-found"])
}

/// Whether a failed kubectl call failed only because the node is not registered (a node that
/// never joined, or one a killed run deleted already): for cordon and drain, nothing to do.
pub fn node_not_found(out: &ExecResponse) -> bool {
    out.exit_code != 0 && out.stderr.contains("(NotFound)")
}

/// Whether a failed kubectl call failed because the API could not serve it for now: the
/// apiserver's 503 (`Error from server (ServiceUnavailable)`, e.g. its datastore without a
/// leader during an election) or no connection to it yet.
pub fn is_unavailable(out: &ExecResponse) -> bool {
    out.exit_code != 0
        && [
            "(ServiceUnavailable)",
            "connection refused",
            "leader changed",
        ]
        .iter()
        .any(|s| out.stderr.contains(s))
}

/// The Machines API exec request for one of these commands (30 s: kubectl and `cat` answer
/// well within it; the client adds its own margin).
pub fn exec_request(command: Vec<String>) -> ExecRequest {
    ExecRequest {
        command,
        timeout: Some(30),
        ..ExecRequest::default()
    }
}

/// What the Ready query said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// `True`.
    Ready,
    /// Registered, not Ready: the condition's status (`False`, `Unknown`).
    NotReady(String),
    /// Not registered yet, or kubectl could not answer: a short reason.
    Unknown(String),
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readiness::Ready => f.write_str("Ready"),
            Readiness::NotReady(s) => write!(f, "registered, Ready={s}"),
            Readiness::Unknown(why) => write!(f, "not registered ({why})"),
        }
    }
}

/// The first line of `text`, at most 200 characters (for messages; never used on token output).
pub fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

/// Reads the answer of [`ready_command`].
pub fn parse_ready(out: &ExecResponse) -> Readiness {
    if out.exit_code != 0 {
        let why = first_line(&out.stderr);
        return Readiness::Unknown(if why.is_empty() {
            format!("kubectl exited with {}", out.exit_code)
        } else {
            why
        });
    }
    match out.stdout.trim() {
        "True" => Readiness::Ready,
        "" => Readiness::Unknown("no Ready condition yet".to_string()),
        other => Readiness::NotReady(other.to_string()),
    }
}

/// The k3s join token. Cannot be printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct K3sToken(SecretString);

impl K3sToken {
    /// The value, for the one call that stores it as an app secret.
    pub fn secret(&self) -> &SecretString {
        &self.0
    }

    /// The app secret's value: the token file's content (the token and a newline) in base64,
    /// because Fly writes a `secret_name` file from a secret holding base64 (reference
    /// fly-machines-api.md §3 `files`).
    pub fn file_secret(&self) -> SecretString {
        use base64::Engine;
        let mut content = self.0.expose().to_string();
        content.push('\n');
        SecretString::new(base64::engine::general_purpose::STANDARD.encode(content))
    }
}

impl fmt::Debug for K3sToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("K3sToken(<redacted>)")
    }
}

impl fmt::Display for K3sToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a token answer was refused. Carries no part of the output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `cat` failed (the file is not there yet, usually).
    #[error("reading {SERVER_TOKEN_PATH} failed with exit code {0}")]
    Exit(i64),
    /// The file was empty.
    #[error("{SERVER_TOKEN_PATH} is empty")]
    Empty,
    /// The file held more than one line or blanks inside.
    #[error("{SERVER_TOKEN_PATH} does not hold a single token (unexpected whitespace)")]
    Malformed,
}

/// Reads the answer of [`token_command`]: one line, no inner whitespace.
pub fn parse_token(out: &ExecResponse) -> Result<K3sToken, TokenError> {
    if out.exit_code != 0 {
        return Err(TokenError::Exit(out.exit_code));
    }
    let t = out.stdout.trim();
    if t.is_empty() {
        return Err(TokenError::Empty);
    }
    if t.chars().any(char::is_whitespace) {
        return Err(TokenError::Malformed);
    }
    Ok(K3sToken(SecretString::new(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_commands_name_the_node_and_treat_not_found_as_gone() {
        let n = "m2.vm.lab-ng-web.internal";
        assert_eq!(cordon_command(n), ["k3s", "kubectl", "cordon", n]);
        assert_eq!(
            drain_command(n),
            [
                "k3s",
                "kubectl",
                "drain",
                n,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=45s"
            ]
        );
        assert_eq!(
            delete_node_command(n),
            ["k3s", "kubectl", "delete", "node", n, "--ignore-not-found"]
        );
        let missing = ExecResponse {
            stdout: String::new(),
            stderr: format!("Error from server (NotFound): nodes \"{n}\" not found"),
            exit_code: 1,
            exit_signal: None,
        };
        assert!(node_not_found(&missing));
        let refused = ExecResponse {
            stderr: "error when evicting pods/\"web-1\": Cannot evict pod as it would violate the pod's disruption budget.".into(),
            ..missing.clone()
        };
        assert!(!node_not_found(&refused));
        assert!(!is_unavailable(&refused));
        let election = ExecResponse {
            stderr: "Error from server (ServiceUnavailable): datastore: etcd range at https://127.0.0.1:2379: 503: etcdserver: leader changed".into(),
            ..missing.clone()
        };
        assert!(is_unavailable(&election));
        assert!(!is_unavailable(&ExecResponse {
            exit_code: 0,
            ..election
        }));
    }

    fn out(code: i64, stdout: &str, stderr: &str) -> ExecResponse {
        ExecResponse {
            stdout: stdout.into(),
            stderr: stderr.into(),
            exit_code: code,
            exit_signal: None,
        }
    }

    #[test]
    fn ready_condition_is_read_from_jsonpath_output() {
        assert_eq!(parse_ready(&out(0, "True\n", "")), Readiness::Ready);
        assert_eq!(
            parse_ready(&out(0, "False", "")),
            Readiness::NotReady("False".into())
        );
        assert!(matches!(
            parse_ready(&out(0, "  ", "")),
            Readiness::Unknown(_)
        ));
        let missing = parse_ready(&out(
            1,
            "",
            "Error from server (NotFound): nodes \"x\" not found\nmore",
        ));
        assert_eq!(
            missing,
            Readiness::Unknown("Error from server (NotFound): nodes \"x\" not found".into())
        );
        assert_eq!(
            parse_ready(&out(127, "", "")).to_string(),
            "not registered (kubectl exited with 127)"
        );
    }

    #[test]
    fn node_list_answer_gives_each_nodes_readiness() {
        let all = parse_ready_all(&out(
            0,
            "a.vm.x.internal\tTrue\nb.vm.x.internal\tFalse\nc.vm.x.internal\t\n",
            "",
        ));
        assert_eq!(all.of("a.vm.x.internal"), Readiness::Ready);
        assert_eq!(
            all.of("b.vm.x.internal"),
            Readiness::NotReady("False".into())
        );
        assert!(matches!(all.of("c.vm.x.internal"), Readiness::Unknown(_)));
        assert_eq!(
            all.of("d.vm.x.internal").to_string(),
            "not registered (node d.vm.x.internal is not in the node list yet)"
        );
        let down = parse_ready_all(&out(
            1,
            "",
            "The connection to the server [::1]:6443 was refused\nmore",
        ));
        assert_eq!(
            down.of("a.vm.x.internal"),
            Readiness::Unknown("The connection to the server [::1]:6443 was refused".into())
        );
        assert_eq!(
            NodesReadiness::failed("exec refused\nsecond").of("a"),
            Readiness::Unknown("exec refused".into())
        );
        assert_eq!(ready_all_command()[..4], ["k3s", "kubectl", "get", "nodes"]);
    }

    #[test]
    fn node_json_gives_readiness_and_version() {
        let json = r#"{"items":[
            {"metadata":{"name":"b.vm.x.internal"},"status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"False"}],"nodeInfo":{"kubeletVersion":"v1.31.4+k3s1"}}},
            {"metadata":{"name":"a.vm.x.internal"},"status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.31.4+k3s1"}}},
            {"metadata":{"name":"c.vm.x.internal"},"status":{}}
        ]}"#;
        let nodes = parse_nodes(&out(0, json, "")).expect("nodes");
        assert_eq!(
            nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["a.vm.x.internal", "b.vm.x.internal", "c.vm.x.internal"]
        );
        assert_eq!(nodes[0].ready, Readiness::Ready);
        assert_eq!(nodes[0].version, "v1.31.4+k3s1");
        assert_eq!(nodes[1].ready, Readiness::NotReady("False".into()));
        assert!(matches!(nodes[2].ready, Readiness::Unknown(_)));
        assert_eq!(nodes[2].version, "");
        assert_eq!(
            parse_nodes(&out(1, "", "connection refused\nmore")),
            Err("connection refused".to_string())
        );
        assert!(parse_nodes(&out(0, "nope", "")).is_err());
        assert_eq!(
            nodes_command(),
            ["k3s", "kubectl", "get", "nodes", "-o", "json"]
        );
    }

    #[test]
    fn token_is_parsed_and_never_printed() {
        let secret = "K10abcdef0123::server:0123456789abcdef";
        let t = parse_token(&out(0, &format!("{secret}\n"), "")).expect("token");
        assert_eq!(t.secret().expose(), secret);
        use base64::Engine;
        let file = base64::engine::general_purpose::STANDARD
            .decode(t.file_secret().expose())
            .expect("base64");
        assert_eq!(file, format!("{secret}\n").into_bytes());
        assert!(!format!("{t:?} {t}").contains("K10"));
        assert_eq!(parse_token(&out(1, secret, "")), Err(TokenError::Exit(1)));
        assert_eq!(parse_token(&out(0, "\n", "")), Err(TokenError::Empty));
        let bad = parse_token(&out(0, &format!("{secret}\n{secret}"), "")).expect_err("two");
        assert!(!bad.to_string().contains("K10"), "{bad}");
    }

    #[test]
    fn commands_name_the_node_and_never_use_a_shell() {
        let n = k3s_node_name("e784", "lab-cp");
        assert_eq!(n, "e784.vm.lab-cp.internal");
        assert_eq!(
            ready_command(&n)[..5],
            ["k3s", "kubectl", "get", "node", n.as_str()]
        );
        assert_eq!(
            taint_command(&n),
            vec![
                "k3s",
                "kubectl",
                "taint",
                "node",
                n.as_str(),
                "CriticalAddonsOnly=true:NoExecute",
                "--overwrite"
            ]
        );
        assert_eq!(token_command(), vec!["cat", "/data/k3s/server/token"]);
    }

    #[test]
    fn ready_again_needs_a_new_boot_or_a_later_heartbeat() {
        let before = Boot::parse("True\t\t2026-12-06T12:00:05Z");
        assert_eq!(before.heartbeat, "2026-12-06T12:00:05Z");
        assert!(!Boot::parse("True\t\t2026-12-06T12:00:05Z").ready_since(&before));
        assert!(Boot::parse("True\t\t2026-12-06T12:00:09Z").ready_since(&before));
        assert!(!Boot::parse("False\t\t2026-12-06T12:00:09Z").ready_since(&before));
        let booted = Boot::parse("True\tb1\t2026-12-06T12:00:05Z");
        assert!(booted.ready_since(&Boot::parse("True\tb0\t2026-12-06T12:00:05Z")));
        assert!(Boot::parse("True\t\t2026-12-06T12:00:01Z").ready_since(&Boot::default()));
        // The fourth column is the kubelet version; older answers without it parse as empty.
        let upgraded = Boot::parse("True\tb2\t2026-12-06T12:01:00Z\tv1.34.1+k3s-standin\n");
        assert_eq!(upgraded.kubelet, "v1.34.1+k3s-standin");
        assert_eq!(before.kubelet, "");
        assert!(boot_command("n")
            .last()
            .unwrap()
            .ends_with("{.status.nodeInfo.kubeletVersion}"));
    }
}
