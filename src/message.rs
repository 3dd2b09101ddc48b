//! Messages, their names and the batches they travel in.
//!
//! Every name is a cheap-to-clone shared string: a message moves between places (a buffer, a
//! queue, a run, the intake, the handover) many times, and events name it each time.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

macro_rules! name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Arc<str>);

        /// Equal text, checked by pointer first: clones of one name share their text, and the
        /// pointer spares a read of text that is often far away in memory.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
            }
        }

        impl Eq for $name {}

        /// The text's hash, as equality compares the text.
        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.0.hash(state);
            }
        }

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self(Arc::from(text))
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self(Arc::from(text))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
    };
}

name!(
    /// A source of messages: one bot, one app. Each channel has one debouncer.
    ChannelId
);
name!(
    /// A message's id within its channel.
    MessageId
);
name!(
    /// The debounce grouping: channel, conversation, thread and sender.
    Key
);
name!(
    /// An agent conversation; it has at most one run at a time.
    SessionId
);
name!(
    /// Where replies go: channel, conversation and thread.
    Destination
);

/// A message's identity: what dedupe remembers and what every event names.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The channel the message came from.
    pub channel: ChannelId,
    /// Its id within that channel.
    pub id: MessageId,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.channel, self.id)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One inbound item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The channel it came from.
    pub channel: ChannelId,
    /// Its id within the channel.
    pub id: MessageId,
    /// Its debounce grouping; a message without a key is never debounced.
    pub key: Option<Key>,
    /// The session its runs belong to.
    pub session: SessionId,
    /// Where its replies go.
    pub destination: Destination,
    /// What the sender wrote.
    pub text: Arc<str>,
    /// Whether it may wait in a debounce buffer; control messages are sent with it off.
    pub debounce: bool,
    /// The per-item window resolver's answer, if it gave one. A negative value counts as 0,
    /// one above [`crate::config::DURATION_MS_MAX`] (a day) as a day.
    pub window_ms: Option<i64>,
}

impl Message {
    /// The message's identity `(channel, id)`.
    pub fn identity(&self) -> Identity {
        Identity { channel: self.channel.clone(), id: self.id.clone() }
    }
}

/// The messages of one key flushed together, in arrival order.
///
/// A batch is never empty and all its messages share one key, session and destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The messages, oldest first.
    pub messages: Vec<Message>,
}

impl Batch {
    /// A batch of one message.
    pub fn single(message: Message) -> Self {
        Self { messages: vec![message] }
    }

    /// The session every message of the batch belongs to.
    pub fn session(&self) -> &SessionId {
        &self.head().session
    }

    /// The destination every message of the batch replies to.
    pub fn destination(&self) -> &Destination {
        &self.head().destination
    }

    /// The key the batch was grouped by, if any.
    pub fn key(&self) -> Option<&Key> {
        self.head().key.as_ref()
    }

    /// The identities of the batch's messages, in order.
    pub fn identities(&self) -> Vec<Identity> {
        self.messages.iter().map(Message::identity).collect()
    }

    /// How many messages the batch holds.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Always false: a batch is never empty. Present for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    fn head(&self) -> &Message {
        assert!(!self.messages.is_empty(), "a batch is never empty");
        &self.messages[0]
    }
}

/// A batch waiting in a followup queue, or running, with what its past runs left on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    /// The messages.
    pub batch: Batch,
    /// How many of its runs failed so far.
    pub attempts: u32,
    /// Whether a stop cut its last run short; it then runs once after the next boot.
    pub interrupted: bool,
}

impl Work {
    /// A batch that has not run yet.
    pub fn fresh(batch: Batch) -> Self {
        Self { batch, attempts: 0, interrupted: false }
    }
}

/// A message for the library's unit tests: message `id` of `key` on channel `tg`, the key also
/// naming its session and destination, the id its text, debounced.
#[cfg(test)]
pub(crate) fn test_message(key: &str, id: &str) -> Message {
    Message {
        channel: "tg".into(),
        id: id.into(),
        key: Some(key.into()),
        session: key.into(),
        destination: key.into(),
        text: id.into(),
        debounce: true,
        window_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn names_compare_by_text_whatever_the_allocation() {
        let (a, b) = (Key::from("k1"), Key::from("k1"));
        assert!(!Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, b);
        assert_eq!(a, a.clone());
        assert_ne!(a, Key::from("k2"));
        let hasher = std::collections::hash_map::RandomState::new();
        assert_eq!(hasher.hash_one(&a), hasher.hash_one(&b));
    }
}
