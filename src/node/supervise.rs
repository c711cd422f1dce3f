//! The PID-1 duties of `node init`: start k3s (and iscsid), run tasks beside them (the node's
//! SSH server), reap every child including orphans re-parented to us
//! (`PR_SET_CHILD_SUBREAPER`) and hand the statuses of SSH sessions' processes to the server
//! (`ssh::server::ChildExits`), forward SIGTERM/SIGINT/SIGHUP, restart a
//! service that exits unexpectedly with a capped exponential backoff that resets after a
//! stable run, and on a stop signal stop everything and exit with k3s's status.
//!
//! The decisions (how long to wait, what a signal means, which exit code) are pure values
//! ([`Backoff`], [`signal_action`], [`exit_code`]); [`run`] is the loop that acts on them.
//! This module never looks at what the services are, beyond their argv.

use std::future::Future;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use super::Error;
use crate::ssh::server::{ChildExit, ChildExits};

/// A task that runs beside the services for as long as the supervisor does.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What runs in the supervisor's runtime beside the services.
#[derive(Default)]
pub struct Beside {
    /// Spawned once at the start; dropped when the supervisor returns.
    pub tasks: Vec<Task>,
    /// Where the statuses of children that are not services go (SSH sessions' processes).
    pub exits: ChildExits,
}

/// How restarts and stops are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The wait before the first restart.
    pub initial: Duration,
    /// The longest wait between restarts.
    pub max: Duration,
    /// A run at least this long counts as stable: the next failure starts from `initial`.
    pub stable_after: Duration,
    /// How long stopped services get before SIGKILL.
    pub stop_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            stable_after: Duration::from_secs(120),
            stop_grace: Duration::from_secs(25),
        }
    }
}

/// The restart backoff of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Consecutive unstable exits so far.
    failures: u32,
}

impl Backoff {
    /// The wait before restarting a service that ran for `ran_for`: `initial * 2^n` for the
    /// n-th consecutive short run, capped at `max`; a stable run resets n to 0.
    pub fn after_exit(&mut self, policy: &Policy, ran_for: Duration) -> Duration {
        if ran_for >= policy.stable_after {
            self.failures = 0;
        }
        let factor = 2u32.checked_pow(self.failures).unwrap_or(u32::MAX);
        let delay = policy.initial.saturating_mul(factor).min(policy.max);
        self.failures = self.failures.saturating_add(1);
        delay
    }
}

/// What a received signal means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    /// Pass it on to the running services and keep supervising (SIGHUP: reload).
    Forward,
    /// Pass it on, restart nothing, exit when every service has exited.
    Stop,
}

/// SIGTERM (the platform's stop) and SIGINT stop; everything else is forwarded.
pub fn signal_action(sig: Signal) -> SignalAction {
    match sig {
        Signal::SIGTERM | Signal::SIGINT => SignalAction::Stop,
        _ => SignalAction::Forward,
    }
}

/// How a service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// It could not be started at all.
    SpawnFailed,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
            Exit::SpawnFailed => write!(f, "could not be started"),
        }
    }
}

/// The exit code `node init` ends with, from the main service's last exit (shell convention:
/// 128 + signal number; 127 when it never started; 0 when it never ended before the stop).
pub fn exit_code(last: Option<Exit>) -> u8 {
    match last {
        None => 0,
        Some(Exit::Code(c)) => u8::try_from(c).unwrap_or(1),
        Some(Exit::Signal(s)) => u8::try_from(128 + s).unwrap_or(255),
        Some(Exit::SpawnFailed) => 127,
    }
}

/// One program to keep running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// For the log: `k3s`, `iscsid`.
    pub name: String,
    pub argv: Vec<String>,
    /// The service whose status `node init` exits with.
    pub main: bool,
}

#[derive(Debug)]
enum State {
    Running { pid: Pid, since: Instant },
    Waiting { until: Instant },
    Done,
}

struct Supervised {
    service: Service,
    state: State,
    backoff: Backoff,
    last: Option<Exit>,
}

/// Become the subreaper, start `services` and the tasks `beside` them, and supervise them
/// until a stop signal; returns the exit code (the main service's status).
pub fn run(services: Vec<Service>, policy: Policy, beside: Beside) -> Result<u8, Error> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| Error::Supervise {
        op: "becoming the child subreaper",
        source: e.into(),
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Supervise {
            op: "starting the runtime",
            source,
        })?;
    rt.block_on(supervise(services, policy, beside))
}

async fn supervise(services: Vec<Service>, policy: Policy, beside: Beside) -> Result<u8, Error> {
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| Error::Supervise { op: name, source })
    };
    // Registered before any child starts, so no SIGCHLD is missed.
    let mut term = listen(SignalKind::terminate(), "handling SIGTERM")?;
    let mut int = listen(SignalKind::interrupt(), "handling SIGINT")?;
    let mut hup = listen(SignalKind::hangup(), "handling SIGHUP")?;
    let mut chld = listen(SignalKind::child(), "handling SIGCHLD")?;

    let mut all: Vec<Supervised> = services
        .into_iter()
        .map(|service| Supervised {
            service,
            state: State::Done,
            backoff: Backoff::default(),
            last: None,
        })
        .collect();
    for s in &mut all {
        start(s, &policy);
    }
    let Beside { tasks, exits } = beside;
    for task in tasks {
        tokio::spawn(task);
    }
    let mut stop_deadline: Option<Instant> = None;
    let mut killed = false;
    loop {
        reap(&mut all, &policy, stop_deadline.is_some(), &exits);
        if stop_deadline.is_some() && all.iter().all(|s| matches!(s.state, State::Done)) {
            let last = all.iter().find(|s| s.service.main).and_then(|s| s.last);
            let code = exit_code(last);
            info!("all services stopped; exiting with status {code}");
            return Ok(code);
        }
        let next_restart = all
            .iter()
            .filter_map(|s| match s.state {
                State::Waiting { until } => Some(until),
                _ => None,
            })
            .min();
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            _ = term.recv() => on_signal(&mut all, Signal::SIGTERM, &policy, &mut stop_deadline),
            _ = int.recv() => on_signal(&mut all, Signal::SIGINT, &policy, &mut stop_deadline),
            _ = hup.recv() => on_signal(&mut all, Signal::SIGHUP, &policy, &mut stop_deadline),
            _ = chld.recv() => {}
            _ = tokio::time::sleep_until(next_restart.unwrap_or(far)), if next_restart.is_some() => {
                let now = Instant::now();
                for s in &mut all {
                    if matches!(s.state, State::Waiting { until } if until <= now) {
                        info!("restarting {}", s.service.name);
                        start(s, &policy);
                    }
                }
            }
            _ = tokio::time::sleep_until(stop_deadline.unwrap_or(far)), if stop_deadline.is_some() && !killed => {
                killed = true;
                for s in &all {
                    if let State::Running { pid, .. } = s.state {
                        warn!("{} (pid {pid}) did not stop within {:?}; sending SIGKILL", s.service.name, policy.stop_grace);
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                }
            }
        }
    }
}

fn on_signal(
    all: &mut [Supervised],
    sig: Signal,
    policy: &Policy,
    stop_deadline: &mut Option<Instant>,
) {
    let action = signal_action(sig);
    if action == SignalAction::Stop && stop_deadline.is_none() {
        info!("received {sig}: stopping every service");
        *stop_deadline = Some(Instant::now() + policy.stop_grace);
    } else {
        info!("received {sig}: forwarding it");
    }
    for s in all.iter_mut() {
        match s.state {
            State::Running { pid, .. } => {
                if let Err(e) = kill(pid, sig) {
                    warn!("forwarding {sig} to {} (pid {pid}): {e}", s.service.name);
                }
            }
            State::Waiting { .. } if action == SignalAction::Stop => s.state = State::Done,
            _ => {}
        }
    }
}

fn start(s: &mut Supervised, policy: &Policy) {
    let argv = &s.service.argv;
    let Some((program, args)) = argv.split_first() else {
        error!(
            "service {} has an empty command line; not starting it",
            s.service.name
        );
        s.state = State::Done;
        return;
    };
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
            // The child is reaped by `reap` through waitpid(-1), not through this handle;
            // dropping a std Child neither waits nor kills.
            drop(child);
            info!("started {} (pid {pid}): {}", s.service.name, argv.join(" "));
            s.state = State::Running {
                pid,
                since: Instant::now(),
            };
        }
        Err(e) => {
            error!("could not start {} ({program}): {e}", s.service.name);
            s.last = Some(Exit::SpawnFailed);
            schedule_restart(s, policy, Duration::ZERO);
        }
    }
}

fn schedule_restart(s: &mut Supervised, policy: &Policy, ran_for: Duration) {
    let delay = s.backoff.after_exit(policy, ran_for);
    info!(
        "{} will be restarted in {}",
        s.service.name,
        super::human_duration(delay)
    );
    s.state = State::Waiting {
        until: Instant::now() + delay,
    };
}

/// Reap every exited child: ours are marked exited (and restarted later unless stopping),
/// the others go to `exits` (SSH sessions wait for theirs; orphans are just collected).
fn reap(all: &mut [Supervised], policy: &Policy, stopping: bool, exits: &ChildExits) {
    loop {
        let (pid, exit) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(e) => {
                warn!("waiting for children: {e}");
                return;
            }
        };
        let Some(s) = all
            .iter_mut()
            .find(|s| matches!(s.state, State::Running { pid: p, .. } if p == pid))
        else {
            let other = match exit {
                Exit::Signal(sig) => ChildExit::Signal(sig),
                Exit::Code(code) => ChildExit::Code(code),
                Exit::SpawnFailed => continue,
            };
            if !exits.deliver(pid.as_raw(), other) {
                debug!("reaped orphan pid {pid} ({exit})");
            }
            continue;
        };
        let State::Running { since, .. } = s.state else {
            continue;
        };
        let ran_for = since.elapsed();
        s.last = Some(exit);
        if stopping {
            info!("{} (pid {pid}) stopped: {exit}", s.service.name);
            s.state = State::Done;
        } else {
            warn!(
                "{} (pid {pid}) exited unexpectedly after {}: {exit}",
                s.service.name,
                super::human_duration(ran_for)
            );
            schedule_restart(s, policy, ran_for);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            stable_after: Duration::from_secs(60),
            stop_grace: Duration::from_secs(5),
        }
    }

    #[test]
    fn backoff_doubles_for_quick_exits_and_is_capped() {
        let p = policy();
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..7)
            .map(|_| b.after_exit(&p, Duration::from_secs(2)).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10, 10]);
    }

    #[test]
    fn backoff_resets_after_a_stable_run() {
        let p = policy();
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.after_exit(&p, Duration::ZERO);
        }
        assert_eq!(
            b.after_exit(&p, Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.after_exit(&p, Duration::from_secs(1)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn backoff_never_overflows() {
        let p = policy();
        let mut b = Backoff {
            failures: u32::MAX - 1,
        };
        assert_eq!(b.after_exit(&p, Duration::ZERO), p.max);
        assert_eq!(b.after_exit(&p, Duration::ZERO), p.max);
    }

    #[test]
    fn term_and_int_stop_while_hup_is_forwarded() {
        assert_eq!(signal_action(Signal::SIGTERM), SignalAction::Stop);
        assert_eq!(signal_action(Signal::SIGINT), SignalAction::Stop);
        assert_eq!(signal_action(Signal::SIGHUP), SignalAction::Forward);
    }

    #[test]
    fn exit_code_follows_the_shell_convention() {
        assert_eq!(exit_code(None), 0);
        assert_eq!(exit_code(Some(Exit::Code(0))), 0);
        assert_eq!(exit_code(Some(Exit::Code(3))), 3);
        assert_eq!(exit_code(Some(Exit::Signal(15))), 143);
        assert_eq!(exit_code(Some(Exit::SpawnFailed)), 127);
        assert_eq!(Exit::Signal(9).to_string(), "killed by SIGKILL");
    }
}
