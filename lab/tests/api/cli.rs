//! The `fks-lab` binary: `serve` prints eval-able lines and says it is API-only, `env` prints
//! them again, `stop` ends the server gracefully and the state survives.

use crate::util::TOKEN;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

fn lab(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fks-lab"))
        .args(args)
        .arg("--state-dir")
        .arg(dir)
        .output()
        .expect("run fks-lab")
}

#[tokio::test]
async fn serve_env_stop_round_trip_and_generated_token_is_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fks-lab"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--zones",
            "sjc=2",
            "--state-dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut host, mut token) = (String::new(), String::new());
    out.read_line(&mut host).expect("host line");
    out.read_line(&mut token).expect("token line");
    assert!(
        host.starts_with("export FLY_API_HOSTNAME=http://127.0.0.1:"),
        "{host}"
    );
    let token = token
        .trim()
        .strip_prefix("export FLY_API_TOKEN=")
        .expect("token line")
        .to_string();
    assert_eq!(token.len(), 32, "a token is generated when none is given");
    assert_ne!(token, TOKEN);

    // Then the settings the product takes from its environment, never from the lab itself.
    let (mut zones, mut machines_only) = (String::new(), String::new());
    out.read_line(&mut zones).expect("zones line");
    out.read_line(&mut machines_only)
        .expect("machines-only line");
    assert_eq!(zones, "export FKS_REGION_ZONES=sjc=2\n");
    assert_eq!(machines_only, "export FKS_MACHINES_ONLY=1\n", "API-only");

    let env = lab(&["env"], &dir);
    assert!(env.status.success());
    let env_text = String::from_utf8_lossy(&env.stdout);
    assert!(
        env_text.starts_with(&format!(
            "{host}export FLY_API_TOKEN={token}\n{zones}{machines_only}"
        )),
        "{env_text}"
    );
    // Fly's GraphQL base (WireGuard peers) is the same server.
    let base = host
        .trim()
        .strip_prefix("export FLY_API_HOSTNAME=")
        .expect("host");
    assert!(
        env_text.contains(&format!("export FLY_API_BASE_URL={base}\n")),
        "{env_text}"
    );
    // With Debian's docker-registry installed the lab's registry settings follow.
    if fks_lab::registry::available() {
        assert!(
            env_text.contains("export FLY_REGISTRY_HOST=127.0.0.1:")
                && env_text.ends_with("export FKS_REGISTRY_PLAIN_HTTP=1\n"),
            "{env_text}"
        );
    }

    let base = host
        .trim()
        .strip_prefix("export FLY_API_HOSTNAME=")
        .expect("host")
        .to_string();
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/apps"))
        .header("authorization", format!("FlyV1 {token}"))
        .json(&serde_json::json!({"name": "kept"}))
        .send()
        .await
        .expect("create app");
    assert_eq!(res.status(), 201);

    let stop = lab(&["stop"], &dir);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let status = child.wait().expect("reap");
    assert!(status.success(), "serve exits 0 after SIGTERM");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(stderr.contains("API-only mode"), "{stderr}");
    assert!(
        !lab(&["env"], &dir).status.success(),
        "env fails when no lab runs"
    );
    assert!(
        !lab(&["stop"], &dir).status.success(),
        "stop fails when no lab runs"
    );
    // The generated token and the state survive; the snapshot holds the app.
    let snapshot = std::fs::read_to_string(dir.join("state.json")).expect("snapshot");
    assert!(snapshot.contains("\"kept\""));
    assert_eq!(
        std::fs::read_to_string(dir.join("token"))
            .expect("token file")
            .trim(),
        token
    );
}

#[test]
fn bad_flags_fail_with_a_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = lab(
        &["serve", "--listen", "127.0.0.1:0", "--faults", "warp=9"],
        tmp.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown fault kind `warp`"));
    let out = lab(
        &["serve", "--listen", "127.0.0.1:0", "--zones", "sjc"],
        tmp.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad --zones entry `sjc`"));
}
