//! Stored responses for `store: true`: what `GET /v1/responses/{id}` returns and what
//! `previous_response_id` continues from. In memory, bounded in count and age: the oldest
//! entry goes first when full, and entries older than the age limit are gone.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Responses kept at most (the oldest goes first).
pub const CAPACITY: usize = 1024;
/// How long a stored response is kept.
pub const MAX_AGE: Duration = Duration::from_secs(60 * 60);

/// One stored response: the object as returned, and the conversation it ends (in chat's
/// message shape, the instructions left out: they do not carry over to a continuation).
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub object: serde_json::Value,
    pub conversation: Vec<serde_json::Value>,
}

pub struct ResponseStore {
    capacity: usize,
    max_age: Duration,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<String, (Instant, StoredResponse)>,
    /// Ids oldest first (some may have been deleted already).
    order: VecDeque<String>,
}

impl ResponseStore {
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            max_age,
            inner: Mutex::default(),
        }
    }

    pub fn insert(&self, id: String, response: StoredResponse) {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.expire(&mut e);
        while e.by_id.len() >= self.capacity {
            let Some(oldest) = e.order.pop_front() else {
                break;
            };
            e.by_id.remove(&oldest);
        }
        e.order.push_back(id.clone());
        e.by_id.insert(id, (Instant::now(), response));
    }

    pub fn get(&self, id: &str) -> Option<StoredResponse> {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.expire(&mut e);
        e.by_id.get(id).map(|(_, r)| r.clone())
    }

    /// Whether it was there.
    pub fn remove(&self, id: &str) -> bool {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.expire(&mut e);
        e.order.retain(|o| o != id);
        e.by_id.remove(id).is_some()
    }

    fn expire(&self, e: &mut Entries) {
        while let Some(oldest) = e.order.front() {
            match e.by_id.get(oldest) {
                Some((at, _)) if at.elapsed() < self.max_age => break,
                _ => {
                    let id = e.order.pop_front().unwrap_or_default();
                    e.by_id.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> StoredResponse {
        StoredResponse {
            object: serde_json::json!(n),
            conversation: Vec::new(),
        }
    }

    #[test]
    fn the_oldest_goes_when_full() {
        let store = ResponseStore::new(2, Duration::from_secs(60));
        store.insert("a".into(), entry(1));
        store.insert("b".into(), entry(2));
        store.insert("c".into(), entry(3));
        assert!(store.get("a").is_none());
        assert_eq!(store.get("c").unwrap().object, 3);
        assert!(store.remove("b"));
        assert!(!store.remove("b"));
    }

    #[test]
    fn old_entries_expire() {
        let store = ResponseStore::new(8, Duration::ZERO);
        store.insert("a".into(), entry(1));
        assert!(store.get("a").is_none());
    }
}
