//! Merging one cluster's kubeconfig into an existing one (`-k --merge`). Pure: no I/O here.

use super::model::Kubeconfig;

/// Merges `new` into `existing` (None: no file yet). Entries of `new` replace entries of the
/// same name in place; every other entry and field of `existing` is kept. `current-context`
/// stays as it was unless `use_context` (issue 5: `--merge` never switches the context by
/// itself); a file without a current context gets `new`'s, since that switches nothing.
pub fn merge(existing: Option<Kubeconfig>, new: &Kubeconfig, use_context: bool) -> Kubeconfig {
    let mut out = existing.unwrap_or_default();
    upsert(&mut out.clusters, &new.clusters, |e| &e.name);
    upsert(&mut out.users, &new.users, |e| &e.name);
    upsert(&mut out.contexts, &new.contexts, |e| &e.name);
    let unset = out.current_context.as_deref().is_none_or(str::is_empty);
    if (use_context || unset) && new.current_context.is_some() {
        out.current_context.clone_from(&new.current_context);
    }
    if out.api_version.is_none() {
        out.api_version.clone_from(&new.api_version);
    }
    if out.kind.is_none() {
        out.kind.clone_from(&new.kind);
    }
    for (key, value) in &new.extra {
        out.extra
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    out
}

fn upsert<T: Clone>(into: &mut Vec<T>, from: &[T], name: impl Fn(&T) -> &String) {
    for entry in from {
        match into.iter_mut().find(|e| name(e) == name(entry)) {
            Some(slot) => *slot = entry.clone(),
            None => into.push(entry.clone()),
        }
    }
}
