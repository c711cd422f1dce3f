//! The machine state machine (reference §3): which transient state leads where, how long it
//! takes, and the background tasks that move machines along. API handlers set a machine's
//! state and `target`; `drive` carries it to the target. No HTTP here.

use crate::model::{Event, Machine, Record};
use crate::{clock, ids, Lab, Timings};
use std::sync::Arc;
use std::time::Duration;

/// States that are not transient: `settled` waits end in one of these.
pub const SETTLED: &[&str] = &[
    "created",
    "started",
    "stopped",
    "suspended",
    "failed",
    "destroyed",
];

/// The next automatic step from `state` toward `target`, and how long it takes.
pub fn next(state: &str, target: &str, t: &Timings) -> Option<(&'static str, Duration)> {
    match (state, target) {
        ("created", "started") => Some(("starting", t.launch)),
        ("starting", _) => Some(("started", t.boot)),
        ("stopping", _) => Some(("stopped", t.stop)),
        ("restarting", _) => Some(("starting", t.stop)),
        ("suspending", _) => Some(("suspended", t.stop)),
        ("destroying", _) => Some(("destroyed", t.destroy)),
        _ => None,
    }
}

/// The event type Fly records when a machine enters `state`.
fn event_kind(state: &str) -> &'static str {
    match state {
        "created" => "launch",
        "starting" | "started" => "start",
        "stopping" | "stopped" => "stop",
        "restarting" => "restart",
        "suspending" | "suspended" => "suspend",
        "destroying" | "destroyed" => "destroy",
        "failed" => "exit",
        _ => "update",
    }
}

/// Move `m` into `state`, recording the event. `source` is `user` or `flyd`.
pub fn enter(m: &mut Machine, state: &str, source: &str, rng: &mut impl rand::Rng) {
    let now = clock::now_ms();
    m.state = state.to_string();
    m.updated_at_ms = now;
    m.push_event(Event {
        id: ids::ulid(rng, now),
        kind: event_kind(state).into(),
        status: state.into(),
        source: source.into(),
        timestamp: now,
        exit_code: None,
    });
}

/// Start a background task that moves machine `id` of `app` toward its target.
pub fn drive(lab: &Arc<Lab>, app: &str, id: &str) {
    let lab = lab.clone();
    let (app, id) = (app.to_string(), id.to_string());
    tokio::spawn(async move {
        loop {
            let seen = {
                let core = lab.core();
                let Some(m) = core.state.app(&app).and_then(|a| a.machines.get(&id)) else {
                    return;
                };
                let Some(target) = m.target.clone() else {
                    return;
                };
                let Some((to, delay)) = next(&m.state, &target, &lab.opts.timings) else {
                    return;
                };
                let migrating = m
                    .migration
                    .as_ref()
                    .is_some_and(|g| g.instance_id == m.instance_id);
                (
                    m.state.clone(),
                    target,
                    m.instance_id.clone(),
                    to,
                    delay,
                    migrating,
                )
            };
            let (from, target, instance, to, delay, migrating) = seen;
            let mut fail_boot = to == "started" && {
                let p = lab.opts.faults.boot_failure;
                crate::lock(&lab.faults).chance(p)
            };
            let mut crash = to == "started" && {
                let p = lab.opts.faults.boot_crash;
                crate::lock(&lab.faults).crash_once(p, &id)
            };
            let migrate_later = to == "started" && {
                let p = lab.opts.faults.migrate;
                crate::lock(&lab.faults).migrate_once(p, &id)
            };
            match lab.runner.clone() {
                // Guests mode: the step is the real work (start, stop, destroy a guest). A
                // boot failure or crash then means init exits 1 once, so restart policy takes
                // over.
                Some(runner) if crate::runner::is_real(&from, to) => {
                    if let Err(e) = runner.act(&lab, &id, to, fail_boot || crash).await {
                        runner.record_failure(&lab, &app, &id, &e);
                        return;
                    }
                    fail_boot = false;
                    crash = false;
                }
                _ => tokio::time::sleep(delay).await,
            }
            // A migration: once the machine is down, its volume is forked before the move.
            let fork = match (migrating && to == "stopped").then_some(()) {
                Some(()) => Some(crate::migration::fork_data(&lab, &app, &id).await),
                None => None,
            };
            let mut core = lab.core();
            let crate::Core { state, rng, .. } = &mut *core;
            // Another operation changed the machine meanwhile: its own driver takes over.
            let current = state
                .app(&app)
                .and_then(|a| a.machines.get(&id))
                .filter(|m| {
                    m.state == from
                        && m.target.as_deref() == Some(target.as_str())
                        && m.instance_id == instance
                })
                .cloned();
            let Some(mut m) = current else {
                drop(core);
                if let Some(Ok(Some(f))) = &fork {
                    crate::migration::discard(&lab, f);
                }
                return;
            };
            // A migration begun before a user update (a new version) is called off.
            if m.migration
                .as_ref()
                .is_some_and(|g| g.instance_id != m.instance_id)
            {
                m.migration = None;
            }
            let to = if fail_boot { "failed" } else { to };
            enter(&mut m, to, "flyd", rng);
            if to == target || to == "failed" || to == "destroyed" {
                m.target = None;
            }
            let mut records = vec![];
            let mut landed = None;
            match fork {
                Some(Ok(f)) => {
                    records.extend(crate::migration::land(state, &mut m, f.as_ref(), rng));
                    tracing::info!(
                        app,
                        machine = id,
                        private_ip = m.private_ip,
                        volume = f.as_ref().map(|f| f.to.as_str()),
                        "migrated the machine to another host"
                    );
                    landed = f;
                }
                Some(Err(e)) => {
                    // The fork failed: the machine starts again where it was.
                    tracing::warn!(app, machine = id, error = %crate::runner::chain(&e), "migration called off");
                    m.migration = None;
                    enter(&mut m, "starting", "flyd", rng);
                    m.target = Some("started".into());
                }
                None => {}
            }
            if to == "destroyed" {
                m.lease = None;
                if let Some(vol) = m.mounted_volume() {
                    if let Some(v) = state.app(&app).and_then(|a| a.volumes.get(&vol)) {
                        if v.attached_machine_id.as_deref() == Some(id.as_str()) {
                            let mut v = v.clone();
                            v.attached_machine_id = None;
                            records.push(Record::Volume(v));
                        }
                    }
                }
            }
            let done = m.target.is_none();
            records.push(Record::Machine(Box::new(m)));
            for r in records {
                if let Err(e) = core.commit(r) {
                    tracing::error!(app, machine = id, error = %e, "could not record a machine transition");
                }
            }
            drop(core);
            lab.notify();
            if let (Some(runner), "started") = (&lab.runner, to) {
                runner.watch(&lab, &app, &id);
            }
            if crash && to == "started" {
                crash_soon(&lab, &app, &id);
            }
            if migrate_later && to == "started" {
                migrate_soon(&lab, &app, &id);
            }
            if let Some(f) = landed {
                let lab = lab.clone();
                tokio::task::spawn_blocking(move || crate::migration::drop_source(&lab, &f));
            }
            if done {
                return;
            }
        }
    });
}

/// API-only `boot_crash`: a moment after reaching `started` (the `launch` timing) the
/// machine's main process "exits 1": an `exit` event, then the restart policy decides, as
/// flyd does for a real guest (runner's monitor) — `starting` again after the first backoff,
/// or `stopped`. Nothing happens when a user operation changed the machine meanwhile.
fn crash_soon(lab: &Arc<Lab>, app: &str, id: &str) {
    let lab = lab.clone();
    let (app, id) = (app.to_string(), id.to_string());
    tokio::spawn(async move {
        let instance = {
            let core = lab.core();
            let Some(m) = core.state.app(&app).and_then(|a| a.machines.get(&id)) else {
                return;
            };
            m.instance_id.clone()
        };
        tokio::time::sleep(lab.opts.timings.launch).await;
        let restart = {
            let mut core = lab.core();
            let crate::Core { state, rng, .. } = &mut *core;
            let Some(m) = state.app(&app).and_then(|a| a.machines.get(&id)) else {
                return;
            };
            if m.state != "started" || m.target.is_some() || m.instance_id != instance {
                return;
            }
            let mut m = m.clone();
            let code = 1;
            let restart = crate::runner::should_restart(&m.config, code, 0);
            let now = clock::now_ms();
            m.push_event(Event {
                id: ids::ulid(rng, now),
                kind: "exit".into(),
                status: "stopped".into(),
                source: "flyd".into(),
                timestamp: now,
                exit_code: Some(code),
            });
            if restart {
                enter(&mut m, "starting", "flyd", rng);
                m.target = Some("started".into());
            } else {
                enter(&mut m, "stopped", "flyd", rng);
                m.target = None;
            }
            tracing::info!(
                machine = id,
                code,
                restart,
                "lab fault: the machine crashed at boot"
            );
            if let Err(e) = core.commit(Record::Machine(Box::new(m))) {
                tracing::error!(machine = id, error = %e, "could not record a boot crash");
            }
            restart
        };
        lab.notify();
        if restart {
            tokio::time::sleep(crate::runner::backoff(1)).await;
            drive(&lab, &app, &id);
        }
    });
}

/// The `migrate` fault: `migrate_after` (default 1 s) after the machine's first start, migrate
/// it as the `/lab/v1` endpoint does. Nothing happens when it is no longer plainly started.
fn migrate_soon(lab: &Arc<Lab>, app: &str, id: &str) {
    let lab = lab.clone();
    let (app, id) = (app.to_string(), id.to_string());
    tokio::spawn(async move {
        let after = lab
            .opts
            .faults
            .migrate_after
            .unwrap_or(Duration::from_secs(1));
        tokio::time::sleep(after).await;
        if *lab.closing.borrow() {
            return;
        }
        if let Err(e) = crate::migration::begin(&lab, &app, &id, crate::migration::CAUSE_FAULT) {
            tracing::info!(machine = id, error = ?e, "lab fault: no migration");
        }
    });
}

/// After a restart of the lab, carry on every machine that was on its way somewhere.
pub fn resume(lab: &Arc<Lab>) {
    let pending: Vec<(String, String)> = {
        let core = lab.core();
        core.state
            .apps
            .values()
            .flat_map(|a| a.machines.values())
            .filter(|m| m.target.is_some())
            .map(|m| (m.app.clone(), m.id.clone()))
            .collect()
    };
    for (app, id) in pending {
        drive(lab, &app, &id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_fly_diagram() {
        let t = Timings::default();
        assert_eq!(
            next("created", "started", &t).map(|s| s.0),
            Some("starting")
        );
        assert_eq!(
            next("starting", "started", &t).map(|s| s.0),
            Some("started")
        );
        assert_eq!(
            next("restarting", "started", &t).map(|s| s.0),
            Some("starting")
        );
        assert_eq!(
            next("stopping", "stopped", &t).map(|s| s.0),
            Some("stopped")
        );
        assert_eq!(
            next("destroying", "destroyed", &t).map(|s| s.0),
            Some("destroyed")
        );
        assert_eq!(next("created", "created", &t), None);
        assert_eq!(next("started", "started", &t), None);
    }
}
