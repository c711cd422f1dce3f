//! Test helpers: start a lab in-process, send requests, restart on the same state dir.

use fks_lab::{Faults, Options, Timings};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

pub const TOKEN: &str = "test-token";

/// A running in-process lab.
pub struct Lab {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), fks_lab::Error>>>,
}

/// Options for a test lab: fast timings, fixed seed, two regions.
pub fn options(dir: PathBuf) -> Options {
    Options {
        state_dir: dir,
        zones: fks_lab::parse_zones("sjc=3,iad=2").expect("zones"),
        faults: Faults::default(),
        seed: 42,
        token: TOKEN.into(),
        guests: false,
        bridge: Default::default(),
        timings: Timings {
            launch: Duration::from_millis(10),
            boot: Duration::from_millis(20),
            stop: Duration::from_millis(10),
            destroy: Duration::from_millis(10),
        },
    }
}

impl Lab {
    /// Start with default test options.
    pub async fn start() -> Lab {
        Lab::start_with(|_| {}).await
    }

    /// Start with options changed by `f`, in a fresh temp dir.
    pub async fn start_with(f: impl FnOnce(&mut Options)) -> Lab {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut opts = options(tmp.path().to_path_buf());
        f(&mut opts);
        let mut lab = Lab::spawn(opts).await;
        lab._tmp = Some(tmp);
        lab
    }

    async fn spawn(opts: Options) -> Lab {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let dir = opts.state_dir.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(fks_lab::run(listener, opts, async move {
            let _ = rx.await;
        }));
        Lab {
            base,
            client: reqwest::Client::new(),
            dir,
            _tmp: None,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Shut down gracefully and start again on the same state dir.
    pub async fn restart(mut self) -> Lab {
        self.stop().await;
        let tmp = self._tmp.take();
        let mut lab = Lab::spawn(options(self.dir.clone())).await;
        lab._tmp = tmp;
        lab
    }

    /// Shut down gracefully.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("join").expect("lab run");
        }
    }

    /// Send a request with the test token; returns status and JSON (Null when empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(
            method,
            path,
            body,
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await
    }

    /// Send a request with explicit headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("send");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Create an app and assert it worked.
    pub async fn app(&self, name: &str) {
        let (s, b) = self
            .post("/v1/apps", json!({"name": name, "org_slug": "personal"}))
            .await;
        assert_eq!(s, 201, "{b}");
    }

    /// Create a machine and return its JSON.
    pub async fn machine(&self, app: &str, body: Value) -> Value {
        let (s, b) = self.post(&format!("/v1/apps/{app}/machines"), body).await;
        assert_eq!(s, 200, "{b}");
        b
    }

    /// Wait for a state and assert it was reached.
    pub async fn wait(&self, app: &str, id: &str, state: &str) {
        let (s, b) = self
            .get(&format!(
                "/v1/apps/{app}/machines/{id}/wait?state={state}&timeout=10"
            ))
            .await;
        assert_eq!(s, 200, "waiting for {state}: {b}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A minimal machine body.
pub fn machine_body() -> Value {
    json!({"config": {"image": "registry-1.docker.io/library/ubuntu:22.04"}})
}
