//! `fks-bootstrap image build CLUSTER_DIR [--push] [--tag T] [--k3s-source ...]`: build the
//! cluster's node image into the local OCI layout and, with `--push`, push it to
//! `<registry>/<cluster>-cp:<tag>`. Flags and output only; the work is in `crate::image`.
//!
//! stdout: the image (`<ref>@<digest>`, or JSON with `--json`); stderr: progress.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::image::{self, k3s};

/// After-help text: settings and examples.
pub const AFTER_HELP: &str = "\
Settings (environment):
  FLY_API_TOKEN            the registry password (user x, as Fly's registry expects)
  FLY_REGISTRY_HOST        the registry (default registry.fly.io; flyctl's override)
  FKS_REGISTRY_PLAIN_HTTP  1: plain http to FLY_REGISTRY_HOST (a registry on this machine only)
  XDG_CACHE_HOME           cache of k3s downloads and the OCI layout (default ~/.cache)

Examples:
  fks-bootstrap image build clusters/demo --push
  fks-bootstrap image build clusters/demo --k3s-source airgap /srv/k3s-v1.33.7+k3s1
  fks-bootstrap image build clusters/lab --push --k3s-source file target/debug/k3s-standin --k3s-standin";

/// `image` subcommands.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do with the node image.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Build the node image (base + fks-bootstrap + k3s), optionally push it.
    #[command(after_help = AFTER_HELP)]
    Build(BuildArgs),
}

/// `image build` flags.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The cluster directory holding `config` or `cluster.toml`.
    pub cluster_dir: PathBuf,
    /// Push to <registry>/<cluster>-cp:<tag> (blobs the registry has are skipped).
    #[arg(long)]
    pub push: bool,
    /// The tag (default: fks-<first 12 hex digits of the manifest digest>).
    #[arg(long, value_name = "T")]
    pub tag: Option<String>,
    #[command(flatten)]
    pub k3s: K3sFlags,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where the node image's k3s comes from: the flags `image build`, `-c` and `-a` share.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct K3sFlags {
    /// Where k3s comes from: `download` (K3S_VERSION's release, verified against its
    /// sha256sum-amd64.txt), `airgap DIR` (the release's k3s and sha256sum-amd64.txt) or
    /// `file PATH`.
    #[arg(long, num_args = 1..=2, value_names = ["KIND", "PATH"], default_value = "download")]
    pub k3s_source: Vec<String>,
    /// The `file` given is k3s-standin, the project's test double: the image says so.
    #[arg(long)]
    pub k3s_standin: bool,
    /// Release base URL for `download` (a mirror with GitHub's layout).
    #[arg(long, value_name = "URL", default_value = crate::artifacts::DEFAULT_BASE_URL)]
    pub k3s_mirror: String,
}

impl Default for K3sFlags {
    /// What clap gives when no flag is passed.
    fn default() -> Self {
        K3sFlags {
            k3s_source: vec!["download".to_string()],
            k3s_standin: false,
            k3s_mirror: crate::artifacts::DEFAULT_BASE_URL.to_string(),
        }
    }
}

impl K3sFlags {
    /// The k3s choice these flags make; a usage message when they do not fit together.
    pub fn choice(&self) -> Result<k3s::Choice, String> {
        k3s_choice(self)
    }
}

/// Parses `--k3s-source` values.
fn k3s_choice(args: &K3sFlags) -> Result<k3s::Choice, String> {
    let source = match args.k3s_source.as_slice() {
        [kind] if kind == "download" => k3s::Source::Download {
            base_url: args.k3s_mirror.clone(),
        },
        [kind, dir] if kind == "airgap" => k3s::Source::Airgap(PathBuf::from(dir)),
        [kind, path] if kind == "file" => k3s::Source::File(PathBuf::from(path)),
        other => {
            return Err(format!(
                "--k3s-source {}: use `download`, `airgap DIR` or `file PATH`",
                other.join(" ")
            ))
        }
    };
    if args.k3s_standin && !matches!(source, k3s::Source::File(_)) {
        return Err("--k3s-standin goes with --k3s-source file PATH".to_string());
    }
    Ok(k3s::Choice {
        source,
        standin: args.k3s_standin,
    })
}

pub fn run(args: Args) -> Result<(), super::Error> {
    match args.command {
        Command::Build(b) => build(b),
    }
}

/// The registry settings: `FLY_REGISTRY_HOST`, `FKS_REGISTRY_PLAIN_HTTP`, and as password the
/// same Fly token the API client uses, from the same sources (FLY_API_TOKEN, FLY_ACCESS_TOKEN,
/// flyctl's config file).
pub(super) fn registry_settings() -> Result<image::Settings, super::Error> {
    let token = super::credentials::token_from_env()
        .map_err(|e| super::Error::Usage(e.into()))?
        .map(|(token, _source)| token);
    image::Settings::from_values(
        std::env::var(image::registry::HOST_ENV).ok(),
        std::env::var(image::registry::PLAIN_HTTP_ENV).ok(),
        token,
    )
    .map_err(image_error)
}

/// What to build: this very binary, k3s as chosen, the default cache.
pub(super) fn build_request(k3s: k3s::Choice) -> Result<image::Request, super::Error> {
    let fks_bootstrap = std::env::current_exe()
        .context("finding the running fks-bootstrap binary")
        .map_err(super::Error::Failed)?;
    Ok(image::Request {
        fks_bootstrap,
        k3s,
        cache_dir: image::default_cache_dir().map_err(image_error)?,
    })
}

pub(super) fn image_error(e: image::Error) -> super::Error {
    if e.is_usage() {
        super::Error::Usage(e.into())
    } else {
        super::Error::Failed(e.into())
    }
}

fn build(args: BuildArgs) -> Result<(), super::Error> {
    let usage = |m: String| super::Error::Usage(anyhow::anyhow!(m));
    let choice = args.k3s.choice().map_err(usage)?;
    if let Some(tag) = &args.tag {
        image::check_tag(tag).map_err(image_error)?;
    }
    image::check_operator(std::env::consts::OS, std::env::consts::ARCH).map_err(image_error)?;
    let config = super::load_config(&args.cluster_dir)?;
    let settings = registry_settings()?;
    if args.push {
        settings.auth().map_err(image_error)?;
    }
    let request = build_request(choice)?;
    let rt = super::runtime()?;
    let client = image::registry::client(&settings);
    let started = std::time::Instant::now();
    let built = rt
        .block_on(image::build(&config, &request, &settings, &client))
        .map_err(image_error)?;
    let build_secs = started.elapsed().as_secs_f64();
    if let Some(k3s) = built.labels.get(image::LABEL_K3S) {
        if k3s.starts_with("stand-in") {
            eprintln!(
                "fks-bootstrap: WARNING: this image carries k3s-standin, a test double, NOT k3s"
            );
        }
    }
    eprintln!(
        "fks-bootstrap: built {} in {build_secs:.1}s (layout {}, base {}@{})",
        built.digest,
        built.layout.display(),
        built.base.reference.whole(),
        built.base.digest
    );
    let tag = args.tag.clone().unwrap_or_else(|| built.default_tag());
    let target = settings
        .cluster_reference(&config.cp_app(), &tag)
        .map_err(image_error)?;
    let mut pushed = None;
    if args.push {
        let started = std::time::Instant::now();
        let report = rt
            .block_on(image::push(
                &built,
                &target,
                &settings,
                &client,
                &request.cache_dir,
            ))
            .map_err(image_error)?;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "fks-bootstrap: pushed {} in {secs:.1}s: {} blob(s) uploaded ({} bytes), {} already there",
            target.whole(),
            report.uploaded_blobs,
            report.uploaded_bytes,
            report.skipped_blobs
        );
        pushed = Some((report, secs));
    }
    let pinned = format!(
        "{}/{}@{}",
        target.registry(),
        target.repository(),
        built.digest
    );
    let text = if args.json {
        let mut v = serde_json::json!({
            "digest": built.digest,
            "reference": target.whole(),
            "pinned": pinned,
            "layout": built.layout,
            "labels": built.labels,
            "base": {"reference": built.base.reference.whole(), "digest": built.base.digest},
            "build_seconds": build_secs,
            "pushed": false,
        });
        if let Some((report, secs)) = &pushed {
            v["pushed"] = serde_json::json!(true);
            v["push"] = serde_json::json!({
                "uploaded_blobs": report.uploaded_blobs,
                "uploaded_bytes": report.uploaded_bytes,
                "skipped_blobs": report.skipped_blobs,
                "seconds": secs,
            });
        }
        format!("{v}\n")
    } else if pushed.is_some() {
        format!("{pinned}\n")
    } else {
        format!("{}\n", built.digest)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing to stdout")
        .map_err(super::Error::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        b: BuildArgs,
    }

    fn parse(args: &[&str]) -> Result<k3s::Choice, String> {
        let t = T::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        t.b.k3s.choice()
    }

    #[test]
    fn k3s_flags_default_is_what_clap_gives_without_flags() {
        let t = T::try_parse_from(["x", "d"]).expect("parses");
        assert_eq!(t.b.k3s, K3sFlags::default());
    }

    #[test]
    fn k3s_source_forms() {
        assert!(matches!(
            parse(&["d"]).expect("default").source,
            k3s::Source::Download { .. }
        ));
        assert_eq!(
            parse(&["d", "--k3s-source", "airgap", "/a"])
                .expect("airgap")
                .source,
            k3s::Source::Airgap("/a".into())
        );
        let c = parse(&["d", "--k3s-source", "file", "/k", "--k3s-standin"]).expect("file");
        assert!(c.standin);
        assert!(parse(&["d", "--k3s-source", "airgap"]).is_err());
        assert!(parse(&["d", "--k3s-source", "elsewhere", "x"]).is_err());
        assert!(parse(&["d", "--k3s-standin"]).is_err());
    }
}
