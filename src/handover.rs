//! The handover (SPEC 4.2 phase 5): what a generation passes on, to the next generation on
//! reload or to the state file on stop, and its versioned encoding.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::message::{Identity, Message, SessionId, Work};
use crate::pipeline::Summary;

/// The state file's format version. A file of another version is set aside, never guessed at.
pub const STATE_VERSION: u32 = 1;

const STATE_FORMAT: &str = "quiesce-state";

/// One session's pending work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionWork {
    /// The session.
    pub session: SessionId,
    /// Its batches in queue order, with their attempt counts.
    pub work: Vec<Work>,
    /// The summary of dropped messages its next run reports.
    pub summary: Option<Summary>,
    /// What was left of the back-off of a failed batch, from the handover.
    pub retry_in_ms: u64,
}

/// What a generation passes on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// Pending work, session by session; admitted first, as is.
    pub pending: Vec<SessionWork>,
    /// Messages accepted during the restart, in acceptance order; they go through the next
    /// generation's debouncers.
    pub intake: Vec<Message>,
    /// The dedupe memory: identities with their age in ms, oldest first.
    pub dedupe: Vec<(Identity, u64)>,
}

impl Handover {
    /// Every message it holds: pending work first, then the intake.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        let pending = self.pending.iter().flat_map(|p| p.work.iter());
        pending.flat_map(|w| w.batch.messages.iter()).chain(self.intake.iter())
    }

    /// Whether it holds no message (the dedupe memory aside).
    pub fn is_empty(&self) -> bool {
        self.messages().next().is_none()
    }
}

/// The state file on disk: a format tag and a version around the handover.
#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    version: u32,
    handover: Handover,
}

/// Why a state file could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a quiesce state file, or damaged.
    Corrupt(String),
    /// A quiesce state file of a version this build does not know.
    UnknownVersion(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(why) => write!(f, "state file is corrupt: {why}"),
            Self::UnknownVersion(v) => {
                write!(f, "state file has version {v}, this build reads version {STATE_VERSION}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Encodes a handover as a state file's bytes (JSON).
pub fn encode(handover: &Handover) -> Vec<u8> {
    let file = StateFile {
        format: STATE_FORMAT.to_owned(),
        version: STATE_VERSION,
        handover: handover.clone(),
    };
    serde_json::to_vec_pretty(&file).expect("a handover always serializes")
}

/// Decodes a state file's bytes.
pub fn decode(bytes: &[u8]) -> Result<Handover, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(STATE_FORMAT) {
        return Err(DecodeError::Corrupt("missing the quiesce-state format tag".to_owned()));
    }
    let version = value.get("version").and_then(serde_json::Value::as_u64).unwrap_or(0);
    if version != u64::from(STATE_VERSION) {
        return Err(DecodeError::UnknownVersion(u32::try_from(version).unwrap_or(u32::MAX)));
    }
    let file: StateFile =
        serde_json::from_value(value).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    Ok(file.handover)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Batch;

    fn message(id: &str) -> Message {
        Message {
            channel: "tg".into(),
            id: id.into(),
            key: Some("k".into()),
            session: "s".into(),
            destination: "d".into(),
            text: "hello".into(),
            debounce: true,
            window_ms: None,
        }
    }

    #[test]
    fn round_trips() {
        let handover = Handover {
            pending: vec![SessionWork {
                session: "s".into(),
                work: vec![Work {
                    batch: Batch::single(message("1")),
                    attempts: 2,
                    interrupted: true,
                }],
                summary: Some(Summary { dropped: 1, lines: vec!["x".to_owned()] }),
                retry_in_ms: 40,
            }],
            intake: vec![message("2")],
            dedupe: vec![(message("1").identity(), 7)],
        };
        assert_eq!(decode(&encode(&handover)), Ok(handover));
    }

    #[test]
    fn refuses_an_unknown_version() {
        let bytes = br#"{"format":"quiesce-state","version":9,"handover":{}}"#;
        assert_eq!(decode(bytes), Err(DecodeError::UnknownVersion(9)));
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(decode(b"{not json"), Err(DecodeError::Corrupt(_))));
        assert!(matches!(decode(br#"{"version":1}"#), Err(DecodeError::Corrupt(_))));
    }
}
