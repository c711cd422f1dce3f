//! Who collects the exit status of a session's process.
//!
//! Standing alone, the server waits for its own children (tokio's `Child::wait`). Inside
//! `node init`, PID 1's supervisor reaps every child with `waitpid(-1)` (it must: orphans are
//! re-parented to it), so a session's process would be reaped before tokio could see it.
//! There the supervisor hands each status it does not own to [`ChildExits::deliver`], and the
//! session that registered the pid receives it.
//!
//! No exit is lost and none is stale: a session spawns its process through
//! [`ChildExits::spawn_registered`], which holds the registry's lock from before the fork until
//! the pid is registered. A supervisor that reaps the child at once blocks in `deliver` until
//! then, so it always finds the waiting session. A status nobody waits for belongs to an
//! orphan (a session's grandchild re-parented to PID 1) and is dropped: keeping it could hand
//! it to a later session whose child got the same pid once the kernel reused it.
//!
//! No process work here: this is bookkeeping between the supervisor and the sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// How a session's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// It exited with this status.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

/// Where a session learns its process's exit: `None` when it must wait for the child itself.
pub type Registered = Option<oneshot::Receiver<ChildExit>>;

#[derive(Default)]
struct Registry {
    waiting: HashMap<i32, oneshot::Sender<ChildExit>>,
}

/// Where session processes' exit statuses come from; cheap to clone.
#[derive(Clone, Default)]
pub struct ChildExits {
    /// `None`: sessions wait for their children themselves.
    reaped_elsewhere: Option<Arc<Mutex<Registry>>>,
}

impl std::fmt::Debug for ChildExits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildExits")
            .field("reaped_elsewhere", &self.reaped_elsewhere.is_some())
            .finish()
    }
}

impl ChildExits {
    /// Sessions wait for their own children (the server is not inside a reaping PID 1).
    pub fn own() -> Self {
        Self::default()
    }

    /// Another part of this process reaps every child and calls [`ChildExits::deliver`].
    pub fn reaped_elsewhere() -> Self {
        Self {
            reaped_elsewhere: Some(Arc::default()),
        }
    }

    fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock leaves a plain map behind; it stays usable.
        crate::sync::lock(registry)
    }

    /// Start a process with `spawn` (which returns it and its pid) and ask for its exit
    /// status, with no window in which a reaper could miss the registration. `spawn` must not
    /// block: the reaper waits on the same lock.
    pub fn spawn_registered<T, E>(
        &self,
        spawn: impl FnOnce() -> Result<(T, i32), E>,
    ) -> Result<(T, Registered), E> {
        let Some(registry) = self.reaped_elsewhere.as_ref() else {
            return spawn().map(|(spawned, _)| (spawned, None));
        };
        let mut r = Self::lock(registry);
        let (spawned, pid) = spawn()?;
        let (tx, rx) = oneshot::channel();
        r.waiting.insert(pid, tx);
        Ok((spawned, Some(rx)))
    }

    /// Hand over a reaped child's status. Returns whether a session was waiting for it; a
    /// status nobody waits for (an orphan's) is dropped.
    pub fn deliver(&self, pid: i32, exit: ChildExit) -> bool {
        let Some(registry) = self.reaped_elsewhere.as_ref() else {
            return false;
        };
        match Self::lock(registry).waiting.remove(&pid) {
            Some(tx) => {
                // A session that went away no longer needs the status.
                let _ = tx.send(exit);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(pid: i32) -> Result<((), i32), std::io::Error> {
        Ok(((), pid))
    }

    #[test]
    fn own_children_are_not_registered() {
        let (_, registered) = ChildExits::own()
            .spawn_registered(|| spawn(7))
            .expect("spawn");
        assert!(registered.is_none());
        assert!(!ChildExits::own().deliver(7, ChildExit::Code(0)));
    }

    #[test]
    fn a_delivered_status_reaches_the_registered_session() {
        let exits = ChildExits::reaped_elsewhere();
        let (_, registered) = exits.spawn_registered(|| spawn(41)).expect("spawn");
        let mut rx = registered.expect("registered");
        assert!(exits.deliver(41, ChildExit::Code(3)));
        assert_eq!(rx.try_recv().expect("delivered"), ChildExit::Code(3));
    }

    #[test]
    fn a_reaper_racing_the_spawn_waits_for_the_registration() {
        let exits = ChildExits::reaped_elsewhere();
        let reaper = exits.clone();
        let (_, registered) = exits
            .spawn_registered(|| {
                // The child "exits" at once and the reaper delivers from another thread while
                // the spawn still holds the lock: it must wait, then find the session.
                let t = std::thread::spawn(move || reaper.deliver(42, ChildExit::Signal(9)));
                std::thread::sleep(std::time::Duration::from_millis(20));
                assert!(
                    !t.is_finished(),
                    "deliver ran before the pid was registered"
                );
                Ok::<_, std::io::Error>((t, 42))
            })
            .map(|(t, r)| (t.join().expect("reaper"), r))
            .map(|(delivered, r)| {
                assert!(delivered, "the reaper found no session");
                ((), r)
            })
            .expect("spawn");
        let mut rx = registered.expect("registered");
        assert_eq!(rx.try_recv().expect("delivered"), ChildExit::Signal(9));
    }

    #[test]
    fn an_orphans_status_is_not_handed_to_a_later_child_with_its_pid() {
        let exits = ChildExits::reaped_elsewhere();
        assert!(
            !exits.deliver(43, ChildExit::Code(1)),
            "nobody waits for an orphan"
        );
        let (_, registered) = exits.spawn_registered(|| spawn(43)).expect("spawn");
        let mut rx = registered.expect("registered");
        assert!(
            rx.try_recv().is_err(),
            "a reused pid must not see the orphan's status"
        );
        assert!(exits.deliver(43, ChildExit::Code(0)));
        assert_eq!(rx.try_recv().expect("delivered"), ChildExit::Code(0));
    }

    #[test]
    fn a_failed_spawn_registers_nothing() {
        let exits = ChildExits::reaped_elsewhere();
        let failed: Result<((), Registered), &str> = exits.spawn_registered(|| Err("no shell"));
        assert!(failed.is_err());
        assert!(!exits.deliver(44, ChildExit::Code(0)));
    }
}
