//! The replicas of one upstream engine: which one takes the next request (the healthy one
//! with the fewest requests outstanding), which are out (a failed request or health check
//! takes a replica out; a passing health check brings it back), and the health checks.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::engine::ReplicaHealth;

/// One base URL of an upstream engine.
pub struct Replica {
    /// The base URL requests go to (`…/v1`, no trailing slash).
    pub base: String,
    /// The URL as logs, errors, /health and /metrics show it: without user, password or
    /// query, where an operator might have put a credential.
    pub label: String,
    outstanding: AtomicUsize,
    healthy: AtomicBool,
}

impl Replica {
    pub fn new(base: String) -> Self {
        let label = match reqwest::Url::parse(&base) {
            Ok(mut url) => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.set_query(None);
                url.set_fragment(None);
                url.as_str().trim_end_matches('/').to_string()
            }
            Err(_) => "(invalid url)".into(),
        };
        Self {
            base,
            label,
            outstanding: AtomicUsize::new(0),
            // Trusted until a request or a health check fails: a server starting beside its
            // upstreams should not refuse its first requests.
            healthy: AtomicBool::new(true),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Take this replica out (a request or a health check failed) or bring it back.
    pub fn mark(&self, healthy: bool, model: &str, why: &str) {
        let was = self.healthy.swap(healthy, Ordering::SeqCst);
        if was != healthy {
            if healthy {
                tracing::info!(model, replica = %self.label, "upstream replica recovered");
            } else {
                tracing::warn!(model, replica = %self.label, why, "upstream replica taken out");
            }
        }
    }

    /// Count a request as outstanding on this replica until the guard drops.
    pub fn begin(self: &Arc<Self>) -> Outstanding {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        Outstanding(self.clone())
    }

    pub fn health(&self) -> ReplicaHealth {
        ReplicaHealth {
            url: self.label.clone(),
            healthy: self.is_healthy(),
            outstanding: self.outstanding(),
        }
    }
}

/// A request outstanding on a replica; dropping it ends the count.
pub struct Outstanding(Arc<Replica>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The replicas of one upstream, in catalog order.
pub struct Replicas {
    pub list: Vec<Arc<Replica>>,
    /// Where the scan for the least loaded starts, turning each time, so that equally
    /// loaded replicas take turns instead of the first taking every request.
    turn: AtomicUsize,
}

impl Replicas {
    pub fn new(urls: Vec<String>) -> Self {
        Self {
            list: urls
                .into_iter()
                .map(|u| Arc::new(Replica::new(u)))
                .collect(),
            turn: AtomicUsize::new(0),
        }
    }

    /// The healthy replica not yet `tried` with the fewest outstanding requests.
    pub fn pick(&self, tried: &[bool]) -> Option<(usize, Arc<Replica>)> {
        let n = self.list.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| !tried.get(i).copied().unwrap_or(false) && self.list[i].is_healthy())
            // min_by_key keeps the first of equal minima: the one the turn reached first.
            .min_by_key(|&i| self.list[i].outstanding())
            .map(|i| (i, self.list[i].clone()))
    }

    pub fn healthy(&self) -> usize {
        self.list.iter().filter(|r| r.is_healthy()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(n: usize) -> Replicas {
        Replicas::new(
            (0..n)
                .map(|i| format!("http://10.0.0.{i}:8000/v1"))
                .collect(),
        )
    }

    #[test]
    fn least_outstanding_wins_and_ties_take_turns() {
        let r = replicas(3);
        let _busy = (r.list[0].begin(), r.list[0].begin(), r.list[1].begin());
        for _ in 0..5 {
            assert_eq!(r.pick(&[false; 3]).unwrap().0, 2);
        }
        let idle = replicas(2);
        let picks: Vec<usize> = (0..4).map(|_| idle.pick(&[false; 2]).unwrap().0).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");
    }

    #[test]
    fn out_and_tried_replicas_are_skipped() {
        let r = replicas(3);
        r.list[1].mark(false, "m", "test");
        assert_eq!(r.healthy(), 2);
        for _ in 0..4 {
            assert_ne!(r.pick(&[false; 3]).unwrap().0, 1);
        }
        assert_eq!(r.pick(&[true, false, false]).unwrap().0, 2);
        assert!(r.pick(&[true, false, true]).is_none());
        r.list[1].mark(true, "m", "test");
        assert_eq!(r.pick(&[true, false, true]).unwrap().0, 1);
    }

    #[test]
    fn the_outstanding_count_ends_with_its_guard() {
        let r = replicas(1);
        let guard = r.list[0].begin();
        assert_eq!(r.list[0].outstanding(), 1);
        drop(guard);
        assert_eq!(r.list[0].outstanding(), 0);
    }

    #[test]
    fn labels_leave_credentials_out() {
        let r = Replica::new("https://user:secret@api.example.com/v1?key=secret".into());
        assert_eq!(r.label, "https://api.example.com/v1");
        assert!(!r.label.contains("secret"));
    }
}
