//! The listener seam and the connections it accepts.
//!
//! The daemon accepts channel connections through a [`Listener`]: loopback TCP or a Unix
//! socket in production, a simulated network (turmoil) in end-to-end tests, which wrap their
//! listener in a newtype implementing this trait, or in-memory [`pipes`] where no socket is
//! wanted (a daemon on a paused tokio runtime). A connection is any byte stream; each is
//! served by its own task that reads request lines, asks the gateway through a
//! [`ShellHandle`], and writes one reply line per request.
//!
//! [`Channels`] counts the open connections of each channel, so that a channel's last
//! connection closing is reported to the gateway as a channel disconnect (SPEC 2.5): its
//! debouncer is flushed, never lost.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, DuplexStream};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::daemon::wire::{self, LINE_BYTES_MAX, LineReader, ReadLine, Request, Response};
use crate::message::ChannelId;
use crate::shell::ShellHandle;

/// Where channel connections come from.
pub trait Listener: Send + 'static {
    /// One accepted connection.
    type Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Waits for the next connection.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe: the daemon awaits it in a `select!` with the gateway's exit, and a
    /// dropped call must not lose a connection that was already accepted.
    ///
    /// # Errors
    ///
    /// The operating system's error; the daemon logs it, waits a little and accepts again.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Connection>> + Send;
}

impl Listener for TcpListener {
    type Connection = TcpStream;

    /// tokio's `accept`, which is cancel safe; Nagle's algorithm is turned off so each reply
    /// line leaves at once.
    async fn accept(&mut self) -> io::Result<TcpStream> {
        let (stream, _peer) = TcpListener::accept(self).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Listener for UnixListener {
    type Connection = UnixStream;

    /// tokio's `accept`, which is cancel safe.
    async fn accept(&mut self) -> io::Result<UnixStream> {
        let (stream, _peer) = UnixListener::accept(self).await?;
        Ok(stream)
    }
}

/// How many bytes an in-memory connection holds in each direction before a writer waits.
const PIPE_BYTES: usize = 64 * 1024;

/// A listener whose connections are the server ends of in-memory pipes, dialled through a
/// [`PipeDialer`]: a daemon on a paused tokio runtime or in a test needs no socket.
#[derive(Debug)]
pub struct PipeListener {
    accepted: mpsc::UnboundedReceiver<DuplexStream>,
}

/// Connects to a [`PipeListener`]. Clones dial the same listener.
#[derive(Clone, Debug)]
pub struct PipeDialer {
    dial: mpsc::UnboundedSender<DuplexStream>,
}

/// A listener of in-memory pipes and the dialer that connects to it.
pub fn pipes() -> (PipeDialer, PipeListener) {
    let (dial, accepted) = mpsc::unbounded_channel();
    (PipeDialer { dial }, PipeListener { accepted })
}

impl PipeDialer {
    /// Opens a connection and returns its client end; the listener accepts the server end.
    /// It never waits: connections nobody has accepted yet queue without a bound. Each
    /// direction holds 64 KiB before a writer waits for the reader. A client whose pipe the
    /// listener drops unaccepted reads the end of the stream.
    ///
    /// # Errors
    ///
    /// `ConnectionRefused` once the listener is dropped.
    pub fn dial(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        match self.dial.send(server) {
            Ok(()) => Ok(client),
            Err(_) => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "the listener is gone")),
        }
    }
}

impl Listener for PipeListener {
    type Connection = DuplexStream;

    /// Cancel safe, as an unbounded receiver's `recv` is. Once every dialer is dropped it waits
    /// forever, as a listener nobody dials does.
    async fn accept(&mut self) -> io::Result<DuplexStream> {
        match self.accepted.recv().await {
            Some(pipe) => Ok(pipe),
            None => std::future::pending().await,
        }
    }
}

/// How many connections each channel has open. Clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct Channels {
    open: Arc<Mutex<BTreeMap<ChannelId, usize>>>,
}

impl Channels {
    fn join(&self, channel: &ChannelId) {
        *self.lock().entry(channel.clone()).or_default() += 1;
    }

    /// One connection of `channel` closed; returns whether it was the last.
    fn leave(&self, channel: &ChannelId) -> bool {
        let mut open = self.lock();
        let Some(count) = open.get_mut(channel) else { return false };
        *count -= 1;
        let last = *count == 0;
        if last {
            open.remove(channel);
        }
        last
    }

    /// Every change is one map operation, so a poisoned lock still holds whole counts.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<ChannelId, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves one connection until the peer closes it or it fails, then reports the channels it
/// was the last connection of.
///
/// # Cancel safety
///
/// Dropping the future (the daemon aborts connection tasks once the gateway has exited) drops
/// the connection. A message whose offer was under way may have been accepted without its
/// reply being sent; the sender retries, and dedupe refuses the copy as a duplicate, which
/// tells the sender the first copy was accepted.
pub async fn serve_connection<T>(connection: T, gateway: ShellHandle, channels: Channels)
where
    T: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (read, write) = tokio::io::split(connection);
    let mut lines = LineReader::new(BufReader::new(read), LINE_BYTES_MAX);
    let mut replies = BufWriter::new(write);
    let mut joined = BTreeSet::new();

    loop {
        let line = match lines.next().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(%error, "connection read failed");
                break;
            }
        };
        let Some(response) = respond(line, &gateway, &channels, &mut joined).await else {
            continue;
        };
        if let Err(error) = write_reply(&mut replies, &response).await {
            tracing::debug!(%error, "connection write failed");
            break;
        }
    }

    for channel in joined {
        if channels.leave(&channel) {
            tracing::debug!(%channel, "last connection of the channel closed");
            gateway.channel_disconnected(channel).await;
        }
    }
}

/// The response to one line; `None` for a blank line, which gets no reply.
async fn respond(
    line: ReadLine,
    gateway: &ShellHandle,
    channels: &Channels,
    joined: &mut BTreeSet<ChannelId>,
) -> Option<Response> {
    let bytes = match line {
        ReadLine::Line(bytes) => bytes,
        ReadLine::TooLong(length) => {
            return Some(Response::Error(wire::WireError::line_too_long(length)));
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return None;
    }

    let response = match wire::parse(&bytes) {
        Err(error) => Response::Error(error),
        Ok(Request::Status) => Response::Status(gateway.status().await),
        Ok(Request::Reload) => Response::Reload(gateway.reload().await),
        Ok(Request::Offer(message)) => {
            if joined.insert(message.channel.clone()) {
                channels.join(&message.channel);
            }
            let (channel, id) = (message.channel.to_string(), message.id.to_string());
            let reply = gateway.offer(message).await;
            Response::Offer { channel, id, reply }
        }
    };
    Some(response)
}

async fn write_reply<W: AsyncWrite + Unpin>(out: &mut W, response: &Response) -> io::Result<()> {
    let mut line = wire::render(response);
    line.push('\n');
    out.write_all(line.as_bytes()).await?;
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::AsyncReadExt;

    /// A dialled pipe carries bytes to the accepted end; once the listener is gone, dialling is
    /// refused rather than left hanging.
    #[tokio::test]
    async fn pipes_connect_until_the_listener_is_gone() {
        let (dialer, mut listener) = pipes();
        let mut client = dialer.dial().expect("the listener is there");
        let mut server = listener.accept().await.expect("a pipe was dialled");
        client.write_all(b"ping").await.expect("written");
        let mut read = [0; 4];
        server.read_exact(&mut read).await.expect("read");
        assert_eq!(&read, b"ping");

        drop(listener);
        let refused = dialer.dial().expect_err("nobody listens");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn last_leave_is_reported_once() {
        let channels = Channels::default();
        let tg: ChannelId = "tg".into();
        channels.join(&tg);
        channels.join(&tg);

        assert!(!channels.leave(&tg));
        assert!(channels.leave(&tg));
        assert!(!channels.leave(&tg), "a channel with no connection left has nothing to leave");
    }
}
