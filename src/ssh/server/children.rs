//! Who collects the exit status of a session's process.
//!
//! Standing alone, the server waits for its own children (tokio's `Child::wait`). Inside
//! `node init`, PID 1's supervisor reaps every child with `waitpid(-1)` (it must: orphans are
//! re-parented to it), so a session's process would be reaped before tokio could see it.
//! There the supervisor hands each status it does not own to [`ChildExits::deliver`], and the
//! session that registered the pid receives it. A status that arrives before its session
//! registered (the child exited at once) is kept for a while, so no exit is ever lost.
//!
//! No process work here: this is bookkeeping between the supervisor and the sessions.

use std::collections::{HashMap, VecDeque};
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

/// Statuses of unclaimed pids kept for a late registration; orphans (grandchildren of a
/// session re-parented to PID 1) also land here and age out.
const UNCLAIMED_KEPT: usize = 256;

#[derive(Default)]
struct Registry {
    waiting: HashMap<i32, oneshot::Sender<ChildExit>>,
    unclaimed: VecDeque<(i32, ChildExit)>,
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
        // A panic while holding this lock leaves plain maps behind; they stay usable.
        crate::sync::lock(registry)
    }

    /// Ask for `pid`'s exit status; `None` when the caller must wait for the child itself.
    pub fn register(&self, pid: i32) -> Option<oneshot::Receiver<ChildExit>> {
        let registry = self.reaped_elsewhere.as_ref()?;
        let (tx, rx) = oneshot::channel();
        let mut r = Self::lock(registry);
        if let Some(i) = r.unclaimed.iter().position(|(p, _)| *p == pid) {
            if let Some((_, exit)) = r.unclaimed.remove(i) {
                // The receiver is alive: it is returned below.
                let _ = tx.send(exit);
            }
        } else {
            r.waiting.insert(pid, tx);
        }
        Some(rx)
    }

    /// Hand over a reaped child's status. Returns whether a session was waiting for it;
    /// an unclaimed status is kept for a registration that may still come.
    pub fn deliver(&self, pid: i32, exit: ChildExit) -> bool {
        let Some(registry) = self.reaped_elsewhere.as_ref() else {
            return false;
        };
        let mut r = Self::lock(registry);
        if let Some(tx) = r.waiting.remove(&pid) {
            // A session that went away no longer needs the status.
            let _ = tx.send(exit);
            return true;
        }
        if r.unclaimed.len() == UNCLAIMED_KEPT {
            r.unclaimed.pop_front();
        }
        r.unclaimed.push_back((pid, exit));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_children_are_not_registered() {
        assert!(ChildExits::own().register(7).is_none());
        assert!(!ChildExits::own().deliver(7, ChildExit::Code(0)));
    }

    #[test]
    fn a_delivered_status_reaches_the_registered_session() {
        let exits = ChildExits::reaped_elsewhere();
        let mut rx = exits.register(41).expect("registered");
        assert!(exits.deliver(41, ChildExit::Code(3)));
        assert_eq!(rx.try_recv().expect("delivered"), ChildExit::Code(3));
    }

    #[test]
    fn a_status_reaped_before_registration_is_kept_for_it() {
        let exits = ChildExits::reaped_elsewhere();
        assert!(!exits.deliver(42, ChildExit::Signal(9)));
        let mut rx = exits.register(42).expect("registered");
        assert_eq!(rx.try_recv().expect("kept"), ChildExit::Signal(9));
    }

    #[test]
    fn unclaimed_statuses_age_out() {
        let exits = ChildExits::reaped_elsewhere();
        for pid in 0..=i32::try_from(UNCLAIMED_KEPT).expect("small") {
            exits.deliver(pid, ChildExit::Code(0));
        }
        let mut oldest = exits.register(0).expect("registered");
        assert!(oldest.try_recv().is_err(), "pid 0 should have aged out");
        let mut newest = exits.register(1).expect("registered");
        assert_eq!(newest.try_recv().expect("kept"), ChildExit::Code(0));
    }
}
