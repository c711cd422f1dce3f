//! Conformance: schemathesis runs Fly's OpenAPI document against the `fks-lab` binary, for
//! every operation the lab implements (lab/openapi/EXCLUSIONS.md lists what is excluded and why).
//! Skipped with a message when schemathesis is not installed, except under `CI=true`, where
//! that is a failure (install it with `scripts/setup.sh test`).

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const TOKEN: &str = "conformance-token";

/// Operations run in the first pass (everything implemented except deletes).
const OPERATIONS: &[&str] = &[
    "Apps_list",
    "Apps_create",
    "Apps_show",
    "Machines_list",
    "Machines_create",
    "Machines_show",
    "Machines_update",
    "Machines_cordon",
    "Machines_uncordon",
    "Machines_list_events",
    "Machines_exec",
    "Machines_show_lease",
    "Machines_create_lease",
    "Machines_release_lease",
    "Machines_show_metadata",
    "Machines_update_metadata",
    "Machines_get_metadata_key",
    "Machines_upsert_metadata",
    "Machines_delete_metadata",
    "Machines_restart",
    "Machines_signal",
    "Machines_start",
    "Machines_stop",
    "Machines_suspend",
    "Machines_wait",
    "Secrets_list",
    "Secrets_update",
    "Secret_get",
    "Secret_create",
    "Secret_delete",
    "Volumes_list",
    "Volumes_create",
    "Volumes_get_by_id",
    "Volumes_update",
    "Volumes_extend",
];

/// Destructive operations, run in a second pass so they do not starve the first of data.
const DESTRUCTIVE: &[&str] = &["Machines_delete", "Volume_delete", "Apps_delete"];

fn schemathesis_available() -> bool {
    Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn call(client: &reqwest::Client, url: String, body: Value) -> Value {
    let res = client
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("setup request");
    assert!(
        res.status().is_success(),
        "setup request failed: {}",
        res.status()
    );
    res.json().await.expect("setup body")
}

fn schemathesis(base: &str, config: &Path, ops: &[&str]) {
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/openapi/fly-machines-openapi.json"
    );
    let mut cmd = Command::new("schemathesis");
    // Run in the temp dir so schemathesis's own cache does not land in the source tree.
    cmd.current_dir(config.parent().expect("config lives in a temp dir"));
    cmd.arg("--config-file")
        .arg(config)
        .args(["run", spec, "--url", &format!("{base}/v1")]);
    cmd.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
    for op in ops {
        cmd.args(["--include-operation-id", op]);
    }
    cmd.args([
        "--max-examples",
        "20",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "2",
    ]);
    cmd.args(["--generation-deterministic", "--request-timeout", "70"]);
    cmd.args([
        "--exclude-checks",
        "status_code_conformance,positive_data_acceptance,negative_data_rejection",
    ]);
    let out = cmd.output().expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .rev()
        .take(25)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    println!("{}", summary.join("\n"));
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn lab_conforms_to_fly_openapi_document() {
    if !schemathesis_available() {
        let why = "schemathesis is not installed (python3 -m pip install schemathesis, or scripts/setup.sh test)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        println!("skipping the conformance run: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fks-lab"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "1",
            "--token",
            TOKEN,
            "--state-dir",
        ])
        .arg(dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fks-lab");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("env line");
    let base = line
        .trim()
        .strip_prefix("export FLY_API_HOSTNAME=")
        .expect("hostname line")
        .to_string();
    let client = reqwest::Client::new();
    call(
        &client,
        format!("{base}/v1/apps"),
        json!({"name": "conformance", "org_slug": "personal"}),
    )
    .await;
    let vol = call(
        &client,
        format!("{base}/v1/apps/conformance/volumes"),
        json!({"name": "data", "region": "sjc"}),
    )
    .await;
    let m = call(
        &client,
        format!("{base}/v1/apps/conformance/machines"),
        json!({"config": {"image": "ubuntu"}}),
    )
    .await;
    let config = dir.path().join("schemathesis.toml");
    let params = format!(
        "\"path.app_name\" = \"conformance\"\n\"path.machine_id\" = \"{}\"\n\"path.volume_id\" = \"{}\"\n",
        m["id"].as_str().expect("machine id"),
        vol["id"].as_str().expect("volume id"),
    );
    // Wait blocks up to its timeout when the state is not reached: pin it to 1 s so the run
    // stays short.
    let text = format!(
        "[parameters]\n{params}\n[[operations]]\ninclude-operation-id = \"Machines_wait\"\n[operations.parameters]\n{params}\"query.timeout\" = 1\n"
    );
    std::fs::write(&config, text).expect("write config");
    let first = std::panic::catch_unwind(|| schemathesis(&base, &config, OPERATIONS));
    let second = std::panic::catch_unwind(|| schemathesis(&base, &config, DESTRUCTIVE));
    child.kill().expect("stop the lab");
    child.wait().expect("reap the lab");
    if let Err(e) = first.and(second) {
        std::panic::resume_unwind(e);
    }
}
