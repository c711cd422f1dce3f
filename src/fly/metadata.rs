//! Machine metadata calls of [`Client`]: get all, get one, set one, delete one (reference
//! fly-machines-api.md §2.3). Metadata writes do not create a new Machine version (§8.17).
//!
//! Must not: put secrets in metadata; it is readable through DNS (`kv._metadata`).

use std::collections::BTreeMap;

use reqwest::Method;

use super::client::{Call, Client};
use super::error::Error;
use super::ratelimit::Action;
use super::retry::RetryClass;
use super::types::{MetadataValue, UpsertMetadataRequest};

impl Client {
    /// All metadata of a Machine.
    pub async fn get_metadata(
        &self,
        app: &str,
        id: &str,
    ) -> Result<BTreeMap<String, String>, Error> {
        let call = Call::new(
            format!("getting metadata of machine {id} in app {app}"),
            Method::GET,
            &["apps", app, "machines", id, "metadata"],
            Action::Metadata,
            id,
        );
        self.execute_json(&call).await
    }

    /// One metadata value, or `None` when the key is not set.
    pub async fn get_metadata_key(
        &self,
        app: &str,
        id: &str,
        key: &str,
    ) -> Result<Option<String>, Error> {
        let call = Call::new(
            format!("getting metadata {key} of machine {id} in app {app}"),
            Method::GET,
            &["apps", app, "machines", id, "metadata", key],
            Action::Metadata,
            id,
        );
        match self.execute_json::<MetadataValue>(&call).await {
            Ok(v) => Ok(Some(v.value)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets one key (an upsert, so retrying is harmless).
    pub async fn set_metadata(
        &self,
        app: &str,
        id: &str,
        key: &str,
        value: &str,
    ) -> Result<(), Error> {
        let call = Call::new(
            format!("setting metadata {key} of machine {id} in app {app}"),
            Method::POST,
            &["apps", app, "machines", id, "metadata", key],
            Action::Metadata,
            id,
        )
        .class(RetryClass::Idempotent)
        .json(&UpsertMetadataRequest {
            value: value.to_string(),
            updated_at: None,
        })?;
        self.execute(&call).await.map(|_| ())
    }

    /// Deletes one key. A 404 on a retry counts as done.
    pub async fn delete_metadata(&self, app: &str, id: &str, key: &str) -> Result<(), Error> {
        let call = Call::new(
            format!("deleting metadata {key} of machine {id} in app {app}"),
            Method::DELETE,
            &["apps", app, "machines", id, "metadata", key],
            Action::Metadata,
            id,
        );
        super::apps::deleted(self.execute(&call).await)
    }
}
