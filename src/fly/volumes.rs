//! Volume calls of [`Client`]: create, list, get, update, delete, extend (reference
//! fly-machines-api.md §2.2).
//!
//! Must not: create a second volume after an ambiguous create that did make one; the rule is
//! in `retry.rs` ([`super::retry::after_ambiguous_volume_create`]).

use std::collections::BTreeSet;

use reqwest::Method;

use super::apps::deleted;
use super::client::{Call, Client};
use super::error::Error;
use super::ratelimit::Action;
use super::retry::{after_ambiguous_volume_create, RetryClass, VolumeDecision};
use super::types::{
    CreateVolumeRequest, ExtendVolumeRequest, ExtendVolumeResponse, UpdateVolumeRequest, Volume,
};

impl Client {
    /// Creates a volume. `before` holds the ids of the app's volumes that existed before this
    /// create (the caller's last list). After an ambiguous failure the client lists the volumes
    /// and adopts the single new one with the same name (and region, when given), re-creates
    /// when there is none, and refuses ([`Error::AmbiguousVolume`]) when there are several.
    /// For this to be exact, no two creates of the same name may run at once in one app.
    pub async fn create_volume(
        &self,
        app: &str,
        req: &CreateVolumeRequest,
        before: &BTreeSet<String>,
    ) -> Result<Volume, Error> {
        let op = format!("creating volume {} in app {app}", req.name);
        let call = Call::new(
            op.clone(),
            Method::POST,
            &["apps", app, "volumes"],
            Action::CreateVolume,
            app,
        )
        .json(req)?;
        let mut recoveries = 0;
        loop {
            match self.execute_json(&call).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_ambiguous() && recoveries < self.options().max_create_recoveries => {
                    recoveries += 1;
                    tracing::warn!(%app, volume = %req.name, error = %e, "volume create was ambiguous; listing volumes before retrying");
                    tokio::time::sleep(self.options().create_settle).await;
                    let listed = self.list_volumes(app).await?;
                    match after_ambiguous_volume_create(req, before, listed) {
                        VolumeDecision::Adopt(v) => {
                            tracing::info!(%app, volume = %v.id, "adopted the volume the ambiguous create made");
                            return Ok(*v);
                        }
                        VolumeDecision::Recreate => continue,
                        VolumeDecision::Ambiguous(ids) => {
                            return Err(Error::AmbiguousVolume {
                                op,
                                name: req.name.clone(),
                                ids,
                            })
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Lists an app's volumes, including ones on their way out (check
    /// [`super::types::VolumeState::is_being_destroyed`]).
    pub async fn list_volumes(&self, app: &str) -> Result<Vec<Volume>, Error> {
        let call = Call::new(
            format!("listing volumes of app {app}"),
            Method::GET,
            &["apps", app, "volumes"],
            Action::ListVolumes,
            app,
        );
        self.execute_json(&call).await
    }

    /// Gets one volume.
    pub async fn get_volume(&self, app: &str, volume: &str) -> Result<Volume, Error> {
        let call = Call::new(
            format!("getting volume {volume} in app {app}"),
            Method::GET,
            &["apps", app, "volumes", volume],
            Action::GetVolume,
            app,
        );
        self.execute_json(&call).await
    }

    /// Changes snapshot settings (PUT; the 2024 spec's POST is stale, §8.1).
    pub async fn update_volume(
        &self,
        app: &str,
        volume: &str,
        req: &UpdateVolumeRequest,
    ) -> Result<Volume, Error> {
        let call = Call::new(
            format!("updating volume {volume} in app {app}"),
            Method::PUT,
            &["apps", app, "volumes", volume],
            Action::UpdateVolume,
            app,
        )
        .json(req)?;
        self.execute_json(&call).await
    }

    /// Deletes a volume (soft: it sits in `pending_destroy` for 24 h). An attached volume
    /// cannot be deleted: destroy its Machine first. A 404 on a retry counts as done.
    pub async fn delete_volume(&self, app: &str, volume: &str) -> Result<(), Error> {
        let call = Call::new(
            format!("deleting volume {volume} in app {app}"),
            Method::DELETE,
            &["apps", app, "volumes", volume],
            Action::DeleteVolume,
            app,
        );
        deleted(self.execute(&call).await)
    }

    /// Grows a volume to `size_gb` in total. Growing to the same size again is harmless, so
    /// the call is retried like an idempotent one.
    pub async fn extend_volume(
        &self,
        app: &str,
        volume: &str,
        size_gb: u64,
    ) -> Result<ExtendVolumeResponse, Error> {
        let call = Call::new(
            format!("extending volume {volume} in app {app} to {size_gb} GB"),
            Method::PUT,
            &["apps", app, "volumes", volume, "extend"],
            Action::ExtendVolume,
            app,
        )
        .class(RetryClass::Idempotent)
        .json(&ExtendVolumeRequest { size_gb })?;
        self.execute_json(&call).await
    }
}
