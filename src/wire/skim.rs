//! Reads a few members of a JSON document without decoding the rest.
//!
//! Accounting reads only a handful of fields of each upstream reply and stream chunk (usage,
//! finish reasons, the text of a delta) while the bytes themselves go to the caller as they
//! came. A serde decode of a whole ~200-byte OpenAI chunk costs ~6k instructions, most of them
//! spent matching and skipping members nobody reads; one pass over the document that decodes
//! only the wanted values costs a fraction of that.
//!
//! The pass validates what it skips as serde_json does (string escapes and control
//! characters, number grammar, literals, nesting, nothing after the value). It answers `None`
//! wherever it is not sure to read a value exactly as serde would — an escaped key, a wanted
//! member twice, a value of an unexpected type, nesting deeper than serde's limit — and its
//! callers then decode the document with serde, which either reads it or reports the error.
//! So the pass is a fast path, never a second opinion on what a document means.

use std::borrow::Cow;

/// serde_json refuses documents nested deeper than 128; past this depth the pass gives up
/// and the caller's serde decode decides.
const MAX_DEPTH: usize = 100;

/// Bytes that end the plain run of a JSON string: the closing quote, an escape, or a control
/// character (which JSON does not allow raw inside a string).
const STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Where the plain run of a string that goes on at `i` ends: the first quote, backslash or
/// control byte from `i`, eight bytes at a time. `None` if the document ends first.
#[inline(always)]
fn plain_run_end(b: &[u8], mut i: usize) -> Option<usize> {
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0; 8];
        w.copy_from_slice(chunk);
        let m = crate::ir::json_stop_mask(u64::from_le_bytes(w));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    while !STRING_STOP[*b.get(i)? as usize] {
        i += 1;
    }
    Some(i)
}

/// A cursor over one JSON document. Each reading method consumes one value (and the
/// whitespace after it) or answers `None`.
pub(crate) struct Reader<'a> {
    s: &'a str,
    i: usize,
    depth: usize,
}

/// Reads the document `s` with `f`, which must consume its one value; `None` if `f` does not
/// or if anything but whitespace follows.
pub(crate) fn document<'a, T>(
    s: &'a str,
    f: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Option<T> {
    let mut r = Reader { s, i: 0, depth: 0 };
    r.ws();
    let out = f(&mut r)?;
    (r.i == s.len()).then_some(out)
}

impl<'a> Reader<'a> {
    /// The byte here (the first of the next value), not consumed.
    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn ws(&mut self) {
        let b = self.s.as_bytes();
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(self.i) {
            self.i += 1;
        }
    }

    /// Consumes `c` and the whitespace after it.
    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? != c {
            return None;
        }
        self.i += 1;
        self.ws();
        Some(())
    }

    /// Skips the string opening here; the byte range inside its quotes, and whether it
    /// holds an escape.
    // Inlined into its callers: most strings of a reply or chunk are short keys, and the call
    // itself cost as much as the scan (a 16-token stream: 202.8k → 192.0k instructions).
    #[inline(always)]
    fn string_span(&mut self) -> Option<(usize, usize, bool)> {
        let b = self.s.as_bytes();
        if b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            i = plain_run_end(b, i)?;
            match b[i] {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    match *b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' => {
                            let hex = b.get(i + 2..i + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            i += 6;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a raw control character
            }
        }
        self.i = i + 1;
        self.ws();
        Some((start, i, escaped))
    }

    fn digits(&mut self) -> usize {
        let b = self.s.as_bytes();
        let start = self.i;
        while b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }

    /// Skips a number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        self.ws();
        Some(())
    }

    fn literal(&mut self, lit: &str) -> Option<()> {
        if !self.s[self.i..].starts_with(lit) {
            return None;
        }
        self.i += lit.len();
        self.ws();
        Some(())
    }

    /// Skips one value, validating it.
    pub(crate) fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string_span().map(drop),
            b'{' => self.object(|r, _| r.skip()),
            b'[' => self.array(|r| r.skip()),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => self.number(),
        }
    }

    /// Skips one value; its bytes as written (for serde to read).
    pub(crate) fn raw(&mut self) -> Option<&'a str> {
        let start = self.i;
        self.skip()?;
        Some(self.s[start..self.i].trim_end())
    }

    /// Consumes a `null` if one is here.
    pub(crate) fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.literal("null").is_some()
    }

    /// `true`, `false`, or `None` for `null`, as an `Option<bool>` field reads them.
    pub(crate) fn opt_bool(&mut self) -> Option<Option<bool>> {
        match self.peek()? {
            b't' => self.literal("true").map(|()| Some(true)),
            b'f' => self.literal("false").map(|()| Some(false)),
            _ => self.literal("null").map(|()| None),
        }
    }

    /// One value of any type, decoded by serde from its own bytes: exactly what serde makes
    /// of it inside the document (the pass has checked the nesting depth on the way).
    pub(crate) fn serde<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        serde_json::from_str(self.raw()?).ok()
    }

    /// Reads an object, calling `f(reader, key)` for each member; `f` must consume the
    /// member's value. `None` if a key holds an escape.
    pub(crate) fn object(
        &mut self,
        mut f: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.enter(b'{')?;
        if self.peek()? == b'}' {
            return self.leave();
        }
        loop {
            let (start, end, escaped) = self.string_span()?;
            if escaped {
                return None;
            }
            let key = &self.s[start..end];
            self.eat(b':')?;
            f(self, key)?;
            match self.peek()? {
                b',' => self.eat(b',')?,
                b'}' => return self.leave(),
                _ => return None,
            }
        }
    }

    /// Reads an array, calling `f(reader)` for each element; `f` must consume it.
    pub(crate) fn array(&mut self, mut f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.enter(b'[')?;
        if self.peek()? == b']' {
            return self.leave();
        }
        loop {
            f(self)?;
            match self.peek()? {
                b',' => self.eat(b',')?,
                b']' => return self.leave(),
                _ => return None,
            }
        }
    }

    /// Reads an array whose every element `f` reads.
    pub(crate) fn list<T>(&mut self, mut f: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        // Room for a few up front: growing from empty on the first push cost more than the
        // allocation itself.
        let mut out = Vec::with_capacity(4);
        self.array(|r| {
            out.push(f(r)?);
            Some(())
        })?;
        Some(out)
    }

    fn enter(&mut self, open: u8) -> Option<()> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.eat(open)?;
        self.depth += 1;
        Some(())
    }

    /// Consumes the closing bracket that is here.
    fn leave(&mut self) -> Option<()> {
        self.depth -= 1;
        self.i += 1;
        self.ws();
        Some(())
    }

    /// A string, borrowed when it holds no escape (decoded by serde when it does).
    pub(crate) fn str(&mut self) -> Option<Cow<'a, str>> {
        let (start, end, escaped) = self.string_span()?;
        if escaped {
            return serde_json::from_str::<String>(&self.s[start - 1..=end])
                .ok()
                .map(Cow::Owned);
        }
        Some(Cow::Borrowed(&self.s[start..end]))
    }

    /// A string, as [`Reader::str`] reads it, and where its token (quotes included) is in the
    /// document.
    pub(crate) fn str_at(&mut self) -> Option<(Cow<'a, str>, std::ops::Range<usize>)> {
        let at = self.i;
        let s = self.str()?;
        // `str` consumed the whitespace after the closing quote too.
        let end = at
            + self.s[at..self.i]
                .trim_end_matches([' ', '\t', '\n', '\r'])
                .len();
        Some((s, at..end))
    }

    /// A string, or `None` for `null`, as an `Option<String>` field reads it.
    pub(crate) fn opt_str(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null() {
            return Some(None);
        }
        self.str().map(Some)
    }

    /// A non-negative integer as an unsigned field reads it: digits only (serde refuses a
    /// fraction, an exponent or a sign for one), and it must fit.
    pub(crate) fn uint<T: TryFrom<u64>>(&mut self) -> Option<T> {
        let b = self.s.as_bytes();
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(d) = b.get(self.i).filter(|c| c.is_ascii_digit()) {
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let n = self.i - start;
        // `01` is not JSON; `1.5`, `1e3` are numbers an unsigned field refuses.
        if n == 0 || (n > 1 && b[start] == b'0') || matches!(self.peek(), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        self.ws();
        T::try_from(v).ok()
    }
}

/// Sets `slot` to `value` unless it was set already: serde refuses a struct's field given
/// twice, so a wanted member seen twice sends the document to serde.
pub(crate) fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// Sets an optional member once, as [`once`] does, for a reader of many optional members:
/// `seen` marks the members read so far, one bit each.
pub(crate) fn member<T>(
    seen: &mut u16,
    bit: u16,
    slot: &mut Option<T>,
    value: Option<T>,
) -> Option<()> {
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    *slot = value;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every member of a top-level object, its value as written.
    fn members(doc: &str) -> Option<Vec<(String, String)>> {
        document(doc, |r| {
            let mut out = Vec::new();
            r.object(|r, k| {
                out.push((k.to_owned(), r.raw()?.to_owned()));
                Some(())
            })?;
            Some(out)
        })
    }

    #[test]
    fn members_are_read_as_written() {
        let got = members(r#" { "a" : 1 , "b":[1, {"c":"d"}] ,"e":"x\"y", "f":null } "#).unwrap();
        assert_eq!(
            got,
            [
                ("a", "1"),
                ("b", r#"[1, {"c":"d"}]"#),
                ("e", r#""x\"y""#),
                ("f", "null")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(members("{}").unwrap(), []);
    }

    #[test]
    fn what_serde_refuses_the_pass_refuses() {
        for bad in [
            "",
            "{",
            "{}x",
            "{} {}",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":[1 2]}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":{"b"}}"#,
            r#"{"a":"unterminated}"#,
        ] {
            assert!(members(bad).is_none(), "the pass took {bad:?}");
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "serde took {bad:?}"
            );
        }
        assert!(members("[]").is_none(), "not an object");
    }

    #[test]
    fn an_escaped_key_or_deep_nesting_is_left_to_serde() {
        assert!(members(r#"{"a\u0062":1}"#).is_none());
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(members(&deep).is_none());
        let ok = format!(r#"{{"a":{}{}}}"#, "[".repeat(50), "]".repeat(50));
        assert!(members(&ok).is_some());
    }

    fn one<'a, T>(doc: &'a str, f: impl FnOnce(&mut Reader<'a>) -> Option<T>) -> Option<T> {
        document(doc, f)
    }

    #[test]
    fn scalars_read_as_serde_reads_them() {
        assert_eq!(one(r#""plain""#, |r| r.str()).as_deref(), Some("plain"));
        assert!(matches!(
            one(r#""plain""#, |r| r.str()),
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(
            one(r#""a\n\u00e9\ud83d\ude00""#, |r| r.str()).as_deref(),
            Some("a\né😀")
        );
        assert_eq!(one(r#""\ud83d""#, |r| r.str()), None, "a lone surrogate");
        assert_eq!(one("1", |r| r.str()), None);
        assert_eq!(one(" null ", |r| r.opt_str()), Some(None));
        assert_eq!(one("42", |r| r.uint::<u64>()), Some(42));
        assert_eq!(one("0", |r| r.uint::<u64>()), Some(0));
        assert_eq!(one("4294967296", |r| r.uint::<u32>()), None);
        assert_eq!(one("18446744073709551616", |r| r.uint::<u64>()), None);
        for bad in ["-1", "1.0", "1e3", "01", "\"1\"", "null"] {
            assert_eq!(one(bad, |r| r.uint::<u64>()), None, "{bad}");
        }
    }

    /// The eight-bytes-at-a-time scan finds the first stop wherever it falls in a word and
    /// whatever follows it, and passes multi-byte UTF-8 and the bytes just above the stops.
    #[test]
    fn plain_runs_end_at_the_first_stop() {
        let stops = [0x00, 0x0a, 0x1f, b'"', b'\\'];
        let plain = [
            0x20, b'!', b'#', b'[', b']', b'a', 0x7f, 0x80, 0xc3, 0xe9, 0xff,
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for len in 0..20 {
            for &stop in &stops {
                for round in 0..40 {
                    let mut doc: Vec<u8> = (0..len)
                        .map(|_| plain[(next() % plain.len() as u64) as usize])
                        .collect();
                    doc.push(stop);
                    // Anything after the first stop, other stops included.
                    doc.extend((0..round % 11).map(|_| next() as u8));
                    assert_eq!(plain_run_end(&doc, 0), Some(len), "{doc:?}");
                }
            }
            let doc: Vec<u8> = plain.iter().cycle().take(len).copied().collect();
            assert_eq!(plain_run_end(&doc, 0), None, "no stop in {doc:?}");
        }
        for b in 0..=255u8 {
            let m = crate::ir::json_stop_mask(u64::from_le_bytes([
                b'a', b'a', b'a', b, b'a', b'a', b'a', b'a',
            ]));
            assert_eq!(m != 0, STRING_STOP[b as usize], "byte {b:#x}");
            let s = [b'a', b'a', b'a', b'a', b'a', b'a', b'a', b'a', b'a', b];
            if let Ok(s) = std::str::from_utf8(&s[..]) {
                assert_eq!(crate::ir::json_plain(s), !STRING_STOP[b as usize], "{b:#x}");
            }
            if let Ok(s) = std::str::from_utf8(&s[6..]) {
                assert_eq!(crate::ir::json_plain(s), !STRING_STOP[b as usize], "{b:#x}");
            }
        }
    }

    #[test]
    fn strings_end_where_serde_ends_them_at_every_offset() {
        for len in 0..24 {
            for fill in ["a", "é", "!", "]", "\u{7f}"] {
                let plain: String = fill.repeat(len);
                let doc = format!("\"{plain}\"");
                assert_eq!(one(&doc, |r| r.str()).as_deref(), Some(plain.as_str()));
                for stop in ["\\n", "\\\"", "\\\\", "\\u00e9", "\n", "\u{1f}"] {
                    let doc = format!("\"{plain}{stop}{plain}\"");
                    let ours = one(&doc, |r| r.str()).map(|s| s.into_owned());
                    let serde = serde_json::from_str::<String>(&doc).ok();
                    assert_eq!(ours, serde, "{doc:?}");
                }
            }
        }
    }

    #[test]
    fn arrays_hand_out_each_element() {
        let got = one(r#"[ 1 ,{"a":[2]}, "x" ]"#, |r| {
            let mut out = Vec::new();
            r.array(|r| {
                out.push(r.raw()?.to_owned());
                Some(())
            })?;
            Some(out)
        });
        assert_eq!(got.unwrap(), ["1", r#"{"a":[2]}"#, r#""x""#]);
        assert!(one("[]", |r| r.array(|_| None)).is_some());
        assert!(one("{}", |r| r.array(|r| r.skip())).is_none());
    }
}
