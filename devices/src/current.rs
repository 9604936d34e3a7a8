//! A value that is replaced while readers run: the rules, the zones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The value in force, replaceable at run time. Readers take an `Arc` of
/// it (a short read lock) or ask whether it changed since a generation
/// they saw (one atomic load), so a hot loop checks cheaply and picks a
/// new value up at its next turn.
#[derive(Debug)]
pub struct Current<T> {
    value: RwLock<Arc<T>>,
    generation: AtomicU64,
}

impl<T> Current<T> {
    /// Starts with `value`, generation 0.
    pub fn new(value: Arc<T>) -> Self {
        Current {
            value: RwLock::new(value),
            generation: AtomicU64::new(0),
        }
    }

    /// The value in force.
    pub fn current(&self) -> Arc<T> {
        self.value
            .read()
            .map_or_else(|p| p.into_inner().clone(), |r| r.clone())
    }

    /// The value in force, borrowed while the guard lives (no reference
    /// count touched: for per-message paths). Do not hold it across a wait.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Arc<T>> {
        self.value.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a new value in force.
    pub fn replace(&self, value: Arc<T>) {
        match self.value.write() {
            Ok(mut r) => *r = value,
            Err(p) => *p.into_inner() = value,
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The generation in force (how many replacements so far).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The value, if it changed since generation `seen` (then updated).
    pub fn changed_since(&self, seen: &mut u64) -> Option<Arc<T>> {
        let g = self.generation.load(Ordering::Acquire);
        if g == *seen {
            return None;
        }
        *seen = g;
        Some(self.current())
    }
}

impl<T: Default> Default for Current<T> {
    fn default() -> Self {
        Current::new(Arc::default())
    }
}
