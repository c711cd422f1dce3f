//! Tests of `fetch_k3s`: downloads from a tiny HTTP server started on 127.0.0.1:0 in the test
//! (the network edge), and local sources in temp dirs.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;

const VERSION: &str = "v1.31.3+k3s1";
const BLOB: &[u8] = b"\x7fELF fake k3s binary for tests";
const AIRGAP: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// A static HTTP/1.1 server: path → (status, body); records every request path.
struct Server {
    base: String,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(routes: Vec<(String, u16, Vec<u8>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let routes: Arc<HashMap<String, (u16, Vec<u8>)>> = Arc::new(
            routes
                .into_iter()
                .map(|(path, status, body)| (path, (status, body)))
                .collect(),
        );
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (routes, seen) = (routes.clone(), seen.clone());
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let Ok(Some(request)) = lines.next_line().await else {
                        return;
                    };
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.is_empty() {
                            break;
                        }
                    }
                    let path = request.split(' ').nth(1).unwrap_or("").to_string();
                    seen.lock().expect("lock").push(path.clone());
                    let (status, body) = routes
                        .get(&path)
                        .cloned()
                        .unwrap_or((404, b"Not Found".to_vec()));
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = write.write_all(head.as_bytes()).await;
                    let _ = write.write_all(&body).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        Server { base, hits }
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().expect("lock").clone()
    }

    fn source(&self) -> Source {
        Source::Download {
            base_url: self.base.clone(),
        }
    }
}

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A sums file laid out like a release's: the airgap tarballs, then the binary.
fn sums_for(binary_line: &str) -> Vec<u8> {
    format!(
        "{AIRGAP}  k3s-airgap-images-amd64.tar\n{AIRGAP}  k3s-airgap-images-amd64.tar.gz\n\
         {AIRGAP}  k3s-airgap-images-amd64.tar.zst\n{binary_line}\n"
    )
    .into_bytes()
}

fn release(sums: Vec<u8>) -> Vec<(String, u16, Vec<u8>)> {
    vec![
        (format!("/{VERSION}/sha256sum-amd64.txt"), 200, sums),
        (format!("/{VERSION}/k3s"), 200, BLOB.to_vec()),
    ]
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[tokio::test]
async fn download_verifies_caches_and_reuses_without_network() {
    let server = Server::start(release(sums_for(&format!("{}  k3s", sha(BLOB))))).await;
    let cache = tempfile::tempdir().expect("tmp");

    let first = fetch_k3s(VERSION, Arch::Amd64, cache.path(), &server.source())
        .await
        .expect("fetch");
    let want = cache.path().join(VERSION).join("k3s");
    assert_eq!(first.path, want);
    assert_eq!(first.sha256, sha(BLOB));
    assert_eq!(
        first.origin,
        Origin::Downloaded {
            url: format!("{}/{VERSION}/k3s", server.base)
        }
    );
    assert_eq!(fs::read(&want).expect("cached"), BLOB);
    assert_eq!(mode(&want), 0o755);
    // The `+` of the tag reaches the server literally, as install.sh sends it.
    assert_eq!(
        server.hits(),
        [
            format!("/{VERSION}/sha256sum-amd64.txt"),
            format!("/{VERSION}/k3s")
        ]
    );

    let second = fetch_k3s(VERSION, Arch::Amd64, cache.path(), &server.source())
        .await
        .expect("cached fetch");
    assert_eq!(second.origin, Origin::Cached);
    assert_eq!(second.path, want);
    assert_eq!(second.sha256, sha(BLOB));
    assert_eq!(server.hits().len(), 2, "a cached binary needs no request");
}

#[tokio::test]
async fn corrupted_cache_entry_is_downloaded_again() {
    let server = Server::start(release(sums_for(&format!("{}  k3s", sha(BLOB))))).await;
    let cache = tempfile::tempdir().expect("tmp");
    fetch_k3s(VERSION, Arch::Amd64, cache.path(), &server.source())
        .await
        .expect("fetch");
    let cached = cache.path().join(VERSION).join("k3s");
    fs::write(&cached, b"bit rot").expect("corrupt");

    let again = fetch_k3s(VERSION, Arch::Amd64, cache.path(), &server.source())
        .await
        .expect("refetch");
    assert!(matches!(again.origin, Origin::Downloaded { .. }));
    assert_eq!(fs::read(&cached).expect("cached"), BLOB);
    assert_eq!(server.hits().len(), 4);
}

#[tokio::test]
async fn hash_mismatch_names_both_hashes_and_leaves_nothing_cached() {
    let wrong = "ab".repeat(32);
    let server = Server::start(release(sums_for(&format!("{wrong}  k3s")))).await;
    let cache = tempfile::tempdir().expect("tmp");

    let err = fetch_k3s(VERSION, Arch::Amd64, cache.path(), &server.source())
        .await
        .expect_err("mismatch");
    let Error::Mismatch {
        from,
        expected,
        actual,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(from, &format!("{}/{VERSION}/k3s", server.base));
    assert_eq!(expected, &wrong);
    assert_eq!(actual, &sha(BLOB));
    let shown = err.to_string();
    assert!(
        shown.contains(&wrong) && shown.contains(&sha(BLOB)),
        "{shown}"
    );
    assert_eq!(files_under(cache.path()), Vec::<String>::new());
    assert!(!cache.path().join(VERSION).exists());
}

#[tokio::test]
async fn missing_asset_line_fails_before_downloading_the_binary() {
    // Only an arm64 line: `k3s-arm64` must not be taken for `k3s`.
    let server = Server::start(release(sums_for(&format!("{}  k3s-arm64", sha(BLOB))))).await;
    let cache = tempfile::tempdir().expect("tmp");
    let err = fetch_k3s(VERSION, Arch::Amd64, cache.path(), &server.source())
        .await
        .expect_err("no line");
    assert!(
        matches!(&err, Error::MissingAsset { asset, .. } if asset == "k3s"),
        "{err:?}"
    );
    assert!(err.to_string().contains("sha256sum-amd64.txt"), "{err}");
    assert_eq!(server.hits().len(), 1);
    assert_eq!(files_under(cache.path()), Vec::<String>::new());
}

#[tokio::test]
async fn missing_release_is_an_http_status_error_naming_the_url() {
    let server = Server::start(vec![]).await;
    let cache = tempfile::tempdir().expect("tmp");
    let err = fetch_k3s(VERSION, Arch::Arm64, cache.path(), &server.source())
        .await
        .expect_err("404");
    assert!(
        matches!(&err, Error::HttpStatus { status: 404, url } if url.ends_with("/sha256sum-arm64.txt")),
        "{err:?}"
    );
    assert_eq!(files_under(cache.path()), Vec::<String>::new());
}

#[tokio::test]
async fn local_dir_with_sums_is_verified_and_cached() {
    let airgap = tempfile::tempdir().expect("airgap");
    let cache = tempfile::tempdir().expect("cache");
    fs::write(airgap.path().join("k3s-arm64"), BLOB).expect("bin");
    fs::write(
        airgap.path().join("sha256sum-arm64.txt"),
        format!("{}  k3s-arm64\n", sha(BLOB)),
    )
    .expect("sums");

    let source = Source::LocalDir(airgap.path().to_path_buf());
    let got = fetch_k3s(VERSION, Arch::Arm64, cache.path(), &source)
        .await
        .expect("local dir");
    assert_eq!(got.path, cache.path().join(VERSION).join("k3s-arm64"));
    assert_eq!(
        got.origin,
        Origin::Local {
            path: airgap.path().join("k3s-arm64"),
            verified: true
        }
    );
    assert_eq!(fs::read(&got.path).expect("cached"), BLOB);
    assert_eq!(mode(&got.path), 0o755);

    // A later download of the same version reuses it without asking the (absent) server.
    let nowhere = Source::Download {
        base_url: "http://127.0.0.1:9".to_string(),
    };
    let reused = fetch_k3s(VERSION, Arch::Arm64, cache.path(), &nowhere)
        .await
        .expect("reuse");
    assert_eq!(reused.origin, Origin::Cached);
}

#[tokio::test]
async fn local_dir_with_wrong_hash_is_refused_and_not_cached() {
    let airgap = tempfile::tempdir().expect("airgap");
    let cache = tempfile::tempdir().expect("cache");
    fs::write(airgap.path().join("k3s"), BLOB).expect("bin");
    let wrong = "cd".repeat(32);
    fs::write(
        airgap.path().join("sha256sum-amd64.txt"),
        format!("{wrong}  k3s\n"),
    )
    .expect("sums");
    let source = Source::LocalDir(airgap.path().to_path_buf());
    let err = fetch_k3s(VERSION, Arch::Amd64, cache.path(), &source)
        .await
        .expect_err("mismatch");
    assert!(
        matches!(&err, Error::Mismatch { from, .. } if from.ends_with("/k3s")),
        "{err:?}"
    );
    assert_eq!(files_under(cache.path()), Vec::<String>::new());
}

#[tokio::test]
async fn lone_local_file_is_used_unverified() {
    let dir = tempfile::tempdir().expect("dir");
    let cache = tempfile::tempdir().expect("cache");
    let file = dir.path().join("my-k3s");
    fs::write(&file, BLOB).expect("bin");
    let source = Source::LocalFile(file.clone());
    let got = fetch_k3s(VERSION, Arch::Amd64, cache.path(), &source)
        .await
        .expect("lone file");
    assert_eq!(
        got.origin,
        Origin::Local {
            path: file,
            verified: false
        }
    );
    assert_eq!(got.sha256, sha(BLOB));
    assert_eq!(fs::read(&got.path).expect("cached"), BLOB);
    // No checksum file lands in the cache, so a later download does not trust this copy.
    assert!(!cache
        .path()
        .join(VERSION)
        .join("sha256sum-amd64.txt")
        .exists());
}

#[tokio::test]
async fn local_file_next_to_sums_without_its_name_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let cache = tempfile::tempdir().expect("cache");
    let file = dir.path().join("my-k3s");
    fs::write(&file, BLOB).expect("bin");
    fs::write(
        dir.path().join("sha256sum-amd64.txt"),
        format!("{}  k3s\n", sha(BLOB)),
    )
    .expect("sums");
    let err = fetch_k3s(VERSION, Arch::Amd64, cache.path(), &Source::LocalFile(file))
        .await
        .expect_err("no line for my-k3s");
    assert!(
        matches!(&err, Error::MissingAsset { asset, .. } if asset == "my-k3s"),
        "{err:?}"
    );
    assert_eq!(files_under(cache.path()), Vec::<String>::new());
}
