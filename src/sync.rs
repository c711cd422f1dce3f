//! Locking helpers shared by the operator and the lab.
//!
//! Must not: hold a guard across `.await` (callers keep the critical sections short).

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data even when another thread panicked while holding the lock: the
/// mutexes this is used for guard plain maps, sets and counters that stay consistent after
/// any single update, so poisoning is not fatal there.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_yields_its_data() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = lock(&m2);
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
