//! The kubeconfig data model: the fields fks-bootstrap reads or changes are typed, everything
//! else rides along in `extra` maps (serde `flatten`) and is written back unchanged.
//! Pure: no I/O here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_yaml_ng::Value;

/// Fields of a YAML mapping that the model does not name.
pub type Extra = BTreeMap<String, Value>;

/// A kubeconfig file (`apiVersion: v1`, `kind: Config`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Kubeconfig {
    /// `apiVersion`, normally `v1`.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    /// `kind`, normally `Config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Named clusters (server URL and CA).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub clusters: Vec<NamedCluster>,
    /// Named users (credentials).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub users: Vec<NamedUser>,
    /// Named contexts (cluster + user pairs).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub contexts: Vec<NamedContext>,
    /// The context kubectl uses by default.
    #[serde(
        rename = "current-context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_context: Option<String>,
    /// Everything else (`preferences`, `extensions`, ...), kept as read.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An entry of `clusters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// The cluster's name.
    pub name: String,
    /// Its body.
    pub cluster: Cluster,
    /// Other fields of the entry.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of a cluster entry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cluster {
    /// The API server URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// `certificate-authority-data` and anything else, kept as read.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An entry of `users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedUser {
    /// The user's name.
    pub name: String,
    /// Its credentials.
    pub user: User,
    /// Other fields of the entry.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of a user entry: credentials (client certificate and key, tokens, exec plugins).
/// Kept opaque; `Debug` shows only the field names, never a value.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct User {
    /// Every field, kept as read.
    #[serde(flatten)]
    pub fields: Extra,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for key in self.fields.keys() {
            map.entry(key, &format_args!("<redacted>"));
        }
        map.finish()
    }
}

/// An entry of `contexts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedContext {
    /// The context's name.
    pub name: String,
    /// Which cluster and user it pairs.
    pub context: Context,
    /// Other fields of the entry.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of a context entry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Context {
    /// The cluster entry's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The user entry's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `namespace` and anything else, kept as read.
    #[serde(flatten)]
    pub extra: Extra,
}

/// kubectl writes `clusters: null` in an emptied file; read it as an empty list.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

impl Kubeconfig {
    /// The file as YAML text.
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        serde_yaml_ng::to_string(self)
    }
}
