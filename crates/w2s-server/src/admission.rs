//! Admission control: requests are admitted while the queued cost (W*K*max_tokens plus
//! prompt tokens of every admitted, unfinished request) stays under a cap; beyond it, 429
//! at once. A request that costs more than the whole cap (a long prompt) is admitted only
//! when nothing else is, and then holds the whole cap: it runs alone.

use std::sync::{Arc, Mutex};

/// The cost budget shared by all requests.
#[derive(Debug)]
pub struct Admission {
    capacity: u64,
    used: Mutex<u64>,
}

/// A held share of the budget, given back on drop.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    cost: u64,
}

impl Admission {
    /// A budget of `capacity` cost units.
    pub fn new(capacity: u64) -> Arc<Self> {
        Arc::new(Admission {
            capacity,
            used: Mutex::new(0),
        })
    }

    /// The cap.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Cost now held.
    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `cost` if it fits (a cost over the cap fits an empty queue, as the whole cap).
    pub fn try_admit(self: &Arc<Self>, cost: u64) -> Option<Permit> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let cost = if cost > self.capacity && *used == 0 {
            self.capacity
        } else {
            cost
        };
        if used.saturating_add(cost) > self.capacity {
            return None;
        }
        *used += cost;
        Some(Permit {
            admission: self.clone(),
            cost,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut used = self
            .admission
            .used
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(self.cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_and_frees_on_drop() {
        let a = Admission::new(100);
        let p1 = a.try_admit(60).unwrap();
        assert!(a.try_admit(50).is_none());
        let p2 = a.try_admit(40).unwrap();
        assert_eq!(a.used(), 100);
        drop(p1);
        drop(p2);
        assert_eq!(a.used(), 0);
        // Over the cap: alone, holding all of it.
        let big = a.try_admit(1000).unwrap();
        assert_eq!(a.used(), 100);
        assert!(a.try_admit(1).is_none());
        drop(big);
        let small = a.try_admit(1).unwrap();
        assert!(a.try_admit(1000).is_none());
        drop(small);
    }
}
