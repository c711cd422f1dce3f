//! App secret bodies (`/apps/{app}/secrets` in the OpenAPI document). Values are
//! [`SecretString`]s so they cannot be printed. Pure serde types.

use super::*;

/// An app secret as listed. A list never carries values; `value` is only filled by a get with
/// `show_secrets`, and is a [`SecretString`] so it cannot be printed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppSecret {
    /// Secret name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Digest of the value.
    #[serde(default, deserialize_with = "null_default")]
    pub digest: String,
    /// RFC3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The value, only when explicitly asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<SecretString>,
}

/// `GET /apps/{app}/secrets` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppSecrets {
    /// The secrets, without values.
    #[serde(default, deserialize_with = "null_default")]
    pub secrets: Vec<AppSecret>,
}

/// `POST /apps/{app}/secrets/{name}` body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SetAppSecretRequest {
    /// The value.
    #[serde(default, deserialize_with = "null_default")]
    pub value: SecretString,
}

/// `POST /apps/{app}/secrets/{name}` answer (201). Any echoed value is not kept.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SetAppSecretResponse {
    /// Secret name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Digest of the value.
    #[serde(default, deserialize_with = "null_default")]
    pub digest: String,
    /// RFC3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The app's secrets version after the change (use as `min_secrets_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `POST /apps/{app}/secrets` body: set (Some) or unset (None) several secrets at once.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppSecretsUpdateRequest {
    /// Values by name.
    #[serde(default, deserialize_with = "null_default")]
    pub values: BTreeMap<String, Option<SecretString>>,
}

/// `POST /apps/{app}/secrets` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppSecretsUpdateResponse {
    /// The secrets after the change, without values.
    #[serde(default, deserialize_with = "null_default")]
    pub secrets: Vec<AppSecret>,
    /// The app's secrets version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `DELETE /apps/{app}/secrets/{name}` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeleteAppSecretResponse {
    /// The app's secrets version after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}
