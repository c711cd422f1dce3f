//! Machine calls of [`Client`]: create (with ambiguous-create recovery), get, list, update,
//! start, stop, destroy, wait, exec (reference fly-machines-api.md §2.3, §3, §8).
//!
//! Must not: replay a create without first looking for the Machine it may have made.

use std::time::Duration;

use reqwest::Method;
use tokio::time::Instant;

use super::apps::deleted;
use super::client::{Call, Client};
use super::error::Error;
use super::ratelimit::Action;
use super::retry::{after_ambiguous_machine_create, CreateDecision, RetryClass, LAUNCH_ID_KEY};
use super::types::{
    CreateMachineRequest, ExecRequest, Machine, MachineListFilter, MachineState, StartResponse,
    StopRequest, UpdateMachineRequest, WaitResponse,
};

/// The longest a single wait call may block (reference §2.3.1).
const MAX_WAIT_CALL: u64 = 60;

/// How long a wait keeps retrying 404s ("not visible yet" right after a create).
const WAIT_NOT_FOUND_GRACE: Duration = Duration::from_secs(30);

impl Client {
    /// Creates a Machine and returns it (usually still `created`; follow with [`Client::wait`]).
    ///
    /// Idempotency (reference §5, §8.9): `config.metadata.fks_launch_id` is set to a fresh
    /// UUID unless the caller set it. When the create is ambiguous (408, 5xx, connection lost
    /// after sending), the client waits [`super::Options::create_settle`], lists the app's
    /// Machines filtered by that metadata, adopts the Machine found, and re-creates only when
    /// none exists, so it never duplicates a Machine.
    pub async fn create_machine(
        &self,
        app: &str,
        mut req: CreateMachineRequest,
    ) -> Result<Machine, Error> {
        let launch_id = req
            .config
            .metadata
            .entry(LAUNCH_ID_KEY.to_string())
            .or_insert_with(|| self.new_launch_id())
            .clone();
        let op = format!(
            "creating machine {} in app {app}",
            req.name.as_deref().unwrap_or("(unnamed)")
        );
        let call = Call::new(
            op.clone(),
            Method::POST,
            &["apps", app, "machines"],
            Action::CreateMachine,
            app,
        )
        .json(&req)?;
        let mut recoveries = 0;
        loop {
            match self.execute_json(&call).await {
                Ok(m) => return Ok(m),
                Err(e) if e.is_ambiguous() && recoveries < self.options().max_create_recoveries => {
                    recoveries += 1;
                    tracing::warn!(%app, %launch_id, error = %e, "machine create was ambiguous; looking for it before retrying");
                    tokio::time::sleep(self.options().create_settle).await;
                    let listed = self
                        .list_machines(app, &MachineListFilter::metadata(LAUNCH_ID_KEY, &launch_id))
                        .await?;
                    match after_ambiguous_machine_create(&launch_id, listed) {
                        CreateDecision::Adopt(m) => {
                            tracing::info!(%app, machine = %m.id, %launch_id, "adopted the machine the ambiguous create made");
                            return Ok(m);
                        }
                        CreateDecision::Recreate => {
                            tracing::info!(%app, %launch_id, "the ambiguous create made nothing; creating again");
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Gets a Machine.
    pub async fn get_machine(&self, app: &str, id: &str) -> Result<Machine, Error> {
        let call = Call::new(
            format!("getting machine {id} in app {app}"),
            Method::GET,
            &["apps", app, "machines", id],
            Action::GetMachine,
            id,
        );
        self.execute_json(&call).await
    }

    /// Lists an app's Machines with filters (region, states, `metadata.<k>=<v>`, ...).
    pub async fn list_machines(
        &self,
        app: &str,
        filter: &MachineListFilter,
    ) -> Result<Vec<Machine>, Error> {
        let mut call = Call::new(
            format!("listing machines of app {app}"),
            Method::GET,
            &["apps", app, "machines"],
            Action::ListMachines,
            app,
        );
        call.query = filter.query_pairs();
        self.execute_json(&call).await
    }

    /// Replaces a Machine's whole config (there is no patch, §8.6): GET it, change the config,
    /// send it back. A running Machine reboots and gets a new `instance_id`. Retried like an
    /// idempotent call: applying the same config twice ends in the same config (set
    /// `current_version` to make a replay fail instead).
    pub async fn update_machine(
        &self,
        app: &str,
        id: &str,
        req: &UpdateMachineRequest,
        nonce: Option<&str>,
    ) -> Result<Machine, Error> {
        let call = Call::new(
            format!("updating machine {id} in app {app}"),
            Method::POST,
            &["apps", app, "machines", id],
            Action::UpdateMachine,
            id,
        )
        .class(RetryClass::Idempotent)
        .nonce(nonce)
        .json(req)?;
        self.execute_json(&call).await
    }

    /// Starts a Machine.
    pub async fn start_machine(
        &self,
        app: &str,
        id: &str,
        nonce: Option<&str>,
    ) -> Result<StartResponse, Error> {
        let call = Call::new(
            format!("starting machine {id} in app {app}"),
            Method::POST,
            &["apps", app, "machines", id, "start"],
            Action::StartMachine,
            id,
        )
        .class(RetryClass::Idempotent)
        .nonce(nonce);
        let reply = self.execute(&call).await?;
        if reply.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(StartResponse::default());
        }
        reply.decode(&call.op)
    }

    /// Stops a Machine (signal and grace period optional; Fly defaults to `stop_config`).
    pub async fn stop_machine(
        &self,
        app: &str,
        id: &str,
        req: &StopRequest,
        nonce: Option<&str>,
    ) -> Result<(), Error> {
        let call = Call::new(
            format!("stopping machine {id} in app {app}"),
            Method::POST,
            &["apps", app, "machines", id, "stop"],
            Action::StopMachine,
            id,
        )
        .class(RetryClass::Idempotent)
        .nonce(nonce)
        .json(req)?;
        self.execute(&call).await.map(|_| ())
    }

    /// Destroys a Machine with `force=true` (the documented form, §8.3), so a started Machine
    /// is killed too. A 404 on a retry counts as done.
    pub async fn destroy_machine(
        &self,
        app: &str,
        id: &str,
        nonce: Option<&str>,
    ) -> Result<(), Error> {
        let call = Call::new(
            format!("destroying machine {id} in app {app}"),
            Method::DELETE,
            &["apps", app, "machines", id],
            Action::DestroyMachine,
            id,
        )
        .query("force", "true")
        .nonce(nonce);
        deleted(self.execute(&call).await)
    }

    /// Waits until Machine `id` is in `state` (optionally: at `version`), until `deadline`.
    /// Each call blocks at most 60 s on the server, so this loops (reference §2.3.1, §8.5):
    /// a 408 is the normal end of one call; a 404 is "not visible yet" for a short while after
    /// a create, and success when waiting for `destroyed`; 429/5xx/transport errors are
    /// retried. When the deadline passes, [`Error::WaitTimeout`] names the Machine, the wanted
    /// state and the last state seen.
    pub async fn wait(
        &self,
        app: &str,
        id: &str,
        state: MachineState,
        version: Option<&str>,
        deadline: Instant,
    ) -> Result<WaitResponse, Error> {
        let started = Instant::now();
        let op = format!("waiting for machine {id} in app {app} to be {state}");
        let mut last: Option<MachineState> = None;
        loop {
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            if remaining.is_zero() {
                break;
            }
            let secs = remaining.as_secs().clamp(1, MAX_WAIT_CALL);
            let mut call = Call::new(
                op.clone(),
                Method::GET,
                &["apps", app, "machines", id, "wait"],
                Action::WaitMachine,
                id,
            )
            .class(RetryClass::Wait)
            .query("state", state.as_str())
            .query("timeout", secs.to_string())
            .timeout(Duration::from_secs(secs + 15));
            if let Some(v) = version {
                call = call.query("version", v).query("instance_id", v);
            }
            match self.execute_json::<WaitResponse>(&call).await {
                Ok(w) => return Ok(w),
                Err(e) if e.status_code() == Some(408) => {
                    if let Some(s) = e.api().and_then(|a| currently(a.body.text())) {
                        last = Some(s);
                    }
                }
                Err(e) if e.is_not_found() && state == MachineState::Destroyed => {
                    return Ok(WaitResponse {
                        ok: true,
                        state: Some(MachineState::Destroyed),
                        ..WaitResponse::default()
                    });
                }
                Err(e) if e.is_not_found() && started.elapsed() < WAIT_NOT_FOUND_GRACE => {}
                Err(e) if e.is_retryable() => {
                    tracing::debug!(%app, machine = %id, error = %e, "wait call failed; trying again");
                }
                Err(e) => return Err(e),
            }
            // A call that came back early (a 404, an error, a quick 408) must not spin.
            if now.elapsed() < Duration::from_secs(1) {
                let pause = Duration::from_millis(500)
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
        if last.is_none() {
            last = self.get_machine(app, id).await.ok().map(|m| m.state);
        }
        Err(Error::WaitTimeout {
            app: app.to_string(),
            machine: id.to_string(),
            want: state,
            last,
            waited: started.elapsed(),
        })
    }

    /// Runs a command in a started Machine and returns its output. Not retried after it may
    /// have been sent: running a command twice is not harmless.
    pub async fn exec(
        &self,
        app: &str,
        id: &str,
        req: &ExecRequest,
    ) -> Result<super::types::ExecResponse, Error> {
        let program = req
            .command
            .first()
            .map(String::as_str)
            .or(req.cmd.as_deref())
            .unwrap_or("");
        let mut call = Call::new(
            format!("running {program} in machine {id} of app {app}"),
            Method::POST,
            &["apps", app, "machines", id, "exec"],
            Action::ExecMachine,
            id,
        )
        .json(req)?;
        let limit = req.timeout.unwrap_or(30) + 30;
        call = call.timeout(Duration::from_secs(limit));
        self.execute_json(&call).await
    }
}

/// Reads the state out of a wait timeout text such as
/// `deadline_exceeded: machine failed to reach desired state, started, currently stopped`.
fn currently(text: &str) -> Option<MachineState> {
    let rest = text.split("currently ").nth(1)?;
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then(|| MachineState::from(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_timeout_text_yields_current_state() {
        assert_eq!(
            currently("deadline_exceeded: machine failed to reach desired state, started, currently stopped"),
            Some(MachineState::Stopped)
        );
        assert_eq!(currently("deadline_exceeded"), None);
        assert_eq!(currently("currently "), None);
    }
}
