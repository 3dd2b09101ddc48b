//! The dedupe memory (SPEC 5.2): identities accepted in the last 5 minutes, at most 10,000.
//!
//! Channels redeliver after a timeout or a reconnect; refusing an identity seen recently keeps
//! one message from being owed two outcomes. The memory travels with the handover and the
//! state file, so a redelivery after a restart is still recognised.

use std::collections::VecDeque;

use foldhash::HashMap;

use crate::message::Identity;

/// How long an accepted identity is remembered.
pub const DEDUPE_TTL_MS: u64 = 5 * 60 * 1_000;

/// How many identities are remembered at most; the oldest is forgotten first.
pub const DEDUPE_CAPACITY: usize = 10_000;

/// Identities accepted recently, oldest first.
#[derive(Debug, Default)]
pub struct Dedupe {
    /// (identity, accepted at), oldest first.
    order: VecDeque<(Identity, u64)>,
    /// For lookup only; never iterated.
    seen: HashMap<Identity, u64>,
}

impl Dedupe {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers `identity` as accepted at `now_ms`, unless it was accepted within the TTL:
    /// then returns false and remembers nothing.
    pub fn admit(&mut self, now_ms: u64, identity: &Identity) -> bool {
        if self.contains(now_ms, identity) {
            return false;
        }
        self.remember(identity.clone(), now_ms);
        true
    }

    /// Whether `identity` was accepted within the TTL before `now_ms`.
    pub fn contains(&mut self, now_ms: u64, identity: &Identity) -> bool {
        self.forget_expired(now_ms);
        self.seen.contains_key(identity)
    }

    /// How many identities are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The remembered identities with their age at `now_ms`, oldest first: what a handover
    /// carries. Ages, not times, because the next boot's clock starts from its own zero.
    pub fn export(&self, now_ms: u64) -> Vec<(Identity, u64)> {
        let fresh = self.order.iter().filter(|(_, at_ms)| at_ms + DEDUPE_TTL_MS > now_ms);
        fresh.map(|(identity, at_ms)| (identity.clone(), now_ms.saturating_sub(*at_ms))).collect()
    }

    /// Restores identities exported by [`Dedupe::export`], as of `now_ms`.
    ///
    /// An age older than `now_ms` is clamped to the clock's zero: the entry is then kept a
    /// little longer than 5 minutes, never shorter, because the time the process was down is
    /// unknown without a wall clock.
    pub fn import(&mut self, now_ms: u64, entries: &[(Identity, u64)]) {
        for (identity, age_ms) in entries {
            if !self.seen.contains_key(identity) && *age_ms < DEDUPE_TTL_MS {
                self.remember(identity.clone(), now_ms.saturating_sub(*age_ms));
            }
        }
    }

    fn remember(&mut self, identity: Identity, at_ms: u64) {
        if self.order.len() == DEDUPE_CAPACITY {
            self.forget_oldest();
        }
        self.seen.insert(identity.clone(), at_ms);
        self.order.push_back((identity, at_ms));
    }

    fn forget_expired(&mut self, now_ms: u64) {
        while self.order.front().is_some_and(|(_, at_ms)| at_ms + DEDUPE_TTL_MS <= now_ms) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((identity, _)) = self.order.pop_front() {
            self.seen.remove(&identity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(channel: &str, id: &str) -> Identity {
        Identity { channel: channel.into(), id: id.into() }
    }

    #[test]
    fn refuses_a_repeat_within_five_minutes() {
        let mut dedupe = Dedupe::new();
        assert!(dedupe.admit(0, &identity("tg", "1")));
        assert!(!dedupe.admit(DEDUPE_TTL_MS - 1, &identity("tg", "1")));
        assert!(dedupe.admit(1, &identity("slack", "1")));
    }

    #[test]
    fn forgets_after_five_minutes() {
        let mut dedupe = Dedupe::new();
        assert!(dedupe.admit(0, &identity("tg", "1")));
        assert!(dedupe.admit(DEDUPE_TTL_MS, &identity("tg", "1")));
        assert_eq!(dedupe.len(), 1);
    }

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let mut dedupe = Dedupe::new();
        for n in 0..=DEDUPE_CAPACITY {
            assert!(dedupe.admit(0, &identity("tg", &n.to_string())));
        }
        assert_eq!(dedupe.len(), DEDUPE_CAPACITY);
        assert!(dedupe.admit(0, &identity("tg", "0")), "the oldest was forgotten");
        assert!(!dedupe.admit(0, &identity("tg", "2")), "a younger one is still known");
    }

    #[test]
    fn is_empty_until_something_is_accepted() {
        let mut dedupe = Dedupe::new();
        assert!(dedupe.is_empty());
        dedupe.admit(0, &identity("tg", "1"));
        assert!(!dedupe.is_empty());
    }

    #[test]
    fn export_leaves_out_what_has_expired() {
        let mut dedupe = Dedupe::new();
        dedupe.admit(0, &identity("tg", "old"));
        dedupe.admit(1, &identity("tg", "young"));
        let exported = dedupe.export(DEDUPE_TTL_MS);
        assert_eq!(exported, vec![(identity("tg", "young"), DEDUPE_TTL_MS - 1)]);
    }

    #[test]
    fn import_skips_known_and_expired_entries() {
        let mut dedupe = Dedupe::new();
        dedupe.admit(0, &identity("tg", "known"));
        let entries = [
            (identity("tg", "known"), 10),
            (identity("tg", "expired"), DEDUPE_TTL_MS),
            (identity("tg", "fresh"), DEDUPE_TTL_MS - 1),
        ];
        dedupe.import(DEDUPE_TTL_MS, &entries);
        assert_eq!(dedupe.len(), 2, "the known one once, the fresh one; not the expired one");
        assert!(dedupe.admit(DEDUPE_TTL_MS, &identity("tg", "expired")));
    }

    #[test]
    fn export_and_import_keep_ages() {
        let mut dedupe = Dedupe::new();
        dedupe.admit(1_000, &identity("tg", "1"));
        let exported = dedupe.export(61_000);
        assert_eq!(exported, vec![(identity("tg", "1"), 60_000)]);

        let mut next = Dedupe::new();
        next.import(100_000, &exported);
        assert!(!next.admit(100_000 + DEDUPE_TTL_MS - 60_001, &identity("tg", "1")));
        assert!(next.admit(100_000 + DEDUPE_TTL_MS - 60_000, &identity("tg", "1")));
    }
}
