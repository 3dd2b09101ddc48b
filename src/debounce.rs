//! Inbound debouncers (SPEC 2): one per channel, grouping a key's messages into batches.
//!
//! A debouncer never admits anything itself. Every operation that ends a buffer hands the batch
//! to an `admit` callback, which returns whether the pipeline took it; the gateway routes
//! refusals (SPEC 2.4). This keeps the debouncer a plain data structure that tests can drive
//! with a closure.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;

use crate::config::DURATION_MS_MAX;
use crate::event::FlushCause;
use crate::message::{Batch, ChannelId, Key, Message};

/// How much later than its first window a buffer may flush at the latest.
pub const MAX_WAIT_FACTOR: u64 = 5;

/// The longest deadline a registry-wide flush accepts, from now.
pub const FLUSH_ALL_DEADLINE_MAX_MS: u64 = 30_000;

/// What `offer` did with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// It waits in its key's buffer, which flushes at `due_ms` unless more arrives.
    Buffered {
        /// When the buffer flushes.
        due_ms: u64,
    },
    /// It was not debounced: it went to `admit` alone, after its key's buffer if any.
    Admitted,
}

/// The result of a `flush_all`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// False when the deadline came before every buffer was flushed.
    pub drained: bool,
    /// Batches the pipeline took.
    pub flushed: usize,
    /// Buffers left because the deadline came first.
    pub remaining: usize,
}

/// One key's buffer.
#[derive(Debug)]
struct Buffer {
    /// Creation order within the debouncer; `flush_all` goes oldest first.
    seq: u64,
    messages: Vec<Message>,
    /// The latest flush: `created + 5 x w_first`.
    max_due_ms: u64,
    due_ms: u64,
}

/// The debouncer of one channel.
#[derive(Debug)]
pub struct Debouncer {
    channel: ChannelId,
    window_ms: u64,
    keys_max: usize,
    buffers: HashMap<Key, Buffer>,
    /// Keys by buffer creation, for oldest-first flushes without iterating the hash map.
    by_seq: BTreeMap<u64, Key>,
    /// Armed timers: (due, seq).
    timers: BTreeSet<(u64, u64)>,
    next_seq: u64,
}

impl Debouncer {
    /// A debouncer for `channel` with default window `window_ms` (0: off) tracking at most
    /// `keys_max` keys.
    pub fn new(channel: ChannelId, window_ms: u64, keys_max: usize) -> Self {
        Self {
            channel,
            window_ms,
            keys_max,
            buffers: HashMap::default(),
            by_seq: BTreeMap::new(),
            timers: BTreeSet::new(),
            next_seq: 0,
        }
    }

    /// The channel this debouncer serves.
    pub fn channel(&self) -> &ChannelId {
        &self.channel
    }

    /// How many keys hold a buffer.
    pub fn buffered_keys(&self) -> usize {
        self.buffers.len()
    }

    /// How many messages the buffers hold, summed over keys.
    pub fn buffered_count(&self) -> usize {
        self.buffers.values().map(|buffer| buffer.messages.len()).sum()
    }

    /// The buffers' messages, oldest buffer first.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.by_seq.values().flat_map(|key| self.buffers[key].messages.iter())
    }

    /// When the next buffer is due, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.first().map(|&(due_ms, _)| due_ms)
    }

    /// Takes a message at `now_ms` (SPEC 2.2). A message that is not debounced goes to `admit`
    /// at once, after its key's buffer.
    pub fn offer(
        &mut self,
        now_ms: u64,
        message: Message,
        admit: &mut impl FnMut(Batch, FlushCause) -> bool,
    ) -> Offered {
        let window_ms = self.window_of(&message);
        let key = match &message.key {
            Some(key) if window_ms > 0 && message.debounce => key,
            _ => return self.admit_alone(message, admit),
        };

        if let Some(buffer) = self.buffers.get_mut(key) {
            return append(&mut self.timers, buffer, now_ms, message, window_ms);
        }
        if self.buffers.len() >= self.keys_max {
            admit(Batch::single(message), FlushCause::Unbuffered);
            return Offered::Admitted;
        }
        let key = key.clone();
        self.create(now_ms, key, message, window_ms)
    }

    /// Flushes every buffer due at `now_ms`, earliest first; returns how many the pipeline took.
    pub fn flush_due(
        &mut self,
        now_ms: u64,
        admit: &mut impl FnMut(Batch, FlushCause) -> bool,
    ) -> usize {
        let mut flushed = 0;
        while let Some(taken) = self.flush_first_due(now_ms, admit) {
            flushed += usize::from(taken);
        }
        flushed
    }

    /// Flushes the earliest buffer if it is due at `now_ms`: `None` when none is due, else
    /// whether the pipeline took the batch.
    pub fn flush_first_due(
        &mut self,
        now_ms: u64,
        admit: &mut impl FnMut(Batch, FlushCause) -> bool,
    ) -> Option<bool> {
        let &(due_ms, seq) = self.timers.first().filter(|&&(due_ms, _)| due_ms <= now_ms)?;
        let key = self.by_seq[&seq].clone();
        let max_wait = self.buffers[&key].max_due_ms == due_ms;
        let cause = if max_wait { FlushCause::MaxWait } else { FlushCause::Timer };
        Some(self.flush_key_as(&key, cause, admit))
    }

    /// Flushes one key's buffer; false if it had none or the pipeline refused the batch.
    pub fn flush_key(
        &mut self,
        key: &Key,
        admit: &mut impl FnMut(Batch, FlushCause) -> bool,
    ) -> bool {
        self.flush_key_as(key, FlushCause::FlushKey, admit)
    }

    /// Drops a key's buffer without admitting it; its batch goes to `cancelled` (SPEC 2.4).
    /// Returns whether anything was cancelled.
    pub fn cancel_key(&mut self, key: &Key, cancelled: &mut impl FnMut(Batch)) -> bool {
        match self.remove(key) {
            Some(batch) => {
                cancelled(batch);
                true
            }
            None => false,
        }
    }

    /// Flushes every buffer, oldest first, until `deadline_ms` (SPEC 2.4).
    ///
    /// Admission never waits, so a flush takes no virtual time: the deadline only matters when
    /// it has already passed at `now_ms`, and then nothing is flushed.
    pub fn flush_all(
        &mut self,
        now_ms: u64,
        deadline_ms: u64,
        cause: FlushCause,
        admit: &mut impl FnMut(Batch, FlushCause) -> bool,
    ) -> FlushReport {
        if now_ms >= deadline_ms && !self.buffers.is_empty() {
            return FlushReport { drained: false, flushed: 0, remaining: self.buffers.len() };
        }
        let mut flushed = 0;
        for batch in self.take_buffers() {
            flushed += usize::from(admit(batch, cause));
        }
        FlushReport { drained: true, flushed, remaining: 0 }
    }

    /// Takes every buffer out without admitting it, oldest first: what a flush could not reach
    /// goes to the handover this way.
    pub fn take_buffers(&mut self) -> Vec<Batch> {
        // Everything goes, so the timers and the order are dropped whole rather than entry by
        // entry: a restart's flush of many buffers costs one map lookup per buffer.
        self.timers.clear();
        let oldest_first = std::mem::take(&mut self.by_seq).into_values();
        let buffers = oldest_first.filter_map(|key| self.buffers.remove(&key));
        buffers.map(|buffer| Batch { messages: buffer.messages }).collect()
    }

    fn window_of(&self, message: &Message) -> u64 {
        match message.window_ms {
            // Bounded like a configured window, so a deadline never overflows.
            Some(window_ms) => u64::try_from(window_ms).unwrap_or(0).min(DURATION_MS_MAX),
            None => self.window_ms,
        }
    }

    fn admit_alone(
        &mut self,
        message: Message,
        admit: &mut impl FnMut(Batch, FlushCause) -> bool,
    ) -> Offered {
        if let Some(key) = &message.key {
            self.flush_key_as(&key.clone(), FlushCause::Immediate, admit);
        }
        admit(Batch::single(message), FlushCause::Unbuffered);
        Offered::Admitted
    }

    fn create(&mut self, now_ms: u64, key: Key, message: Message, window_ms: u64) -> Offered {
        let seq = self.next_seq;
        self.next_seq += 1;
        let due_ms = now_ms + window_ms;
        let max_due_ms = now_ms + MAX_WAIT_FACTOR * window_ms;

        self.by_seq.insert(seq, key.clone());
        self.timers.insert((due_ms, seq));
        self.buffers.insert(key, Buffer { seq, messages: vec![message], max_due_ms, due_ms });
        Offered::Buffered { due_ms }
    }

    fn flush_key_as(
        &mut self,
        key: &Key,
        cause: FlushCause,
        admit: &mut impl FnMut(Batch, FlushCause) -> bool,
    ) -> bool {
        match self.remove(key) {
            Some(batch) => admit(batch, cause),
            None => false,
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Batch> {
        let buffer = self.buffers.remove(key)?;
        self.by_seq.remove(&buffer.seq);
        self.timers.remove(&(buffer.due_ms, buffer.seq));
        Some(Batch { messages: buffer.messages })
    }
}

/// Adds a message to its key's buffer and pushes the buffer's flush back, never past its
/// bounded wait.
fn append(
    timers: &mut BTreeSet<(u64, u64)>,
    buffer: &mut Buffer,
    now_ms: u64,
    message: Message,
    window_ms: u64,
) -> Offered {
    let due_ms = (now_ms + window_ms).min(buffer.max_due_ms);
    timers.remove(&(buffer.due_ms, buffer.seq));
    timers.insert((due_ms, buffer.seq));
    buffer.due_ms = due_ms;
    buffer.messages.push(message);
    Offered::Buffered { due_ms }
}

/// Every debouncer of one generation, in registration order (SPEC 2.5).
///
/// A registry is an object owned by its generation, never a process global: the next
/// generation starts with a registry of its own, so nothing of an ended generation is reached by
/// accident.
#[derive(Debug, Default)]
pub struct Registry {
    debouncers: Vec<Debouncer>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a debouncer after the existing ones.
    pub fn register(&mut self, debouncer: Debouncer) {
        assert!(self.get(debouncer.channel()).is_none(), "one debouncer per channel");
        self.debouncers.push(debouncer);
    }

    /// The debouncer of a channel, if registered.
    pub fn get(&self, channel: &ChannelId) -> Option<&Debouncer> {
        self.debouncers.iter().find(|d| d.channel() == channel)
    }

    /// The debouncer of a channel, if registered, for changes.
    pub fn get_mut(&mut self, channel: &ChannelId) -> Option<&mut Debouncer> {
        self.debouncers.iter_mut().find(|d| d.channel() == channel)
    }

    /// The registered debouncers, in registration order.
    pub fn debouncers(&self) -> &[Debouncer] {
        &self.debouncers
    }

    /// Flushes a channel's debouncer, then unregisters it: a channel teardown never loses a
    /// buffered message. Returns how many batches the pipeline took.
    pub fn unregister(
        &mut self,
        channel: &ChannelId,
        admit: &mut impl FnMut(Batch, FlushCause) -> bool,
    ) -> usize {
        let Some(index) = self.debouncers.iter().position(|d| d.channel() == channel) else {
            return 0;
        };
        let mut debouncer = self.debouncers.remove(index);
        debouncer.flush_all(0, u64::MAX, FlushCause::Disconnect, admit).flushed
    }

    /// Flushes every debouncer in registration order under one deadline, clamped to
    /// [`FLUSH_ALL_DEADLINE_MAX_MS`] from now, and sums the results. Debouncers stay
    /// registered.
    pub fn flush_all(
        &mut self,
        now_ms: u64,
        deadline_ms: u64,
        admit: &mut impl FnMut(Batch, FlushCause) -> bool,
    ) -> FlushReport {
        let deadline_ms = deadline_ms.min(now_ms + FLUSH_ALL_DEADLINE_MAX_MS);
        let mut total = FlushReport { drained: true, flushed: 0, remaining: 0 };
        for debouncer in &mut self.debouncers {
            let report = debouncer.flush_all(now_ms, deadline_ms, FlushCause::FlushAll, admit);
            total.drained &= report.drained;
            total.flushed += report.flushed;
            total.remaining += report.remaining;
        }
        total
    }

    /// When the next buffer of any debouncer is due.
    pub fn next_deadline(&self) -> Option<u64> {
        self.debouncers.iter().filter_map(Debouncer::next_deadline).min()
    }

    /// Flushes every due buffer, earliest first across debouncers (ties in registration order),
    /// so a late tick admits batches in the order their timers fell due.
    pub fn flush_due(
        &mut self,
        now_ms: u64,
        admit: &mut impl FnMut(Batch, FlushCause) -> bool,
    ) -> usize {
        let mut flushed = 0;
        loop {
            let earliest = self
                .debouncers
                .iter_mut()
                .filter(|d| d.next_deadline().is_some_and(|due_ms| due_ms <= now_ms))
                .min_by_key(|d| d.next_deadline());
            let Some(debouncer) = earliest else { return flushed };
            flushed += usize::from(debouncer.flush_first_due(now_ms, admit) == Some(true));
        }
    }

    /// Takes every buffer of every debouncer out without admitting it.
    pub fn take_buffers(&mut self) -> Vec<Batch> {
        self.debouncers.iter_mut().flat_map(Debouncer::take_buffers).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::message::test_message as message;

    /// Admits every batch, writing it down as `[ids] cause`.
    fn recorder(admitted: &mut Vec<String>) -> impl FnMut(Batch, FlushCause) -> bool + '_ {
        |batch, cause| {
            let ids: Vec<String> = batch.identities().iter().map(|i| i.id.to_string()).collect();
            admitted.push(format!("[{}] {cause:?}", ids.join(" ")));
            true
        }
    }

    #[test]
    fn steady_input_flushes_at_five_windows() {
        let mut debouncer = Debouncer::new("tg".into(), 10, 2_048);
        let mut admitted = Vec::new();
        let mut admit = recorder(&mut admitted);
        let mut offered = Vec::new();
        for now_ms in (0..=60).step_by(5) {
            debouncer.flush_due(now_ms, &mut admit);
            offered.push(debouncer.offer(now_ms, message("a", &now_ms.to_string()), &mut admit));
        }
        drop(admit);

        assert_eq!(offered[9], Offered::Buffered { due_ms: 50 }, "t=45 is held to 5 x 10 ms");
        assert_eq!(admitted, ["[0 5 10 15 20 25 30 35 40 45] MaxWait"]);
        assert_eq!(offered[10], Offered::Buffered { due_ms: 60 }, "t=50 starts a new buffer");
        assert_eq!(debouncer.next_deadline(), Some(70));
    }

    #[test]
    fn keys_beyond_cap_are_admitted_at_once() {
        let mut debouncer = Debouncer::new("tg".into(), 10, 2);
        let mut admitted = Vec::new();
        let mut admit = recorder(&mut admitted);
        assert_eq!(
            debouncer.offer(0, message("a", "1"), &mut admit),
            Offered::Buffered { due_ms: 10 }
        );
        assert_eq!(
            debouncer.offer(0, message("b", "2"), &mut admit),
            Offered::Buffered { due_ms: 10 }
        );
        assert_eq!(debouncer.offer(0, message("c", "3"), &mut admit), Offered::Admitted);
        assert_eq!(
            debouncer.offer(1, message("a", "4"), &mut admit),
            Offered::Buffered { due_ms: 11 }
        );
        drop(admit);

        assert_eq!(admitted, ["[3] Unbuffered"]);
        let buffered: Vec<&str> = debouncer.messages().map(|m| m.id.as_str()).collect();
        assert_eq!(buffered, ["1", "4", "2"], "no buffered key was evicted");
    }

    #[test]
    fn negative_item_window_counts_as_zero() {
        let mut debouncer = Debouncer::new("tg".into(), 50, 2_048);
        let mut admitted = Vec::new();
        let item = Message { window_ms: Some(-5), ..message("a", "1") };
        assert_eq!(debouncer.offer(0, item, &mut recorder(&mut admitted)), Offered::Admitted);
        assert_eq!(admitted, ["[1] Unbuffered"]);
        assert_eq!(debouncer.buffered_keys(), 0);
    }

    /// A message's own window is bounded to a day like a configured one: the largest one a
    /// client can send holds the message a day, five at most, and overflows nothing.
    #[test]
    fn a_huge_item_window_is_bounded_to_a_day() {
        let mut debouncer = Debouncer::new("tg".into(), 50, 2_048);
        let mut admitted = Vec::new();
        let item = Message { window_ms: Some(i64::MAX), ..message("a", "1") };
        let offered = debouncer.offer(7, item, &mut recorder(&mut admitted));
        assert_eq!(offered, Offered::Buffered { due_ms: 7 + DURATION_MS_MAX });
        let again = Message { window_ms: Some(i64::MAX), ..message("a", "2") };
        let offered = debouncer.offer(7 + DURATION_MS_MAX, again, &mut recorder(&mut admitted));
        assert_eq!(offered, Offered::Buffered { due_ms: 7 + 2 * DURATION_MS_MAX });
        assert!(admitted.is_empty());
    }

    /// The counts and answers the gateway and its status line rely on: how many keys and
    /// messages are buffered, how many due buffers were taken, and whether a key's flush or
    /// cancel found a buffer.
    #[test]
    fn counts_and_answers() {
        let mut debouncer = Debouncer::new("tg".into(), 10, 2_048);
        let mut admitted = Vec::new();
        let mut admit = recorder(&mut admitted);
        for (at_ms, key, id) in [(0, "a", "1"), (0, "a", "2"), (1, "b", "3"), (2, "c", "4")] {
            debouncer.offer(at_ms, message(key, id), &mut admit);
        }
        assert_eq!(debouncer.buffered_keys(), 3);
        assert_eq!(debouncer.buffered_count(), 4);

        assert_eq!(debouncer.flush_due(11, &mut admit), 2, "a and b are due at 10 and 11");
        assert!(debouncer.flush_key(&"c".into(), &mut admit), "c had a buffer");
        assert!(!debouncer.flush_key(&"c".into(), &mut admit), "c has none any more");

        debouncer.offer(20, message("d", "5"), &mut admit);
        let mut cancelled = Vec::new();
        assert!(debouncer.cancel_key(&"d".into(), &mut |batch| cancelled.push(batch)));
        assert!(!debouncer.cancel_key(&"d".into(), &mut |batch| cancelled.push(batch)));
        drop(admit);

        assert_eq!(admitted, ["[1 2] Timer", "[3] Timer", "[4] FlushKey"]);
        assert_eq!(cancelled.len(), 1);
        assert_eq!((debouncer.buffered_keys(), debouncer.buffered_count()), (0, 0));
    }

    /// A refused batch is gone from the debouncer but not counted as taken.
    #[test]
    fn refused_batches_are_not_counted() {
        let mut debouncer = Debouncer::new("tg".into(), 10, 2_048);
        let mut refuse = |_: Batch, _: FlushCause| false;
        debouncer.offer(0, message("a", "1"), &mut refuse);
        debouncer.offer(0, message("b", "2"), &mut refuse);
        debouncer.offer(0, message("c", "3"), &mut refuse);

        assert_eq!(debouncer.flush_due(10, &mut refuse), 0);
        assert_eq!(debouncer.buffered_keys(), 0);
        debouncer.offer(20, message("d", "4"), &mut refuse);
        assert!(!debouncer.flush_key(&"d".into(), &mut refuse));
    }

    /// A flush whose deadline has passed takes nothing and says what is left; an empty
    /// debouncer is drained whatever the deadline.
    #[test]
    fn flush_all_after_its_deadline_leaves_the_buffers() {
        let mut debouncer = Debouncer::new("tg".into(), 10, 2_048);
        let mut admitted = Vec::new();
        let mut admit = recorder(&mut admitted);
        debouncer.offer(0, message("a", "1"), &mut admit);
        debouncer.offer(0, message("b", "2"), &mut admit);

        let late = debouncer.flush_all(5, 5, FlushCause::FlushAll, &mut admit);
        assert_eq!(late, FlushReport { drained: false, flushed: 0, remaining: 2 });
        assert_eq!(debouncer.buffered_keys(), 2);

        let in_time = debouncer.flush_all(5, 6, FlushCause::FlushAll, &mut admit);
        assert_eq!(in_time, FlushReport { drained: true, flushed: 2, remaining: 0 });
        let empty = debouncer.flush_all(9, 9, FlushCause::FlushAll, &mut admit);
        assert_eq!(empty, FlushReport { drained: true, flushed: 0, remaining: 0 });
        drop(admit);
        assert_eq!(admitted, ["[1] FlushAll", "[2] FlushAll"]);
    }

    /// Two channels' debouncers, one buffer in `tg` due at 10 and two in `sl` due at 5 and 12.
    fn two_channels() -> Registry {
        let mut registry = Registry::new();
        registry.register(Debouncer::new("tg".into(), 10, 2_048));
        registry.register(Debouncer::new("sl".into(), 5, 2_048));
        let mut refuse = |_: Batch, _: FlushCause| false;
        let on_sl = |key, id| Message { channel: "sl".into(), ..message(key, id) };
        let tg = registry.get_mut(&"tg".into()).expect("tg is registered");
        tg.offer(0, message("a", "1"), &mut refuse);
        let sl = registry.get_mut(&"sl".into()).expect("sl is registered");
        sl.offer(0, on_sl("b", "2"), &mut refuse);
        sl.offer(7, on_sl("c", "3"), &mut refuse);
        registry
    }

    /// The registry answers by channel and in registration order, and counts what it flushed
    /// across debouncers: due buffers earliest first, refusals left out.
    #[test]
    fn the_registry_counts_across_channels() {
        let mut registry = two_channels();
        let channels: Vec<&str> =
            registry.debouncers().iter().map(|d| d.channel().as_str()).collect();
        assert_eq!(channels, ["tg", "sl"]);
        assert_eq!(registry.get(&"sl".into()).map(Debouncer::buffered_count), Some(2));
        assert!(registry.get(&"wa".into()).is_none());

        let mut admitted = Vec::new();
        assert_eq!(registry.flush_due(11, &mut recorder(&mut admitted)), 2);
        assert_eq!(admitted, ["[2] Timer", "[1] Timer"], "sl's buffer fell due first");
        let mut refuse = |_: Batch, _: FlushCause| false;
        assert_eq!(registry.flush_due(12, &mut refuse), 0, "a refused batch is not counted");
        assert_eq!(registry.next_deadline(), None);
    }

    /// A flush of every channel sums the debouncers' reports: drained only when every one
    /// drained, and the buffers left when the deadline has passed.
    #[test]
    fn the_registry_sums_flush_reports() {
        let mut registry = two_channels();
        let mut admitted = Vec::new();
        let late = registry.flush_all(3, 3, &mut recorder(&mut admitted));
        assert_eq!(late, FlushReport { drained: false, flushed: 0, remaining: 3 });

        let in_time = registry.flush_all(3, 4, &mut recorder(&mut admitted));
        assert_eq!(in_time, FlushReport { drained: true, flushed: 3, remaining: 0 });
        assert_eq!(admitted, ["[1] FlushAll", "[2] FlushAll", "[3] FlushAll"]);

        let mut registry = two_channels();
        let taken: Vec<usize> = registry.take_buffers().iter().map(|b| b.messages.len()).collect();
        assert_eq!(taken, [1, 1, 1]);
        assert_eq!(registry.next_deadline(), None, "taken buffers leave no timer behind");
    }
}
