//! Stored responses for `store: true`: what `GET /v1/responses/{id}` returns and what
//! `previous_response_id` continues from. In memory, bounded in count, bytes and age: the
//! oldest entries go first when either bound is reached, and entries older than the age
//! limit are gone. When keys are on, an entry belongs to the key that created it: for any
//! other key it does not exist (404, so ids cannot be probed either).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use super::auth::Owner;

/// Responses kept at most (the oldest goes first).
pub const CAPACITY: usize = 1024;
/// Bytes of stored JSON kept at most (objects and conversations as serialized); a response
/// larger than this alone is not stored.
pub const MAX_BYTES: usize = 64 << 20;
/// How long a stored response is kept.
pub const MAX_AGE: Duration = Duration::from_secs(60 * 60);

/// One stored response: the object as returned, and the conversation it ends (in chat's
/// message shape, the instructions left out: they do not carry over to a continuation).
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub object: serde_json::Value,
    pub conversation: Vec<serde_json::Value>,
    /// The API key that created it (None when keys are off).
    pub owner: Option<Owner>,
}

impl StoredResponse {
    /// Its size as serialized JSON, what the byte bound counts.
    fn bytes(&self) -> usize {
        let json = |v: &serde_json::Value| serde_json::to_vec(v).map_or(0, |b| b.len());
        json(&self.object) + self.conversation.iter().map(json).sum::<usize>()
    }
}

pub struct ResponseStore {
    capacity: usize,
    max_bytes: usize,
    max_age: Duration,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<String, Entry>,
    /// Ids oldest first (some may have been deleted already).
    order: VecDeque<String>,
    /// Bytes of every entry in `by_id`.
    bytes: usize,
}

struct Entry {
    at: Instant,
    bytes: usize,
    response: StoredResponse,
}

impl Entries {
    fn take(&mut self, id: &str) -> Option<Entry> {
        let entry = self.by_id.remove(id)?;
        self.bytes -= entry.bytes;
        Some(entry)
    }
}

impl ResponseStore {
    pub fn new(capacity: usize, max_bytes: usize, max_age: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            max_bytes,
            max_age,
            inner: Mutex::default(),
        }
    }

    /// Keep `response` under `id` (sizing it serializes it: call this off the async
    /// threads). Whether it was kept: one larger than the whole byte bound is not.
    pub fn insert(&self, id: String, response: StoredResponse) -> bool {
        let bytes = response.bytes();
        if bytes > self.max_bytes {
            tracing::warn!(id, bytes, "a response too large for the store was not kept");
            return false;
        }
        let mut e = self.lock();
        self.expire(&mut e);
        while e.by_id.len() >= self.capacity || e.bytes + bytes > self.max_bytes {
            let Some(oldest) = e.order.pop_front() else {
                break;
            };
            e.take(&oldest);
        }
        e.order.push_back(id.clone());
        e.bytes += bytes;
        let entry = Entry {
            at: Instant::now(),
            bytes,
            response,
        };
        if let Some(replaced) = e.by_id.insert(id, entry) {
            e.bytes -= replaced.bytes;
        }
        true
    }

    /// The response `id`, if `owner` created it.
    pub fn get(&self, id: &str, owner: Option<&Owner>) -> Option<StoredResponse> {
        let mut e = self.lock();
        self.expire(&mut e);
        e.by_id
            .get(id)
            .filter(|entry| entry.response.owner.as_ref() == owner)
            .map(|entry| entry.response.clone())
    }

    /// Delete the response `id` if `owner` created it; whether it did.
    pub fn remove(&self, id: &str, owner: Option<&Owner>) -> bool {
        let mut e = self.lock();
        self.expire(&mut e);
        let owned = e
            .by_id
            .get(id)
            .is_some_and(|entry| entry.response.owner.as_ref() == owner);
        if owned {
            e.order.retain(|o| o != id);
            e.take(id);
        }
        owned
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expire(&self, e: &mut Entries) {
        while let Some(oldest) = e.order.front() {
            match e.by_id.get(oldest) {
                Some(entry) if entry.at.elapsed() < self.max_age => break,
                _ => {
                    let id = e.order.pop_front().unwrap_or_default();
                    e.take(&id);
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
            owner: None,
        }
    }

    /// An entry of exactly `bytes` serialized bytes (a JSON string of `bytes - 2` letters).
    fn sized(bytes: usize) -> StoredResponse {
        StoredResponse {
            object: serde_json::json!("x".repeat(bytes - 2)),
            conversation: Vec::new(),
            owner: None,
        }
    }

    #[test]
    fn the_oldest_goes_when_full() {
        let store = ResponseStore::new(2, MAX_BYTES, Duration::from_secs(60));
        store.insert("a".into(), entry(1));
        store.insert("b".into(), entry(2));
        store.insert("c".into(), entry(3));
        assert!(store.get("a", None).is_none());
        assert_eq!(store.get("c", None).unwrap().object, 3);
        assert!(store.remove("b", None));
        assert!(!store.remove("b", None));
    }

    #[test]
    fn the_oldest_go_when_the_bytes_run_out_and_a_response_too_large_is_not_kept() {
        let store = ResponseStore::new(100, 1000, Duration::from_secs(60));
        for id in ["a", "b", "c"] {
            assert!(store.insert(id.into(), sized(400)));
        }
        // 1200 bytes do not fit 1000: the oldest went.
        assert!(store.get("a", None).is_none());
        assert!(store.get("b", None).is_some() && store.get("c", None).is_some());
        assert_eq!(store.bytes(), 800);
        assert!(!store.insert("huge".into(), sized(1001)));
        assert!(store.get("huge", None).is_none());
        assert_eq!(store.bytes(), 800);
        assert!(store.remove("b", None));
        assert_eq!(store.bytes(), 400);
    }

    #[test]
    fn only_the_creating_key_sees_or_deletes_a_response() {
        let store = ResponseStore::new(8, MAX_BYTES, Duration::from_secs(60));
        let (alice, bob) = (Owner::of(b"alice-key"), Owner::of(b"bob-key"));
        let mut mine = entry(1);
        mine.owner = Some(alice);
        store.insert("a".into(), mine);
        assert!(store.get("a", Some(&bob)).is_none());
        assert!(store.get("a", None).is_none());
        assert!(!store.remove("a", Some(&bob)));
        assert!(store.get("a", Some(&alice)).is_some());
        assert!(store.remove("a", Some(&alice)));
    }

    #[test]
    fn old_entries_expire() {
        let store = ResponseStore::new(8, MAX_BYTES, Duration::ZERO);
        store.insert("a".into(), entry(1));
        assert!(store.get("a", None).is_none());
    }
}
