//! Event-time timers: "re-evaluate this customer once event time passes T". Kept in memory and
//! rebuilt on start from the consolidated state (each record holds the column the timer is
//! computed from), so they need no changelog of their own.

use std::collections::{BTreeSet, HashMap};

#[derive(Default)]
pub struct Timers {
    due: BTreeSet<(i64, String)>,
    by_key: HashMap<String, i64>,
}

impl Timers {
    /// Set (or with `None` clear) the timer of `key`.
    pub fn set(&mut self, key: &str, at: Option<i64>) {
        if let Some(old) = self.by_key.remove(key) {
            self.due.remove(&(old, key.to_string()));
        }
        if let Some(at) = at {
            self.due.insert((at, key.to_string()));
            self.by_key.insert(key.to_string(), at);
        }
    }

    /// Remove and return the keys whose time is strictly before `now`.
    pub fn take_due(&mut self, now: i64) -> Vec<String> {
        let mut fired = vec![];
        while let Some((at, _)) = self.due.first() {
            if *at >= now {
                break;
            }
            let (_, key) = self.due.pop_first().expect("first exists");
            self.by_key.remove(&key);
            fired.push(key);
        }
        fired
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_in_time_order_and_resets() {
        let mut t = Timers::default();
        t.set("a", Some(10));
        t.set("b", Some(5));
        t.set("a", Some(20));
        assert_eq!(t.take_due(10), vec!["b".to_string()]);
        assert!(t.take_due(20).is_empty());
        assert_eq!(t.take_due(21), vec!["a".to_string()]);
        t.set("c", Some(1));
        t.set("c", None);
        assert!(t.is_empty());
    }
}
