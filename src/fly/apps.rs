//! App calls of [`Client`]: create, get, list, delete (reference fly-machines-api.md §2.1).
//! A create returns only once the new app answers a GET, as flyctl waits for it (reference
//! fly-runtime.md §6): the calls that follow (volumes, secrets) would otherwise 404.
//!
//! Must not: retry a create blindly; an ambiguous create is resolved by looking the name up.

use std::time::Duration;

use reqwest::Method;

use super::client::{Call, Client};
use super::error::Error;
use super::ratelimit::Action;
use super::types::{App, AppOrganization, CreateAppRequest, ListAppsResponse};

impl Client {
    /// Creates an app. The answer's body varies between Fly versions (none, `{id, created_at}`
    /// or an App), so missing fields are filled from the request. After an ambiguous failure
    /// (408/5xx/lost connection) the name is looked up: app names are global and a name this
    /// token can read (200, not 403) belongs to the caller's organization, so it is adopted.
    /// Then waits until the app is usable ([`Client::wait_for_app`]).
    pub async fn create_app(&self, req: &CreateAppRequest) -> Result<App, Error> {
        let app = self.post_app(req).await?;
        self.wait_for_app(&app.name).await?;
        Ok(app)
    }

    /// Waits until a new app answers `GET /v1/apps/{app}`. Fly's API is eventually consistent:
    /// right after the create, the app may answer 404, or 401 while the token's view of the
    /// organization catches up. flyctl's `WaitForApp` retries exactly those for up to 1 min
    /// (reference fly-runtime.md §6), with fly-go's backoff (100 ms doubling, capped here at
    /// 1 s; fly-machines-api.md §5). Other errors end the wait at once.
    pub async fn wait_for_app(&self, app: &str) -> Result<App, Error> {
        let deadline = tokio::time::Instant::now() + self.options().app_wait;
        let mut delay = Duration::from_millis(100);
        loop {
            match self.get_app(app).await {
                Ok(found) => return Ok(found),
                Err(e)
                    if matches!(e.status_code(), Some(404 | 401))
                        && tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::debug!(%app, error = %e, "new app not usable yet; waiting");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `POST /v1/apps`, with the ambiguous-create recovery of [`Client::create_app`].
    async fn post_app(&self, req: &CreateAppRequest) -> Result<App, Error> {
        let name = req.app_name().unwrap_or_default().to_string();
        let op = format!("creating app {name}");
        let call = Call::new(
            op.clone(),
            Method::POST,
            &["apps"],
            Action::CreateApp,
            "org",
        )
        .json(req)?;
        let mut recoveries = 0;
        loop {
            match self.execute(&call).await {
                Ok(reply) => {
                    let mut app: App = if reply.body.iter().all(u8::is_ascii_whitespace) {
                        App::default()
                    } else {
                        reply.decode(&op)?
                    };
                    if app.name.is_empty() {
                        app.name = name.clone();
                    }
                    if app.organization.is_none() {
                        app.organization = req.org_slug.as_ref().map(|slug| AppOrganization {
                            slug: slug.clone(),
                            ..AppOrganization::default()
                        });
                    }
                    if app.network.is_none() {
                        app.network = req.network.clone();
                    }
                    return Ok(app);
                }
                Err(e) if e.is_ambiguous() && recoveries < self.options().max_create_recoveries => {
                    recoveries += 1;
                    tracing::warn!(app = %name, error = %e, "app create was ambiguous; looking the name up before retrying");
                    tokio::time::sleep(self.options().create_settle).await;
                    match self.get_app(&name).await {
                        Ok(app) => return Ok(app),
                        Err(lookup) if lookup.is_not_found() => continue,
                        Err(lookup) => return Err(lookup),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Gets an app by name. 404: no such app anywhere; 403: another organization owns it.
    pub async fn get_app(&self, app: &str) -> Result<App, Error> {
        let call = Call::new(
            format!("getting app {app}"),
            Method::GET,
            &["apps", app],
            Action::GetApp,
            app,
        );
        self.execute_json(&call).await
    }

    /// Lists the apps of an organization (`personal` works).
    pub async fn list_apps(&self, org_slug: &str) -> Result<ListAppsResponse, Error> {
        let call = Call::new(
            format!("listing apps of organization {org_slug}"),
            Method::GET,
            &["apps"],
            Action::ListApps,
            org_slug,
        )
        .query("org_slug", org_slug);
        self.execute_json(&call).await
    }

    /// Deletes an app. With `force`, its Machines are stopped and deleted too; without it they
    /// must be stopped first. A 404 on a retry means the first attempt did it: success.
    pub async fn delete_app(&self, app: &str, force: bool) -> Result<(), Error> {
        let mut call = Call::new(
            format!("deleting app {app}"),
            Method::DELETE,
            &["apps", app],
            Action::DeleteApp,
            "org",
        );
        if force {
            call = call.query("force", "true");
        }
        deleted(self.execute(&call).await)
    }
}

/// Maps the result of a DELETE: a 404 after more than one attempt means an earlier attempt
/// succeeded but its answer was lost.
pub(crate) fn deleted(result: Result<super::client::Reply, Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() && e.api().is_some_and(|a| a.attempts > 1) => Ok(()),
        Err(e) => Err(e),
    }
}
