//! `fks-bootstrap check-kernel [--kernel-config PATH] [--cluster CLUSTER_DIR] [--json]`: check a kernel
//! config (default: the running kernel's) against the seed list, k3s check-config and the
//! cluster's needs; print a table (or JSON) on stdout.
//!
//! Exit 0 when every required option is satisfied, 1 when some are not, 2 when the input
//! cannot be read. The judging lives in `crate::kernel`; this file only renders.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};

use crate::config::{self, FlannelBackend};
use crate::kernel::{self, KernelConfig, Report, Requirements};

/// Check the kernel config for the options k3s on Fly needs.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kernel config to check (plain or gzip); default: /proc/config.gz, then
    /// /boot/config-$(uname -r).
    #[arg(long, value_name = "PATH")]
    pub kernel_config: Option<PathBuf>,
    /// The cluster directory (e.g. clusters/lab): adds the options its flannel backend needs.
    #[arg(long, value_name = "CLUSTER_DIR")]
    pub cluster: Option<PathBuf>,
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
    let flannel: Option<FlannelBackend> = match &args.cluster {
        Some(dir) => Some(
            config::load(dir)
                .map_err(|e| super::Error::Usage(e.into()))?
                .flannel_backend,
        ),
        None => None,
    };
    let requirements = Requirements::builtin(flannel);
    let report = kernel::check(&config, &requirements);
    let out = if args.json {
        serde_json::to_string_pretty(&report.entries).map_err(|e| super::Error::Failed(e.into()))?
            + "\n"
    } else {
        table(&config, &path, &requirements, &report)
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

/// The required options that are not satisfied, each once (an option can be in several sets).
fn failed_options(report: &Report) -> Vec<&str> {
    let mut names: Vec<&str> = report.failures().map(|e| e.option.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The human-readable report: a header, one table per requirement set grouped by group, notes,
/// and a summary line.
fn table(
    config: &KernelConfig,
    path: &Path,
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
