//! App secret calls of [`Client`]: set, list, delete (`/apps/{app}/secrets` in the OpenAPI
//! document). Machines see app secrets as env (unless `skip_secrets`) and as `files` with a
//! `secret_name`.
//!
//! Must not: log, print or return secret values; lists are requested without `show_secrets`.

use std::collections::BTreeMap;

use reqwest::Method;

use super::client::{Call, Client};
use super::error::Error;
use super::ratelimit::Action;
use super::retry::RetryClass;
use super::types::{
    AppSecret, AppSecrets, AppSecretsUpdateRequest, AppSecretsUpdateResponse,
    DeleteAppSecretResponse, SecretString, SetAppSecretRequest, SetAppSecretResponse,
};

impl Client {
    /// Sets (creates or replaces) one secret. Setting the same value twice is harmless, so
    /// the call is retried like an idempotent one. The answer's `version` is the app's secrets
    /// version, usable as `min_secrets_version` on a Machine create.
    pub async fn set_secret(
        &self,
        app: &str,
        name: &str,
        value: &SecretString,
    ) -> Result<SetAppSecretResponse, Error> {
        let call = Call::new(
            format!("setting secret {name} of app {app}"),
            Method::POST,
            &["apps", app, "secrets", name],
            Action::Secrets,
            app,
        )
        .class(RetryClass::Idempotent)
        .json(&SetAppSecretRequest {
            value: value.clone(),
        })?;
        self.execute_json(&call).await
    }

    /// Sets (Some) or unsets (None) several secrets in one call.
    pub async fn update_secrets(
        &self,
        app: &str,
        values: BTreeMap<String, Option<SecretString>>,
    ) -> Result<AppSecretsUpdateResponse, Error> {
        let call = Call::new(
            format!("updating secrets of app {app}"),
            Method::POST,
            &["apps", app, "secrets"],
            Action::Secrets,
            app,
        )
        .class(RetryClass::Idempotent)
        .json(&AppSecretsUpdateRequest { values })?;
        let mut resp: AppSecretsUpdateResponse = self.execute_json(&call).await?;
        for s in &mut resp.secrets {
            s.value = None;
        }
        Ok(resp)
    }

    /// Lists an app's secrets: names and digests, never values.
    pub async fn list_secrets(&self, app: &str) -> Result<Vec<AppSecret>, Error> {
        let call = Call::new(
            format!("listing secrets of app {app}"),
            Method::GET,
            &["apps", app, "secrets"],
            Action::Secrets,
            app,
        );
        let resp: AppSecrets = self.execute_json(&call).await?;
        Ok(resp
            .secrets
            .into_iter()
            .map(|s| AppSecret { value: None, ..s })
            .collect())
    }

    /// Deletes one secret. A 404 on a retry counts as done.
    pub async fn delete_secret(
        &self,
        app: &str,
        name: &str,
    ) -> Result<DeleteAppSecretResponse, Error> {
        let call = Call::new(
            format!("deleting secret {name} of app {app}"),
            Method::DELETE,
            &["apps", app, "secrets", name],
            Action::Secrets,
            app,
        );
        match self.execute(&call).await {
            Ok(reply) if reply.body.iter().all(u8::is_ascii_whitespace) => {
                Ok(DeleteAppSecretResponse::default())
            }
            Ok(reply) => reply.decode(&call.op),
            Err(e) if e.is_not_found() && e.api().is_some_and(|a| a.attempts > 1) => {
                Ok(DeleteAppSecretResponse::default())
            }
            Err(e) => Err(e),
        }
    }
}
