//! `fks-bootstrap status CLUSTER_DIR [--json]`: per node the machine state and image, the k3s
//! version, Ready, and for a server its etcd member and that member's health, as a table or
//! JSON on stdout (`crate::status` gathers and judges). Exit 0 when everything is healthy,
//! 1 when anything is not (so scripts can gate on it), 2 for a usage or config error.
//!
//! Must not: change anything (reads only).

use std::path::PathBuf;

use super::output;
use crate::status::{self, Member, Report};

/// Show the health of every node of the cluster.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// Print the report as JSON (documented in README "status --json").
    #[arg(long)]
    pub json: bool,
}

/// Runs `status`.
pub fn run(args: Args) -> Result<(), super::Error> {
    let config = super::load_config(&args.cluster_dir)?;
    let client = super::fly_client()?;
    let report = super::runtime()?
        .block_on(status::gather(&client, &config))
        .map_err(|e| super::Error::Failed(e.into()))?;
    let text = if args.json {
        output::json(&report)?
    } else {
        text(&report)
    };
    output::stdout(&text)?;
    if report.healthy {
        return Ok(());
    }
    if !args.json {
        eprintln!("fks-bootstrap: cluster {} is not healthy", report.cluster);
    }
    Err(super::Error::Status(1))
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// `id healthy|unhealthy[,leader][,learner]`, or `-`.
fn member_cell(m: Option<&Member>) -> String {
    let Some(m) = m else {
        return "-".to_string();
    };
    let mut s = format!(
        "{} {}",
        m.id,
        if m.healthy { "healthy" } else { "unhealthy" }
    );
    if m.leader {
        s.push_str(",leader");
    }
    if m.learner {
        s.push_str(",learner");
    }
    s
}

/// The human report: a table of nodes, then the members without a node and the problems.
pub fn text(report: &Report) -> String {
    let header = [
        "NAME",
        "APP",
        "MACHINE ID",
        "ROLE",
        "STATE",
        "IMAGE",
        "K3S",
        "READY",
        "ETCD MEMBER",
        "PROBLEMS",
    ];
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.app.clone(),
                n.machine_id.clone(),
                dash(&n.role),
                n.state.clone(),
                dash(&n.image),
                dash(&n.k3s_version),
                n.ready.clone(),
                member_cell(n.member.as_ref()),
                if n.problems.is_empty() {
                    "-".to_string()
                } else {
                    n.problems.join("; ")
                },
            ]
        })
        .collect();
    let mut out = output::table(&header, &rows);
    for m in &report.orphan_members {
        out.push_str(&format!(
            "etcd member {} ({}) belongs to no node of the cluster: {}\n",
            m.id,
            if m.name.is_empty() {
                "unnamed"
            } else {
                &m.name
            },
            member_cell(Some(m))
        ));
    }
    for n in &report.orphan_nodes {
        out.push_str(&format!(
            "Kubernetes node {n} belongs to no machine of the cluster\n"
        ));
    }
    for p in &report.problems {
        out.push_str(&format!("problem: {p}\n"));
    }
    out.push_str(if report.healthy {
        "cluster is healthy\n"
    } else {
        "cluster is NOT healthy\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Node;

    fn node(name: &str, member: Option<Member>, problems: &[&str]) -> Node {
        Node {
            name: name.into(),
            app: "lab-cp".into(),
            machine_id: format!("m-{name}"),
            role: "server".into(),
            state: "started".into(),
            image: "img@sha256:1".into(),
            k3s_node: format!("m-{name}.vm.lab-cp.internal"),
            k3s_version: "v1.31.4+k3s1".into(),
            ready: "True".into(),
            member,
            problems: problems.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn member(id: &str, healthy: bool, leader: bool) -> Member {
        Member {
            id: id.into(),
            name: format!("n-{id}"),
            healthy,
            leader,
            learner: false,
            error: None,
        }
    }

    #[test]
    fn table_shows_members_problems_and_the_verdict() {
        let report = Report {
            cluster: "lab".into(),
            healthy: false,
            nodes: vec![
                node("ctrl-0", Some(member("a1", true, true)), &[]),
                node(
                    "ctrl-1",
                    Some(member("a2", false, false)),
                    &["machine is stopped", "etcd member unhealthy: timeout"],
                ),
                node("ctrl-2", None, &["not an etcd member"]),
            ],
            orphan_members: vec![member("a9", true, false)],
            orphan_nodes: vec!["old.vm.lab-cp.internal".into()],
            problems: vec!["the etcd members could not be read: x".into()],
        };
        let t = text(&report);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME  "), "{t}");
        assert!(lines[0].ends_with("ETCD MEMBER        PROBLEMS"), "{t}");
        assert!(
            lines[1].contains("a1 healthy,leader") && lines[1].ends_with("  -"),
            "{t}"
        );
        assert!(
            lines[2]
                .ends_with("a2 unhealthy       machine is stopped; etcd member unhealthy: timeout"),
            "{t}"
        );
        assert!(
            lines[3].ends_with("-                  not an etcd member"),
            "{t}"
        );
        assert_eq!(
            lines[4],
            "etcd member a9 (n-a9) belongs to no node of the cluster: a9 healthy"
        );
        assert_eq!(
            lines[5],
            "Kubernetes node old.vm.lab-cp.internal belongs to no machine of the cluster"
        );
        assert_eq!(lines[6], "problem: the etcd members could not be read: x");
        assert_eq!(lines[7], "cluster is NOT healthy");
        let ok = Report {
            healthy: true,
            nodes: vec![node("ctrl-0", Some(member("a1", true, true)), &[])],
            orphan_members: vec![],
            orphan_nodes: vec![],
            problems: vec![],
            ..report
        };
        assert!(text(&ok).ends_with("\ncluster is healthy\n"));
    }
}
