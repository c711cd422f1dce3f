//! `fks-bootstrap check-kernel [--kernel-config PATH] [--cluster CLUSTER_DIR] [--profile P]
//! [--json]`: check a kernel config (default: the running kernel's) against what the cluster
//! needs (the default profile, what `node init` enforces), or report it against the seed
//! README's or k3s check-config's list; print a table (or JSON) on stdout.
//!
//! Exit 0 when every required option is satisfied, 1 when some are not, 2 when the input
//! cannot be read. Recommended options that are missing are warnings on stderr. The judging
//! lives in `crate::kernel`; this file only renders.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};

use crate::config;
use crate::kernel::{self, KernelConfig, Profile, Report, Requirements, Usage};

/// Check the kernel config for the options k3s on Fly needs.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kernel config to check (plain or gzip); default: /proc/config.gz, then
    /// /boot/config-$(uname -r).
    #[arg(long, value_name = "PATH")]
    pub kernel_config: Option<PathBuf>,
    /// The cluster directory (e.g. clusters/lab): what it needs follows from its config
    /// (FLANNEL_BACKEND: VXLAN or WIREGUARD). Without it the backend's options are not checked.
    #[arg(long, value_name = "CLUSTER_DIR")]
    pub cluster: Option<PathBuf>,
    /// Which list to check against: cluster (what the cluster needs, as `node init` checks at
    /// boot), seed (the seed README's full list, as a report), k3s-check-config, or all three.
    #[arg(long, value_enum, default_value = "cluster")]
    pub profile: Profile,
    /// Print a JSON array of verdicts instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Run `check-kernel`: read, judge, render; exit 1 when a required option is not satisfied.
pub fn run(args: Args) -> Result<(), super::Error> {
    let (config, path) = kernel::source::read(args.kernel_config.as_deref())
        .map_err(|e| super::Error::Usage(e.into()))?;
    // Any unusable input (cluster config or kernel config) is exit 2; exit 1 is kept for
    // "the kernel lacks required options".
    let usage = match &args.cluster {
        Some(_) if !args.profile.uses_cluster() => {
            return Err(super::Error::Usage(anyhow!(
                "--profile {} does not depend on the cluster; --cluster goes with --profile cluster or all",
                args.profile.as_str()
            )))
        }
        Some(dir) => Usage::of(&config::load(dir).map_err(|e| super::Error::Usage(e.into()))?),
        None => Usage::unknown_cluster(),
    };
    let requirements = Requirements::builtin(args.profile, &usage);
    let report = kernel::check(&config, &requirements);
    let out = if args.json {
        serde_json::to_string_pretty(&report.entries).map_err(|e| super::Error::Failed(e.into()))?
            + "\n"
    } else {
        table(&config, &path, args.profile, &requirements, &report)
    };
    std::io::stdout()
        .write_all(out.as_bytes())
        .context("writing to stdout")
        .map_err(super::Error::Failed)?;
    if args.json {
        for note in report.modules_note.iter().chain(&report.notes) {
            eprintln!("note: {note}");
        }
    }
    let recommended = missing_recommended(&report);
    if args.profile == Profile::Cluster && !recommended.is_empty() {
        eprintln!(
            "warning: {} recommended kernel option(s) missing in {}: {}",
            recommended.len(),
            path.display(),
            recommended.join(", ")
        );
    }
    let names = failed_options(&report);
    if names.is_empty() {
        return Ok(());
    }
    Err(super::Error::Failed(anyhow!(
        "{} required kernel option(s) not satisfied in {}: {}",
        names.len(),
        path.display(),
        names.join(", ")
    )))
}

/// The required options that are not satisfied, each once (an option can be in several sets),
/// with what needs it: `VXLAN (FLANNEL_BACKEND=vxlan)`.
fn failed_options(report: &Report) -> Vec<String> {
    let mut first: std::collections::BTreeMap<&str, &str> = Default::default();
    for e in report.failures() {
        first.entry(e.option.as_str()).or_insert(e.group.as_str());
    }
    first
        .into_iter()
        .map(|(option, group)| format!("{option} ({group})"))
        .collect()
}

/// Optional options that are not satisfied, each once.
fn missing_recommended(report: &Report) -> Vec<&str> {
    let mut names: Vec<&str> = report
        .entries
        .iter()
        .filter(|e| !e.required && !e.satisfied)
        .map(|e| e.option.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The human-readable report: a header, one table per requirement set grouped by group, notes,
/// and a summary line.
fn table(
    config: &KernelConfig,
    path: &Path,
    profile: Profile,
    requirements: &Requirements,
    report: &Report,
) -> String {
    let mut out = String::new();
    let version = match (&config.version, &config.release) {
        (Some(v), Some(r)) if r != &v.to_string() => format!("Linux {v} ({r})"),
        (Some(v), _) => format!("Linux {v}"),
        (None, _) => "kernel version unknown".to_string(),
    };
    let _ = writeln!(out, "kernel config: {} ({version})", path.display());
    let _ = writeln!(out, "profile: {}", profile.as_str());
    if let Some(note) = &report.modules_note {
        let _ = writeln!(
            out,
            "{note}; options built as modules (=m) count as missing"
        );
    }
    let width = report
        .entries
        .iter()
        .map(|e| e.option.len())
        .max()
        .unwrap_or(6)
        .max(6);
    for set in &requirements.sets {
        let entries: Vec<_> = report
            .entries
            .iter()
            .filter(|e| e.set == set.name)
            .collect();
        if entries.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n== {} ({})", set.title, set.name);
        let mut group = "";
        for e in entries {
            if e.group != group {
                group = &e.group;
                let _ = writeln!(out, "-- {group}");
                let _ = writeln!(
                    out,
                    "   {:width$}  {:14}  {:8}  REASON / NOTE",
                    "OPTION", "STATUS", "REQUIRED"
                );
            }
            let status = if e.required && !e.satisfied {
                format!("{} FAIL", e.status.as_str())
            } else {
                e.status.as_str().to_string()
            };
            let required = if e.required { "yes" } else { "no" };
            let _ = writeln!(
                out,
                "   {:width$}  {status:14}  {required:8}  {}",
                e.option, e.reason
            );
            if let Some(note) = &e.note {
                let _ = writeln!(out, "   {:width$}  {:14}  {:8}  note: {note}", "", "", "");
            }
        }
    }
    if !report.notes.is_empty() {
        out.push('\n');
        for note in &report.notes {
            let _ = writeln!(out, "note: {note}");
        }
    }
    let (ok, module, missing, na) = report.counts();
    let failed = failed_options(report).len();
    let _ = writeln!(
        out,
        "\nsummary: {} checked: {ok} ok, {module} module, {missing} missing, {na} not applicable; {}",
        report.entries.len(),
        if failed == 0 {
            "PASS: every required option is satisfied".to_string()
        } else {
            format!("FAIL: {failed} required option(s) not satisfied")
        }
    );
    out
}
