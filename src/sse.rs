//! Incremental Server-Sent Events parser and writer.
//!
//! The parser follows the WHATWG `text/event-stream` algorithm: lines end in `\n`, `\r\n` or
//! `\r`; `data` lines accumulate (joined by `\n`); a blank line dispatches; lines starting with
//! `:` are comments. Bytes arrive in arbitrary pieces — an event may be split at any byte,
//! including inside a `\r\n` pair or a UTF-8 sequence, and one read may carry many events — so
//! the parser buffers only the unfinished tail and never assumes one event per body frame.

use bytes::{BufMut, Bytes, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field; empty means the default type `message`.
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
    /// The `id:` field, if one was given in this event.
    pub id: Option<String>,
}

impl Event {
    /// Empties every field, keeping the buffers.
    fn clear(&mut self) {
        self.event.clear();
        self.data.clear();
        self.id = None;
    }
}

/// Why a stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line was not valid UTF-8.
    #[error("event stream line is not valid UTF-8")]
    InvalidUtf8,
    /// The unfinished tail grew past the limit (a never-ending line).
    #[error("event stream line longer than {0} bytes")]
    LineTooLong(usize),
}

/// Incremental parser: [`Parser::push`] bytes in, [`Parser::next_event`] events out.
#[derive(Debug)]
pub struct Parser {
    buf: BytesMut,
    /// Bytes of `buf` already scanned for a line end (so each byte is scanned once).
    scanned: usize,
    /// The previous chunk ended in `\r`: a leading `\n` of the next one belongs to it.
    skip_lf: bool,
    pending: Event,
    /// `pending` was handed out by [`Parser::next_event_ref`]; cleared on the next call.
    lent: bool,
    has_data: bool,
    has_fields: bool,
    max_line: usize,
}

/// Default bound on one line: larger than any real provider chunk, small enough to bound memory.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024 * 1024;

impl Default for Parser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl Parser {
    /// A parser that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            skip_lf: false,
            pending: Event::default(),
            lent: false,
            has_data: false,
            has_fields: false,
            max_line,
        }
    }

    /// Appends bytes from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        let mut chunk = chunk;
        if self.skip_lf && !chunk.is_empty() {
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
            self.skip_lf = false;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if the buffered bytes hold one.
    pub fn next_event(&mut self) -> Result<Option<Event>, ParseError> {
        Ok(self.next_event_ref()?.cloned())
    }

    /// As [`Parser::next_event`], but lends the event: its buffers are reused by the next
    /// call, so a stream of events costs no allocation per event.
    pub fn next_event_ref(&mut self) -> Result<Option<&Event>, ParseError> {
        if std::mem::take(&mut self.lent) {
            self.pending.clear();
        }
        loop {
            let Some(rel) = memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_line {
                    return Err(ParseError::LineTooLong(self.max_line));
                }
                return Ok(None);
            };
            let end = self.scanned + rel;
            let terminator = self.buf[end];
            let mut consumed = end + 1;
            if terminator == b'\r' {
                if consumed < self.buf.len() {
                    if self.buf[consumed] == b'\n' {
                        consumed += 1;
                    }
                } else {
                    // `\r` at the very end: a `\n` may follow in the next chunk.
                    self.skip_lf = true;
                }
            }
            let line = self.buf.split_to(consumed);
            self.scanned = 0;
            let line = std::str::from_utf8(&line[..end]).map_err(|_| ParseError::InvalidUtf8)?;
            if self.line(line) {
                self.lent = true;
                return Ok(Some(&self.pending));
            }
        }
    }

    /// Whether bytes or fields of an unfinished event are buffered (a stream that ends here was
    /// truncated mid-event).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.has_fields
    }

    /// Takes one line; true when it dispatches `pending`.
    fn line(&mut self, line: &str) -> bool {
        if line.is_empty() {
            if !self.has_fields {
                return false;
            }
            self.has_fields = false;
            let had_data = std::mem::replace(&mut self.has_data, false);
            // Per the spec an event with no data is not dispatched.
            if !had_data {
                self.pending.clear();
            }
            return had_data;
        }
        if line.starts_with(':') {
            return false;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.has_data = true;
            }
            "event" => value.clone_into(&mut self.pending.event),
            "id" if !value.contains('\0') => self.pending.id = Some(value.to_owned()),
            _ => return false, // `retry` and unknown fields are ignored
        }
        self.has_fields = true;
        false
    }
}

/// Writes one event: an optional `event:` line, then `data:` lines (one per line of `data`),
/// then the blank line.
pub fn write_event(out: &mut BytesMut, event: Option<&str>, data: &str) {
    if let Some(name) = event {
        out.reserve(name.len() + 8);
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    out.reserve(data.len() + 8);
    for line in data.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// Writes one event whose data is `value` as compact JSON, serialized straight into `out`
/// (compact JSON has no raw newlines, so it is always one `data:` line).
pub fn write_json_event<T: serde::Serialize + ?Sized>(
    out: &mut BytesMut,
    event: Option<&str>,
    value: &T,
) {
    use bytes::BufMut as _;
    if let Some(name) = event {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    let mut w = out.writer();
    if serde_json::to_writer(&mut w, value).is_err() {
        // Serializing our own types does not fail; if it ever did, the event stays parseable.
        w.get_mut().put_slice(b"null");
    }
    let out = w.into_inner();
    out.put_slice(b"\n\n");
}

/// One event as bytes (see [`write_event`]).
pub fn event_bytes(event: Option<&str>, data: &str) -> Bytes {
    if event.is_none() && is_one_line(data) {
        return data_line_bytes(data);
    }
    let mut out = BytesMut::new();
    write_event(&mut out, event, data);
    out.freeze()
}

/// Whether `data` is one line (has no `\n`), as every JSON chunk is.
pub fn is_one_line(data: &str) -> bool {
    memchr::memchr(b'\n', data.as_bytes()).is_none()
}

/// A default-type event whose `data` is one line (as every JSON chunk is; the caller knows it
/// has no `\n`), in one exact allocation: a `Vec` whose capacity is its length becomes `Bytes`
/// without a second one.
pub fn data_line_bytes(data: &str) -> Bytes {
    debug_assert!(is_one_line(data));
    let mut v = Vec::with_capacity(data.len() + 8);
    v.extend_from_slice(b"data: ");
    v.extend_from_slice(data.as_bytes());
    v.extend_from_slice(b"\n\n");
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_bytes_are_what_write_event_writes() {
        for (event, data) in [
            (None, r#"{"a":1}"#),
            (None, ""),
            (None, "line1\nline2"),
            (Some("message_start"), r#"{"a":1}"#),
        ] {
            let mut out = BytesMut::new();
            write_event(&mut out, event, data);
            assert_eq!(event_bytes(event, data), out.freeze(), "{event:?} {data:?}");
        }
        assert_eq!(&event_bytes(None, "x")[..], b"data: x\n\n");
        assert_eq!(
            data_line_bytes(r#"{"a":1}"#),
            event_bytes(None, r#"{"a":1}"#)
        );
    }

    fn parse_all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c);
            while let Some(e) = p.next_event().unwrap() {
                out.push(e);
            }
        }
        out
    }

    const STREAM: &[u8] = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: comment\n\
data: line1\ndata: line2\n\nid: 7\r\nevent: x\rdata:no-space\r\r\
data: \xc3\xa9t\xc3\xa9 \xe2\x82\xac\n\ndata: [DONE]\n\n";

    fn expected() -> Vec<Event> {
        vec![
            Event {
                event: "message_start".into(),
                data: "{\"a\":1}".into(),
                id: None,
            },
            Event {
                event: String::new(),
                data: "line1\nline2".into(),
                id: None,
            },
            Event {
                event: "x".into(),
                data: "no-space".into(),
                id: Some("7".into()),
            },
            Event {
                event: String::new(),
                data: "été €".into(),
                id: None,
            },
            Event {
                event: String::new(),
                data: "[DONE]".into(),
                id: None,
            },
        ]
    }

    #[test]
    fn one_read_many_events() {
        assert_eq!(parse_all(&[STREAM]), expected());
    }

    #[test]
    fn split_at_every_byte_boundary() {
        for i in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(i);
            assert_eq!(parse_all(&[a, b]), expected(), "split at {i}");
        }
    }

    #[test]
    fn split_at_every_pair_of_boundaries() {
        for i in 0..=STREAM.len() {
            for j in i..=STREAM.len() {
                let got = parse_all(&[&STREAM[..i], &STREAM[i..j], &STREAM[j..]]);
                assert_eq!(got, expected(), "split at {i},{j}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(parse_all(&chunks), expected());
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert!(parse_all(&[b"event: ping\n\n"]).is_empty());
    }

    #[test]
    fn a_lent_event_carries_nothing_of_the_one_before() {
        let mut p = Parser::default();
        // A named event with an id; a plain one; an undispatched (data-less) named one; a
        // plain one again.
        p.push(b"event: a\nid: 7\ndata: one\ndata: two\n\ndata: three\n\nevent: b\nid: 8\n\ndata: four\n\n");
        let mut seen = Vec::new();
        while let Some(ev) = p.next_event_ref().unwrap() {
            seen.push(ev.clone());
        }
        let ev = |event: &str, data: &str, id: Option<&str>| Event {
            event: event.into(),
            data: data.into(),
            id: id.map(Into::into),
        };
        assert_eq!(
            seen,
            [
                ev("a", "one\ntwo", Some("7")),
                ev("", "three", None),
                ev("", "four", None),
            ]
        );
        assert!(!p.has_partial());
    }

    #[test]
    fn truncated_stream_reports_partial() {
        let mut p = Parser::default();
        p.push(b"data: {\"half\":");
        assert_eq!(p.next_event().unwrap(), None);
        assert!(p.has_partial());
        let mut p = Parser::default();
        p.push(b"data: x\n");
        assert_eq!(p.next_event().unwrap(), None);
        assert!(
            p.has_partial(),
            "fields without the blank line are unfinished"
        );
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut p = Parser::default();
        p.push(b"data: \xff\xfe\n\n");
        assert_eq!(p.next_event(), Err(ParseError::InvalidUtf8));
    }

    #[test]
    fn never_ending_line_is_bounded() {
        let mut p = Parser::new(16);
        p.push(&[b'a'; 40]);
        assert_eq!(p.next_event(), Err(ParseError::LineTooLong(16)));
    }

    #[test]
    fn writer_round_trips() {
        let mut out = BytesMut::new();
        write_event(&mut out, Some("content_block_delta"), "{\"x\":1}");
        write_event(&mut out, None, "a\nb");
        assert_eq!(
            &out[..],
            b"event: content_block_delta\ndata: {\"x\":1}\n\ndata: a\ndata: b\n\n"
        );
        let got = parse_all(&[&out]);
        assert_eq!(got[0].event, "content_block_delta");
        assert_eq!(got[1].data, "a\nb");
    }
}
