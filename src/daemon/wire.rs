//! The wire protocol: newline-delimited JSON requests from channels, one JSON reply line each.
//!
//! A request line is one JSON object: a message, or a control request
//! (`{"control":"status"}`, `{"control":"reload"}`). Every request gets exactly one reply
//! line, in order, so a channel may pipeline its requests. A line that is not a valid request
//! (bad JSON, a missing or mistyped field, an unknown field, an over-long line) gets an error
//! reply naming the problem, and the connection goes on: a bad line never closes the
//! connection and never affects another line. Blank lines are skipped without a reply.
//!
//! This module only parses and renders; it never talks to the gateway. `docs/DAEMON.md`
//! documents every request and reply.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::event::{Phase, Refusal};
use crate::gateway::{Reply, Status};
use crate::message::Message;

/// The longest request line read, in bytes, without its newline: 64 KiB.
///
/// A longer line is skipped up to its newline and answered with a `line_too_long` error; the
/// lines after it are read as usual. The bound keeps one channel from making the daemon hold an
/// unbounded line in memory.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// The fields a message request may carry.
const MESSAGE_FIELDS: [&str; 8] =
    ["channel", "id", "key", "session", "destination", "text", "debounce", "window_ms"];

/// One request line, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A message offered for acceptance.
    Offer(Message),
    /// `{"control":"status"}`: what the gateway holds, by number.
    Status,
    /// `{"control":"reload"}`: an internal reload, with the config file read afresh.
    Reload,
}

/// What is wrong with a request line. Each has a fixed snake_case name on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// Not JSON, not UTF-8, or not a JSON object.
    BadJson,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type, or is empty where a name is needed.
    BadField,
    /// A field the protocol does not know (a misspelt name is never silently ignored).
    UnknownField,
    /// A `control` value other than `status` and `reload`.
    UnknownControl,
    /// The line is longer than [`LINE_BYTES_MAX`].
    LineTooLong,
}

/// A request line that was refused, with what the reply says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    /// What is wrong.
    pub problem: Problem,
    /// The field at fault, when one is.
    pub field: Option<String>,
    /// A sentence for the person reading the reply.
    pub detail: String,
    /// The message's channel, when the line named one, so a pipelining sender can match the
    /// error to its message.
    pub channel: Option<String>,
    /// The message's id, when the line named one.
    pub id: Option<String>,
}

impl WireError {
    fn new(problem: Problem, field: Option<&str>, detail: impl Into<String>) -> Self {
        let field = field.map(str::to_owned);
        Self { problem, field, detail: detail.into(), channel: None, id: None }
    }

    /// The error for a line of `bytes` bytes, longer than [`LINE_BYTES_MAX`].
    pub fn line_too_long(bytes: usize) -> Self {
        let detail = format!("line of {bytes} bytes is longer than {LINE_BYTES_MAX} bytes");
        Self::new(Problem::LineTooLong, None, detail)
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for WireError {}

/// Parses one request line (without its newline).
///
/// # Errors
///
/// A [`WireError`] naming the first problem found; fields are checked in a fixed order, so
/// one line always gives the same error.
pub fn parse(line: &[u8]) -> Result<Request, WireError> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| WireError::new(Problem::BadJson, None, format!("not valid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(WireError::new(Problem::BadJson, None, "a request must be a JSON object"));
    };
    if object.contains_key("control") {
        return parse_control(&object);
    }
    parse_message(&object).map(Request::Offer)
}

fn parse_control(object: &Map<String, Value>) -> Result<Request, WireError> {
    if let Some(other) = object.keys().find(|k| *k != "control") {
        let detail = format!("unknown field {other:?} in a control request");
        return Err(WireError::new(Problem::UnknownField, Some(other), detail));
    }
    match object.get("control") {
        Some(Value::String(name)) if name == "status" => Ok(Request::Status),
        Some(Value::String(name)) if name == "reload" => Ok(Request::Reload),
        Some(Value::String(name)) => {
            let detail = format!("unknown control {name:?}; expected status or reload");
            Err(WireError::new(Problem::UnknownControl, Some("control"), detail))
        }
        _ => Err(WireError::new(Problem::BadField, Some("control"), "control must be a string")),
    }
}

fn parse_message(object: &Map<String, Value>) -> Result<Message, WireError> {
    let echo = |mut error: WireError| {
        error.channel = object.get("channel").and_then(Value::as_str).map(str::to_owned);
        error.id = object.get("id").and_then(Value::as_str).map(str::to_owned);
        error
    };
    if let Some(other) = object.keys().find(|k| !MESSAGE_FIELDS.contains(&k.as_str())) {
        let detail = format!("unknown field {other:?}");
        return Err(echo(WireError::new(Problem::UnknownField, Some(other), detail)));
    }

    let fields = Fields(object);
    let message = Message {
        channel: fields.name("channel").map_err(echo)?.into(),
        id: fields.name("id").map_err(echo)?.into(),
        key: fields.optional_name("key").map_err(echo)?.map(Into::into),
        session: fields.name("session").map_err(echo)?.into(),
        destination: fields.name("destination").map_err(echo)?.into(),
        text: fields.text("text").map_err(echo)?.into(),
        debounce: fields.flag("debounce", true).map_err(echo)?,
        window_ms: fields.integer("window_ms").map_err(echo)?,
    };
    Ok(message)
}

/// The fields of a message request, read one by one with the error for each.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// A required, non-empty string.
    fn name(&self, field: &str) -> Result<&str, WireError> {
        match self.optional_name(field)? {
            Some(name) => Ok(name),
            None => Err(WireError::new(
                Problem::MissingField,
                Some(field),
                format!("missing field {field}"),
            )),
        }
    }

    /// A non-empty string, or nothing (absent or `null`).
    fn optional_name(&self, field: &str) -> Result<Option<&str>, WireError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(name)) if name.is_empty() => {
                Err(bad_field(field, "must not be empty"))
            }
            Some(Value::String(name)) => Ok(Some(name)),
            Some(_) => Err(bad_field(field, "must be a string")),
        }
    }

    /// A required string, which may be empty.
    fn text(&self, field: &str) -> Result<&str, WireError> {
        match self.0.get(field) {
            Some(Value::String(text)) => Ok(text),
            None | Some(Value::Null) => Err(WireError::new(
                Problem::MissingField,
                Some(field),
                format!("missing field {field}"),
            )),
            Some(_) => Err(bad_field(field, "must be a string")),
        }
    }

    /// An optional boolean.
    fn flag(&self, field: &str, default: bool) -> Result<bool, WireError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(_) => Err(bad_field(field, "must be true or false")),
        }
    }

    /// An optional integer.
    fn integer(&self, field: &str) -> Result<Option<i64>, WireError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => match value.as_i64() {
                Some(number) => Ok(Some(number)),
                None => Err(bad_field(field, "must be a whole number")),
            },
        }
    }
}

fn bad_field(field: &str, reason: &str) -> WireError {
    WireError::new(Problem::BadField, Some(field), format!("field {field} {reason}"))
}

/// The answer to one request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The gateway's reply to a message, with the message's identity.
    Offer {
        /// The message's channel.
        channel: String,
        /// The message's id.
        id: String,
        /// What the gateway said.
        reply: Reply,
    },
    /// The gateway's status; `None` once it has stopped.
    Status(Option<Status>),
    /// Whether the reload was handed to the gateway; false once it has stopped.
    Reload(bool),
    /// The line was refused.
    Error(WireError),
}

/// A reply line as JSON, field by field in a fixed order.
#[derive(Serialize)]
struct Line<'a> {
    reply: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    /// Whether sending the same request again later may succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Problem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(flatten)]
    status: Option<StatusLine>,
}

impl Line<'_> {
    fn named(reply: &'static str) -> Self {
        Self {
            reply,
            channel: None,
            id: None,
            retry: None,
            error: None,
            field: None,
            detail: None,
            status: None,
        }
    }
}

/// The status fields of a `status` reply.
#[derive(Serialize)]
struct StatusLine {
    boot: u32,
    generation: u32,
    /// The last phase completed of a restart in progress; `null` between restarts.
    phase: Option<&'static str>,
    buffered: usize,
    queued: usize,
    running: usize,
    intake: usize,
}

impl From<&Status> for StatusLine {
    fn from(status: &Status) -> Self {
        Self {
            boot: status.boot,
            generation: status.generation,
            phase: status.phase.map(Phase::name),
            buffered: status.buffered,
            queued: status.queued,
            running: status.running,
            intake: status.intake,
        }
    }
}

/// Renders a response as one JSON line, without the newline.
pub fn render(response: &Response) -> String {
    let line = match response {
        Response::Offer { channel, id, reply } => {
            let (name, retry) = match reply {
                Reply::Accepted => ("accepted", None),
                Reply::Refused(Refusal::Duplicate) => ("duplicate", Some(false)),
                Reply::Refused(Refusal::Busy) => ("busy", Some(true)),
                Reply::Refused(Refusal::Stopping) => ("stopping", Some(true)),
            };
            Line { channel: Some(channel), id: Some(id), retry, ..Line::named(name) }
        }
        Response::Status(Some(status)) => {
            Line { status: Some(StatusLine::from(status)), ..Line::named("status") }
        }
        Response::Reload(true) => Line::named("reload"),
        Response::Status(None) | Response::Reload(false) => {
            Line { retry: Some(true), ..Line::named("stopping") }
        }
        Response::Error(error) => Line {
            channel: error.channel.as_deref(),
            id: error.id.as_deref(),
            retry: Some(false),
            error: Some(error.problem),
            field: error.field.as_deref(),
            detail: Some(&error.detail),
            ..Line::named("error")
        },
    };
    serde_json::to_string(&line).expect("a reply line always serializes")
}

/// One line read from a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadLine {
    /// A line within the bound, without its newline (and without a `\r` before it).
    Line(Vec<u8>),
    /// A line longer than the bound, skipped; it was this many bytes long.
    TooLong(usize),
}

/// Reads newline-terminated lines of at most `max_bytes`, skipping over longer ones.
///
/// A last line without a newline before the end of the stream counts as a line.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    max_bytes: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Reads lines from `inner`, refusing those longer than `max_bytes`.
    pub fn new(inner: R, max_bytes: usize) -> Self {
        Self { inner, max_bytes }
    }

    /// The next line; `None` at the end of the stream.
    ///
    /// An over-long line is consumed up to its newline without being kept, so memory stays
    /// bounded by `max_bytes` plus the reader's buffer.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the part of a line read so far is lost if the future is dropped. The
    /// daemon awaits it outside any `select!`.
    ///
    /// # Errors
    ///
    /// The stream's I/O error.
    pub async fn next(&mut self) -> std::io::Result<Option<ReadLine>> {
        let mut line = Vec::new();
        let mut skipped: Option<usize> = None;
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                let at_end = line.is_empty() && skipped.is_none();
                return Ok((!at_end).then(|| finish(line, skipped)));
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            match &mut skipped {
                Some(bytes) => *bytes += chunk.len(),
                None if line.len() + chunk.len() > self.max_bytes => {
                    skipped = Some(line.len() + chunk.len());
                    line = Vec::new();
                }
                None => line.extend_from_slice(chunk),
            }

            let consumed = chunk.len() + usize::from(newline.is_some());
            self.inner.consume(consumed);
            if newline.is_some() {
                return Ok(Some(finish(line, skipped)));
            }
        }
    }
}

fn finish(mut line: Vec<u8>, skipped: Option<usize>) -> ReadLine {
    if let Some(bytes) = skipped {
        return ReadLine::TooLong(bytes);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    ReadLine::Line(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: &str) -> WireError {
        match parse(line.as_bytes()) {
            Err(error) => error,
            Ok(request) => panic!("{line} parsed as {request:?}"),
        }
    }

    const FULL: &str =
        r#"{"channel":"tg","id":"m1","key":"k","session":"s","destination":"d","text":"hi"}"#;

    #[test]
    fn parses_a_message_with_defaults() {
        let Ok(Request::Offer(message)) = parse(FULL.as_bytes()) else { panic!("not an offer") };

        assert_eq!(message.identity().to_string(), "tg/m1");
        assert_eq!(message.key.as_ref().map(|k| k.as_str()), Some("k"));
        assert!(message.debounce);
        assert_eq!(message.window_ms, None);
    }

    #[test]
    fn parses_controls() {
        assert_eq!(parse(br#"{"control":"status"}"#), Ok(Request::Status));
        assert_eq!(parse(br#"{"control":"reload"}"#), Ok(Request::Reload));
        assert_eq!(error(r#"{"control":"stop"}"#).problem, Problem::UnknownControl);
        assert_eq!(error(r#"{"control":"status","x":1}"#).problem, Problem::UnknownField);
    }

    #[test]
    fn names_each_problem() {
        assert_eq!(error("{not json").problem, Problem::BadJson);
        assert_eq!(error("[1,2]").problem, Problem::BadJson);

        let missing = error(r#"{"channel":"tg","id":"m1","destination":"d","text":""}"#);
        assert_eq!(
            (missing.problem, missing.field.as_deref()),
            (Problem::MissingField, Some("session"))
        );
        assert_eq!((missing.channel.as_deref(), missing.id.as_deref()), (Some("tg"), Some("m1")));

        let typed = error(&FULL.replace(r#""id":"m1""#, r#""id":7"#));
        assert_eq!((typed.problem, typed.field.as_deref()), (Problem::BadField, Some("id")));

        let unknown = error(&FULL.replace(r#""key""#, r#""kee""#));
        assert_eq!(
            (unknown.problem, unknown.field.as_deref()),
            (Problem::UnknownField, Some("kee"))
        );
    }

    #[test]
    fn renders_every_reply() {
        let offer = |reply| Response::Offer { channel: "tg".into(), id: "m1".into(), reply };

        assert_eq!(
            render(&offer(Reply::Accepted)),
            r#"{"reply":"accepted","channel":"tg","id":"m1"}"#
        );
        assert_eq!(
            render(&offer(Reply::Refused(Refusal::Busy))),
            r#"{"reply":"busy","channel":"tg","id":"m1","retry":true}"#
        );
        assert_eq!(render(&Response::Reload(false)), r#"{"reply":"stopping","retry":true}"#);
        let status = Status { boot: 2, generation: 1, ..Status::default() };
        assert_eq!(
            render(&Response::Status(Some(status))),
            concat!(
                r#"{"reply":"status","boot":2,"generation":1,"phase":null,"#,
                r#""buffered":0,"queued":0,"running":0,"intake":0}"#
            )
        );
        assert_eq!(
            render(&Response::Error(WireError::line_too_long(70_000))),
            concat!(
                r#"{"reply":"error","retry":false,"error":"line_too_long","#,
                r#""detail":"line of 70000 bytes is longer than 65536 bytes"}"#
            )
        );
    }

    #[tokio::test]
    async fn reader_skips_long_lines_and_keeps_going() {
        let input = b"short\r\n0123456789abc\nnext\nlast".to_vec();
        let mut reader = LineReader::new(&input[..], 8);

        let mut lines = Vec::new();
        while let Some(line) = reader.next().await.expect("reading from memory") {
            lines.push(line);
        }

        assert_eq!(
            lines,
            [
                ReadLine::Line(b"short".to_vec()),
                ReadLine::TooLong(13),
                ReadLine::Line(b"next".to_vec()),
                ReadLine::Line(b"last".to_vec()),
            ]
        );
    }
}
