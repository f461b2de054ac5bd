//! Sharing the queue between clients. A client is whoever the API says sent a request (an
//! API key when keys are on, else a connection; [`ANONYMOUS`] for callers that do not say).
//! Two rules keep one client from starving the others:
//! - the waiting places: one client's requests may fill at most [`client_share`] of the
//!   queue, so the rest is always open to others (past it that client gets 429);
//! - the free KV slots: the next request admitted is that of the client admitted least
//!   recently (clients with nothing admitted yet first), oldest first within a client, so
//!   clients take turns instead of one client's backlog running first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::SubmitError;

/// Who sent a request, as a number the engine can compare.
pub type ClientId = u64;

/// The client of requests whose sender is not told apart.
pub const ANONYMOUS: ClientId = 0;

/// Waiting places one client may hold: three quarters of the queue (all of a queue of 1).
pub fn client_share(queue_capacity: usize) -> usize {
    (queue_capacity - queue_capacity / 4).max(1)
}

/// Requests waiting for a slot: in all, and per client.
#[derive(Default)]
pub struct Waiting {
    total: AtomicUsize,
    by_client: Mutex<HashMap<ClientId, usize>>,
}

impl Waiting {
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Count `n` requests of `client` in, or none when the queue or the client's share of
    /// it cannot take them all.
    pub fn enter(&self, client: ClientId, n: usize, capacity: usize) -> Result<(), SubmitError> {
        let mut by_client = self.lock();
        let total = self.total.load(Ordering::SeqCst);
        let mine = by_client.get(&client).copied().unwrap_or(0);
        if total + n > capacity || mine + n > client_share(capacity) {
            return Err(SubmitError::QueueFull(capacity));
        }
        *by_client.entry(client).or_default() += n;
        self.total.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }

    /// One request of `client` that was taken out to be admitted waits again (its turn
    /// came but the cache had no room yet).
    pub fn restore(&self, client: ClientId) {
        *self.lock().entry(client).or_default() += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
    }

    /// `n` requests of `client` stopped waiting (admitted, refused or cancelled).
    pub fn leave(&self, client: ClientId, n: usize) {
        if n == 0 {
            return;
        }
        let mut by_client = self.lock();
        if let Some(mine) = by_client.get_mut(&client) {
            *mine = mine.saturating_sub(n);
            if *mine == 0 {
                by_client.remove(&client);
            }
        }
        self.total.fetch_sub(n, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, usize>> {
        self.by_client.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// When each client last had a request admitted, for taking turns.
#[derive(Default)]
pub struct Turns {
    last: HashMap<ClientId, u64>,
}

impl Turns {
    /// Which of the waiting requests (their clients, oldest first) goes next.
    pub fn next(&self, waiting: impl Iterator<Item = ClientId>) -> Option<usize> {
        waiting
            .enumerate()
            .min_by_key(|&(position, client)| (self.last.get(&client).copied(), position))
            .map(|(position, _)| position)
    }

    /// `client` had a request admitted as the `admission`-th.
    pub fn admitted(&mut self, client: ClientId, admission: u64) {
        self.last.insert(client, admission);
    }

    /// Forget clients with nothing waiting or running (the map stays as small as the set
    /// of active clients; a client that comes back starts as a newcomer).
    pub fn keep_only(&mut self, active: impl Fn(ClientId) -> bool) {
        self.last.retain(|&client, _| active(client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_cannot_fill_the_queue() {
        let waiting = Waiting::default();
        assert_eq!(client_share(8), 6);
        assert!(waiting.enter(1, 6, 8).is_ok());
        assert!(waiting.enter(1, 1, 8).is_err(), "client 1 holds its share");
        assert!(waiting.enter(2, 2, 8).is_ok(), "the rest is open to others");
        assert!(waiting.enter(3, 1, 8).is_err(), "the queue is full");
        waiting.leave(1, 6);
        assert_eq!(waiting.total(), 2);
        assert!(waiting.enter(1, 6, 8).is_ok());
    }

    #[test]
    fn clients_take_turns_oldest_first_within_one() {
        let mut turns = Turns::default();
        // Client 1 has three waiting, client 2 one, behind them.
        let queue = [1, 1, 1, 2];
        assert_eq!(turns.next(queue.into_iter()), Some(0));
        turns.admitted(1, 1);
        let queue = [1, 1, 2];
        assert_eq!(
            turns.next(queue.into_iter()),
            Some(2),
            "client 2 never had a turn"
        );
        turns.admitted(2, 2);
        let queue = [1, 1];
        assert_eq!(turns.next(queue.into_iter()), Some(0));
        turns.keep_only(|c| c == 1);
        assert_eq!(
            turns.next([2, 1].into_iter()),
            Some(0),
            "a forgotten client is new"
        );
    }
}
