//! App bodies (reference fly-machines-api.md §2.1). Pure serde types.

use super::*;

/// The organization an app belongs to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppOrganization {
    /// Display name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Slug used in `org_slug`.
    #[serde(default, deserialize_with = "null_default")]
    pub slug: String,
    /// Numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_numeric_id: Option<i64>,
}

/// An app (reference §2.1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct App {
    /// 16 lowercase alphanumerics; paths use the name, not this.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// The globally unique app name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// `pending`, `deployed`, `suspended`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Owning organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<AppOrganization>,
    /// Custom 6PN network name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_numeric_id: Option<i64>,
    /// Number of Machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_count: Option<u64>,
    /// Number of volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_count: Option<u64>,
}

/// `POST /apps`. Fly has spelled the name field `app_name` and `name`; the client sends both
/// with the same value, and [`CreateAppRequest::app_name`] reads whichever is set (§8.2).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CreateAppRequest {
    /// The app name (current spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The app name (older spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// Organization slug (`personal` works).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_slug: Option<String>,
    /// Custom 6PN network; isolates the app from the org's other apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Enable `<machine>.<app>.fly.dev` subdomains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_subdomains: Option<bool>,
    /// App role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role_id: Option<String>,
}

impl CreateAppRequest {
    /// A request for `name` in `org_slug`, with both name spellings set.
    pub fn new(name: impl Into<String>, org_slug: impl Into<String>) -> Self {
        let name = name.into();
        CreateAppRequest {
            name: Some(name.clone()),
            app_name: Some(name),
            org_slug: Some(org_slug.into()),
            ..CreateAppRequest::default()
        }
    }

    /// The requested name, whichever field carries it (`name` wins).
    pub fn app_name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(self.app_name.as_deref().filter(|n| !n.is_empty()))
    }
}

/// `GET /apps?org_slug=...`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ListAppsResponse {
    /// Total number of apps.
    #[serde(default, deserialize_with = "null_default")]
    pub total_apps: u64,
    /// The apps.
    #[serde(default, deserialize_with = "null_default")]
    pub apps: Vec<App>,
}
