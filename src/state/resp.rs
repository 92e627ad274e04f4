//! A pipelined RESP2 connection to a Redis-protocol server (Redis, Valkey), for
//! [`super::redis`].
//!
//! Written here, not taken from the `redis` crate, for what a keyed request pays: with Redis
//! limits and a budget, every request makes an admission round trip and a settlement, and
//! through the crate's `ConnectionManager` those cost ~44k instructions per request, more
//! than the rest of the gateway's own work (bench/instructions.sh: each command was built as
//! a `Cmd` of owned arguments, packed again, sent over a channel to the connection's task,
//! framed, parsed by a combinator parser, and timed by two timers). Here a request appends
//! its commands, already packed, to the connection's outgoing bytes under a short lock and
//! waits on a oneshot; the connection's one task writes whatever is queued in one write and
//! hands each parsed reply to the request that waits for it, in order.
//!
//! Only what the state needs: RESP2 (no `HELLO`), plain TCP or a Unix socket, `AUTH` and
//! `SELECT` from the URL, and the replies Redis gives to the commands we send.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    Nil,
    Int(i64),
    /// A bulk or a simple string.
    Bytes(Vec<u8>),
    /// An error reply, as the server wrote it (`NOSCRIPT No matching script...`).
    Error(String),
    Array(Vec<Reply>),
}

impl Reply {
    /// Whether this is the server saying it does not know an `EVALSHA`'s script.
    pub(super) fn is_noscript(&self) -> bool {
        matches!(self, Reply::Error(e) if e.starts_with("NOSCRIPT"))
    }
}

/// Why a command got no reply. Never carries the URL (it may hold a password).
#[derive(Debug)]
pub(super) enum Error {
    Io(io::Error),
    /// The server sent something that is not RESP2, or more replies than were asked for.
    Protocol(&'static str),
    /// The connection was closed (by the server, or after a timeout here).
    Closed,
    /// The server refused the connection's set-up (`AUTH`, `SELECT`, `SCRIPT LOAD`).
    Refused(String),
    /// The oldest request waited this long for its reply; the connection was closed.
    Timeout(Duration),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Protocol(what) => write!(f, "protocol error: {what}"),
            Error::Closed => f.write_str("connection closed"),
            Error::Refused(why) => write!(f, "refused: {why}"),
            Error::Timeout(after) => write!(f, "no answer within {after:?}"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// Commands packed for the wire, and how many replies they will get.
#[derive(Debug)]
pub(super) struct Commands {
    buf: Vec<u8>,
    count: usize,
    /// Arguments the command being built still owes (as its header announced).
    owed: usize,
}

impl Default for Commands {
    fn default() -> Self {
        // A keyed request's admission or settlement packs to 300-600 bytes.
        Commands {
            buf: Vec::with_capacity(1024),
            count: 0,
            owed: 0,
        }
    }
}

/// An argument of a command.
pub(super) trait Arg {
    fn write(&self, out: &mut Vec<u8>);
}

impl Arg for &str {
    fn write(&self, out: &mut Vec<u8>) {
        bulk(out, self.as_bytes());
    }
}

impl Arg for &String {
    fn write(&self, out: &mut Vec<u8>) {
        bulk(out, self.as_bytes());
    }
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn write(&self, out: &mut Vec<u8>) {
                bulk(out, itoa::Buffer::new().format(*self).as_bytes());
            }
        }
    )*};
}
int_arg!(i64, u64, usize);

/// `$<len>\r\n<arg>\r\n`. Arguments are keys and numbers, nearly all shorter than 100
/// bytes: their length is written digit by digit and the header in one piece (a keyed
/// request packs ~40 arguments; through `itoa` and five appends each cost ~120 instructions).
fn bulk(out: &mut Vec<u8>, arg: &[u8]) {
    let n = arg.len();
    out.reserve(n + 25);
    match n {
        0..=9 => out.extend_from_slice(&[b'$', b'0' + n as u8, b'\r', b'\n']),
        10..=99 => out.extend_from_slice(&[
            b'$',
            b'0' + (n / 10) as u8,
            b'0' + (n % 10) as u8,
            b'\r',
            b'\n',
        ]),
        _ => {
            out.push(b'$');
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

impl Commands {
    /// Starts a command that will have `args` arguments after its name.
    pub(super) fn cmd(&mut self, name: &str, args: usize) -> &mut Self {
        debug_assert_eq!(self.owed, 0, "the command before is short of arguments");
        self.buf.push(b'*');
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(args + 1).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        bulk(&mut self.buf, name.as_bytes());
        self.count += 1;
        self.owed = args;
        self
    }

    /// Adds the next argument of the command being built.
    pub(super) fn arg(&mut self, arg: impl Arg) -> &mut Self {
        debug_assert!(self.owed > 0, "more arguments than the command announced");
        self.owed = self.owed.saturating_sub(1);
        arg.write(&mut self.buf);
        self
    }

    /// The bytes to send and how many replies they get.
    fn finish(self) -> (Vec<u8>, usize) {
        debug_assert_eq!(self.owed, 0, "the last command is short of arguments");
        (self.buf, self.count)
    }
}

/// Replies are not expected past this size (the state's are tens of bytes).
const MAX_BULK: usize = 512 * 1024 * 1024;
/// Nor arrays past this many elements.
const MAX_ARRAY: usize = 1 << 20;

/// Parses the reply at the start of `buf`: `Ok(None)` when it has not all arrived yet,
/// else the reply and how many bytes it took.
pub(super) fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, Error> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..end].split_first() else {
        return Err(Error::Protocol("empty reply line"));
    };
    let next = end + 2;
    let int = || -> Result<i64, Error> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Error::Protocol("bad integer"))
    };
    // A length line: `None` for a nil (negative) length, else the length, at most `max`.
    let length = |max: usize, what: &'static str| -> Result<Option<usize>, Error> {
        let n = int()?;
        if n < 0 {
            return Ok(None);
        }
        let n = usize::try_from(n).ok().filter(|n| *n <= max);
        n.map(Some).ok_or(Error::Protocol(what))
    };
    match kind {
        b'+' => Ok(Some((Reply::Bytes(line.to_vec()), next))),
        b'-' => Ok(Some((
            Reply::Error(String::from_utf8_lossy(line).into_owned()),
            next,
        ))),
        b':' => Ok(Some((Reply::Int(int()?), next))),
        b'$' => {
            let Some(len) = length(MAX_BULK, "bulk string too long")? else {
                return Ok(Some((Reply::Nil, next)));
            };
            let Some(tail) = buf.get(next..next + len + 2) else {
                return Ok(None);
            };
            if &tail[len..] != b"\r\n" {
                return Err(Error::Protocol("bulk string not ended by CRLF"));
            }
            Ok(Some((Reply::Bytes(tail[..len].to_vec()), next + len + 2)))
        }
        b'*' => {
            let Some(n) = length(MAX_ARRAY, "array too long")? else {
                return Ok(Some((Reply::Nil, next)));
            };
            let mut items = Vec::with_capacity(n.min(64));
            let mut at = next;
            for _ in 0..n {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(items), at)))
        }
        _ => Err(Error::Protocol("unknown reply type")),
    }
}

/// Where the server is and who we are to it, from a `redis://` URL.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub(super) addr: Addr,
    pub(super) db: i64,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Addr {
    Tcp(String, u16),
    Unix(std::path::PathBuf),
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Endpoint {
    /// Reads `redis://[[user]:password@]host[:port][/db]` (also `valkey://`), or
    /// `redis+unix:///path[?db=N&user=U&pass=P]` (also `unix://`). The error never quotes
    /// the URL.
    pub(super) fn parse(url: &str) -> Result<Self, String> {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| "a part of it is not UTF-8 once percent-decoded".to_owned())
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "it has no scheme (redis://host:port)".to_owned())?;
        match scheme {
            "redis" | "valkey" => {}
            "redis+unix" | "unix" | "valkey+unix" => {
                let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                if path.is_empty() {
                    return Err("it names no socket path".into());
                }
                let mut ep = Endpoint {
                    addr: Addr::Unix(decode(path)?.into()),
                    db: 0,
                    username: None,
                    password: None,
                };
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    match k {
                        "db" => ep.db = v.parse().map_err(|_| "its db is not a number")?,
                        "user" => ep.username = Some(decode(v)?),
                        "pass" => ep.password = Some(decode(v)?),
                        _ => {}
                    }
                }
                return Ok(ep);
            }
            "rediss" | "valkeys" => {
                return Err("TLS (rediss://) is not supported; use redis://".into());
            }
            _ => return Err("its scheme is not redis://".into()),
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (u, None),
                };
                let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
                (user, pass.map(decode).transpose()?)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| "its IPv6 host has no closing ]".to_owned())?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err("it names no host".into());
        }
        let port = match port {
            None | Some("") => 6379,
            Some(p) => p.parse().map_err(|_| "its port is not a number")?,
        };
        let path = path.split('?').next().unwrap_or("");
        let db = match path.trim_start_matches('/') {
            "" => 0,
            db => db.parse().map_err(|_| "its /db is not a number")?,
        };
        Ok(Endpoint {
            addr: Addr::Tcp(host.to_owned(), port),
            db,
            username,
            password,
        })
    }

    /// The commands that set up a new connection (`AUTH`, `SELECT`), if any.
    fn handshake(&self, cmds: &mut Commands) -> usize {
        let mut n = 0;
        if let Some(password) = &self.password {
            match &self.username {
                Some(user) => cmds.cmd("AUTH", 2).arg(user),
                None => cmds.cmd("AUTH", 1),
            }
            .arg(password);
            n += 1;
        }
        if self.db != 0 {
            cmds.cmd("SELECT", 1).arg(self.db);
            n += 1;
        }
        n
    }
}

/// What requests and the connection's task share.
struct Shared {
    /// How long a request may wait for its reply before the connection is given up.
    timeout: Duration,
    pipe: Mutex<Pipe>,
    /// The connection's task, woken when bytes are queued or the connection is closed.
    task: AtomicWaker,
}

#[derive(Default)]
struct Pipe {
    /// Packed commands not yet handed to the task.
    out: Vec<u8>,
    /// Their requests, in the same order.
    waiting: Vec<Waiter>,
    closed: bool,
}

struct Waiter {
    replies: usize,
    got: Vec<Reply>,
    tx: oneshot::Sender<Result<Vec<Reply>, Error>>,
}

/// One connection; requests over it are pipelined.
pub(super) struct Connection {
    shared: Arc<Shared>,
}

impl Connection {
    /// Connects and sets the connection up (`AUTH`, `SELECT`, then `setup`'s commands, whose
    /// replies are returned). A request (this set-up too) that waits longer than `timeout` for
    /// its reply closes the connection: it and every other request waiting get
    /// [`Error::Timeout`]. Must be called inside a Tokio runtime: the connection's task is
    /// spawned on it.
    pub(super) async fn open(
        endpoint: &Endpoint,
        timeout: Duration,
        setup: impl FnOnce(&mut Commands),
    ) -> Result<(Self, Vec<Reply>), Error> {
        let shared = Arc::new(Shared {
            timeout,
            pipe: Mutex::new(Pipe::default()),
            task: AtomicWaker::new(),
        });
        let late = |_| Error::Timeout(timeout);
        match &endpoint.addr {
            Addr::Tcp(host, port) => {
                let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
                let io = tokio::time::timeout(timeout, connect)
                    .await
                    .map_err(late)??;
                io.set_nodelay(true)?;
                tokio::spawn(drive(io, shared.clone()));
            }
            #[cfg(unix)]
            Addr::Unix(path) => {
                let connect = tokio::net::UnixStream::connect(path);
                let io = tokio::time::timeout(timeout, connect)
                    .await
                    .map_err(late)??;
                tokio::spawn(drive(io, shared.clone()));
            }
            #[cfg(not(unix))]
            Addr::Unix(_) => {
                return Err(Error::Io(io::Error::other("Unix sockets need a Unix")));
            }
        }
        let conn = Connection { shared };
        let mut cmds = Commands::default();
        let first = endpoint.handshake(&mut cmds);
        setup(&mut cmds);
        // On any early return, dropping `conn` closes it.
        let mut replies = conn.send(cmds)?.await?;
        let refused = replies[..first].iter().find_map(|r| match r {
            Reply::Error(e) => Some(e.clone()),
            _ => None,
        });
        if let Some(why) = refused {
            return Err(Error::Refused(why));
        }
        replies.drain(..first);
        Ok((conn, replies))
    }

    fn pipe(&self) -> MutexGuard<'_, Pipe> {
        self.shared.pipe.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues commands; the receiver gets their replies, one per command, in order.
    pub(super) fn send(
        &self,
        cmds: Commands,
    ) -> Result<impl std::future::Future<Output = Result<Vec<Reply>, Error>>, Error> {
        let (bytes, replies) = cmds.finish();
        let (tx, rx) = oneshot::channel();
        let wake = {
            let mut pipe = self.pipe();
            if pipe.closed {
                return Err(Error::Closed);
            }
            if replies == 0 {
                // Nothing to send, nothing to wait for (a waiter for no reply is never done).
                let _ = tx.send(Ok(Vec::new()));
                false
            } else {
                let wake = pipe.out.is_empty();
                if wake {
                    pipe.out = bytes;
                } else {
                    pipe.out.extend_from_slice(&bytes);
                }
                pipe.waiting.push(Waiter {
                    replies,
                    got: Vec::with_capacity(replies),
                    tx,
                });
                wake
            }
        };
        if wake {
            self.shared.task.wake();
        }
        Ok(async move { rx.await.unwrap_or(Err(Error::Closed)) })
    }

    /// Whether the connection can take no more commands.
    pub(super) fn is_closed(&self) -> bool {
        self.pipe().closed
    }

    /// Closes the connection: requests waiting on it get [`Error::Closed`].
    pub(super) fn close(&self) {
        self.pipe().closed = true;
        self.shared.task.wake();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// The connection's task: writes what is queued, reads replies and hands each to its request.
///
/// It also keeps the time. Not with a timer per request: on a current-thread runtime, a timer
/// set earlier than any other makes Tokio write to its wake-up eventfd, one more system call
/// per request (two per keyed request at one connection). One check instead, every quarter of
/// the timeout while requests come, closes the connection once its oldest request has waited
/// the whole timeout (so a request gives up within 1¼ timeouts); it is re-armed only while
/// requests are sent, and stops after one idle quarter.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, shared: Arc<Shared>) {
    let mut wbuf: Vec<u8> = Vec::new();
    let mut written = 0;
    let mut rbuf: Vec<u8> = vec![0; 4096];
    let mut filled = 0;
    let mut waiting: VecDeque<(Instant, Waiter)> = VecDeque::new();
    let timeout = shared.timeout;
    let every = (timeout / 4).max(Duration::from_millis(1));
    let mut check: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // Requests were sent since the last check.
    let mut sent = false;
    let lock = || shared.pipe.lock().unwrap_or_else(|e| e.into_inner());
    let end = poll_fn(|cx: &mut Context<'_>| -> Poll<Result<(), Error>> {
        loop {
            let mut progressed = false;
            if written == wbuf.len() {
                shared.task.register(cx.waker());
                let mut pipe = lock();
                if pipe.closed {
                    return Poll::Ready(Err(Error::Closed));
                }
                if !pipe.out.is_empty() {
                    wbuf.clear();
                    written = 0;
                    std::mem::swap(&mut wbuf, &mut pipe.out);
                    let now = Instant::now();
                    waiting.extend(pipe.waiting.drain(..).map(|w| (now, w)));
                    sent = true;
                    if check.is_none() {
                        check = Some(Box::pin(tokio::time::sleep(every)));
                    }
                }
            }
            while written < wbuf.len() {
                match Pin::new(&mut io).poll_write(cx, &wbuf[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(Error::Closed)),
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        progressed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => break,
                }
            }
            if filled == rbuf.len() {
                if rbuf.len() >= MAX_BULK + 64 {
                    return Poll::Ready(Err(Error::Protocol("reply too large")));
                }
                rbuf.resize(rbuf.len() * 2, 0);
            }
            let mut read = ReadBuf::new(&mut rbuf[filled..]);
            match Pin::new(&mut io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        return Poll::Ready(Err(Error::Closed));
                    }
                    filled += n;
                    progressed = true;
                    let mut at = 0;
                    while let Some((reply, used)) = match parse(&rbuf[at..filled]) {
                        Ok(r) => r,
                        Err(e) => return Poll::Ready(Err(e)),
                    } {
                        at += used;
                        let Some((_, w)) = waiting.front_mut() else {
                            return Poll::Ready(Err(Error::Protocol("a reply nobody asked for")));
                        };
                        w.got.push(reply);
                        if w.got.len() == w.replies {
                            if let Some((_, w)) = waiting.pop_front() {
                                let _ = w.tx.send(Ok(w.got));
                            }
                        }
                    }
                    rbuf.copy_within(at..filled, 0);
                    filled -= at;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
            if progressed {
                continue;
            }
            let Some(tick) = check.as_mut() else {
                return Poll::Pending;
            };
            if tick.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if waiting
                .front()
                .is_some_and(|(at, _)| at.elapsed() >= timeout)
            {
                return Poll::Ready(Err(Error::Timeout(timeout)));
            }
            if waiting.is_empty() && !sent {
                check = None;
                return Poll::Pending;
            }
            sent = false;
            tick.as_mut().reset(tokio::time::Instant::now() + every);
        }
    })
    .await;
    let why = end.err().unwrap_or(Error::Closed);
    // Every request still waiting gets its own copy of why the connection ended.
    let copy = || match &why {
        Error::Io(e) => Error::Io(e.kind().into()),
        Error::Protocol(what) => Error::Protocol(what),
        Error::Timeout(after) => Error::Timeout(*after),
        Error::Closed | Error::Refused(_) => Error::Closed,
    };
    let orphans = {
        let mut pipe = lock();
        pipe.closed = true;
        std::mem::take(&mut pipe.waiting)
    };
    for w in waiting.into_iter().map(|(_, w)| w).chain(orphans) {
        let _ = w.tx.send(Err(copy()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut buf: &[u8]) -> Vec<Reply> {
        let mut out = Vec::new();
        while let Some((r, used)) = parse(buf).unwrap() {
            out.push(r);
            buf = &buf[used..];
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    #[test]
    fn every_reply_kind_parses() {
        let wire = b"+OK\r\n-NOSCRIPT No matching script.\r\n:-12\r\n$5\r\n1 2 3\r\n$0\r\n\r\n$-1\r\n*-1\r\n*3\r\n:1\r\n$-1\r\n*1\r\n+x\r\n";
        assert_eq!(
            all(wire),
            vec![
                Reply::Bytes(b"OK".to_vec()),
                Reply::Error("NOSCRIPT No matching script.".into()),
                Reply::Int(-12),
                Reply::Bytes(b"1 2 3".to_vec()),
                Reply::Bytes(Vec::new()),
                Reply::Nil,
                Reply::Nil,
                Reply::Array(vec![
                    Reply::Int(1),
                    Reply::Nil,
                    Reply::Array(vec![Reply::Bytes(b"x".to_vec())]),
                ]),
            ]
        );
        assert!(all(b"-NOSCRIPT x\r\n")[0].is_noscript());
    }

    #[test]
    fn a_reply_cut_anywhere_waits_for_the_rest() {
        let wire = b"*2\r\n$12\r\nhello\r\nworld\r\n:7\r\n";
        for cut in 0..wire.len() {
            assert_eq!(parse(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (r, used) = parse(wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(
            r,
            Reply::Array(vec![
                Reply::Bytes(b"hello\r\nworld".to_vec()),
                Reply::Int(7)
            ])
        );
    }

    #[test]
    fn what_is_not_resp2_is_an_error() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$3\r\nabcd\r\n",
            b"$-2x\r\n",
            b"*99999999999\r\n",
            b"\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn commands_pack_as_arrays_of_bulk_strings() {
        let mut c = Commands::default();
        c.cmd("EVALSHA", 3).arg("abc").arg(2usize).arg(-5i64);
        c.cmd("MGET", 1).arg(&"k".to_owned());
        let (bytes, n) = c.finish();
        assert_eq!(n, 2);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n2\r\n$2\r\n-5\r\n*2\r\n$4\r\nMGET\r\n$1\r\nk\r\n"
        );
    }

    #[test]
    fn every_argument_length_is_written_in_decimal() {
        for n in [0usize, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 65_536] {
            let arg = "x".repeat(n);
            let mut c = Commands::default();
            c.cmd("SET", 1).arg(arg.as_str());
            let (bytes, _) = c.finish();
            assert_eq!(
                bytes,
                format!("*2\r\n$3\r\nSET\r\n${n}\r\n{arg}\r\n").into_bytes()
            );
        }
    }

    /// A connection with no set-up to send (no password, database 0, no commands) opens
    /// without waiting for replies that will never come.
    #[tokio::test]
    async fn a_connection_with_nothing_to_set_up_opens_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let ep = Endpoint::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
        let open = Connection::open(&ep, Duration::from_secs(5), |_| {});
        let (conn, replies) = tokio::time::timeout(Duration::from_secs(10), open)
            .await
            .expect("opened without waiting")
            .unwrap();
        assert!(replies.is_empty());
        assert!(!conn.is_closed());
        accepted.await.unwrap().unwrap();
    }

    #[test]
    fn urls_give_address_database_and_credentials() {
        let ep = Endpoint::parse("redis://127.0.0.1:6380/3").unwrap();
        assert_eq!(ep.addr, Addr::Tcp("127.0.0.1".into(), 6380));
        assert_eq!((ep.db, ep.username, ep.password), (3, None, None));

        let ep = Endpoint::parse("redis://:p%40ss@redis.internal").unwrap();
        assert_eq!(ep.addr, Addr::Tcp("redis.internal".into(), 6379));
        assert_eq!((ep.username, ep.password), (None, Some("p@ss".into())));

        let ep = Endpoint::parse("valkey://app:s3cret@[::1]:7000/0?protocol=resp2").unwrap();
        assert_eq!(ep.addr, Addr::Tcp("::1".into(), 7000));
        assert_eq!(
            (ep.username.as_deref(), ep.password.as_deref()),
            (Some("app"), Some("s3cret"))
        );

        let ep = Endpoint::parse("redis+unix:///run/redis.sock?db=2&pass=x").unwrap();
        assert_eq!(ep.addr, Addr::Unix("/run/redis.sock".into()));
        assert_eq!((ep.db, ep.password.as_deref()), (2, Some("x")));

        for bad in [
            "rediss://:hunter2@h:6379",
            "http://:hunter2@h",
            ":hunter2@h",
            "redis://:hunter2@h:port",
            "redis://:hunter2@/0",
            "redis://:hunter2@h/zero",
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(
            !format!("{:?}", Endpoint::parse("redis://:hunter2@h").unwrap()).contains("hunter2")
        );
    }
}
