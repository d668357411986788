//! The validating JSON scanner shared by [`crate::packet`] and [`crate::analyze`], and the
//! decoder of JSON string contents.
//!
//! The scanner is a hand-written RFC 8259 validator over raw bytes. It builds no values: its
//! methods step over one piece of the grammar (a string, a scalar, a member key, a separator,
//! any value) and return where it ends and what kind it was. Its callers descend by hand
//! through the levels that carry meaning to them and let `Scanner::value` skip the rest with
//! an iterative (stack-based, so never stack-overflowing) validator. Strings, most of a log
//! message's bytes, are skipped eight bytes at a time (SWAR).

use std::borrow::Cow;
use std::fmt;

/// A decoded JSON string: UTF-8 when it is valid Unicode, else the UTF-16 code units (a lone
/// surrogate escape such as `"\ud800"` is legal JSON but not a Rust `String`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Valid Unicode.
    Utf8(String),
    /// Holds a lone surrogate.
    Utf16(Vec<u16>),
}

/// Decodes the text between the quotes of a JSON string that the scanner already validated.
/// Valid surrogate pairs combine; lone surrogates are kept (as Python's `json` does).
///
/// # Examples
///
/// ```
/// use wlb::json::{decode_json_string, Decoded};
///
/// assert_eq!(decode_json_string(br"caf\u00e9 \ud83d\ude00"), Decoded::Utf8("café 😀".into()));
/// assert_eq!(decode_json_string(br"\ud800"), Decoded::Utf16(vec![0xD800]));
/// ```
#[must_use]
pub fn decode_json_string(raw: &[u8]) -> Decoded {
    if !raw.contains(&b'\\') {
        return Decoded::Utf8(String::from_utf8_lossy(raw).into_owned());
    }
    let mut units: Vec<u16> = Vec::with_capacity(raw.len());
    let text = String::from_utf8_lossy(raw);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let c = bytes[i + 1];
            if let Some(u) = simple_escape(c) {
                units.push(u);
                i += 2;
                continue;
            }
            if c == b'u' && i + 6 <= bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 2..i + 6]).unwrap_or("0000");
                units.push(u16::from_str_radix(hex, 16).unwrap_or(0));
                i += 6;
                continue;
            }
        }
        // An unescaped character: copy its UTF-16 form.
        let Some(ch) = text[i..].chars().next() else {
            break;
        };
        let mut buf = [0u16; 2];
        units.extend_from_slice(ch.encode_utf16(&mut buf));
        i += ch.len_utf8();
    }
    match String::from_utf16(&units) {
        Ok(s) => Decoded::Utf8(s),
        Err(_) => Decoded::Utf16(units),
    }
}

/// The code unit of a one-letter escape (`\n`, `\"`, ...).
fn simple_escape(c: u8) -> Option<u16> {
    Some(match c {
        b'"' => 0x22,
        b'\\' => 0x5C,
        b'/' => 0x2F,
        b'b' => 0x08,
        b'f' => 0x0C,
        b'n' => 0x0A,
        b'r' => 0x0D,
        b't' => 0x09,
        _ => return None,
    })
}

/// The kind of a scanned JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    /// A number without fraction or exponent.
    Int,
    /// Any other number.
    Num,
    Obj,
    Arr,
    /// `true`, `false` or `null`.
    Lit,
}

/// Why the scanner stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not JSON: what was wrong at byte `offset`.
    Syntax { offset: usize, what: &'static str },
    /// A container opens at byte `offset`, deeper than the scanner's limit.
    TooDeep { offset: usize },
    /// Strict mode: valid RFC 8259 at byte `offset`, but a value orjson refuses (a number that
    /// overflows a double, an unpaired surrogate escape): what it is.
    Unsupported { offset: usize, what: &'static str },
}

impl JsonError {
    pub(crate) fn syntax(offset: usize, what: &'static str) -> Self {
        Self::Syntax { offset, what }
    }

    pub(crate) fn eof(offset: usize) -> Self {
        Self::syntax(offset, "unexpected end of input")
    }

    pub(crate) fn unsupported(offset: usize, what: &'static str) -> Self {
        Self::Unsupported { offset, what }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            // The analyzer answers with this text: an unsupported value reads as a syntax error.
            Self::Syntax { offset, what } | Self::Unsupported { offset, what } => {
                write!(f, "invalid JSON at byte {offset}: {what}")
            }
            Self::TooDeep { offset } => {
                write!(f, "invalid JSON at byte {offset}: nesting too deep")
            }
        }
    }
}

impl std::error::Error for JsonError {}

pub(crate) type Scan<T> = Result<T, JsonError>;

/// A member key: the span of the text between its quotes, and whether it holds escapes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) escaped: bool,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in every byte of `w` that is `"`, `\` or below 0x20. A borrow can only set a
/// false bit *above* a true one, so the lowest set bit is always a real special byte.
#[inline(always)]
fn special_bytes(w: u64) -> u64 {
    let q = w ^ (LO * u64::from(b'"'));
    let b = w ^ (LO * u64::from(b'\\'));
    let zq = q.wrapping_sub(LO) & !q;
    let zb = b.wrapping_sub(LO) & !b;
    let ctl = w.wrapping_sub(LO * 0x20) & !w;
    (zq | zb | ctl) & HI
}

/// JSON whitespace.
#[inline(always)]
pub(crate) fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// The validating scanner over `buf[..lim]`.
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    /// End of the region being scanned (the body, or the current NDJSON line).
    lim: usize,
    max_depth: i64,
    /// Strict mode rejects what orjson rejects beyond RFC 8259's grammar: unpaired surrogate
    /// escapes and numbers that overflow a double. This is the one definition of a value the
    /// analyzer takes: `route_packet` (at ingest) and `BatchAnalyzer` both scan with it.
    strict: bool,
    /// Open containers of the value being skipped (`{` or `[`).
    stack: Vec<u8>,
}

impl<'a> Scanner<'a> {
    /// A lenient scanner over all of `buf`; containers may nest `max_depth` deep.
    pub(crate) fn new(buf: &'a [u8], max_depth: i64) -> Self {
        Self {
            buf,
            lim: buf.len(),
            max_depth,
            strict: false,
            stack: Vec::new(),
        }
    }

    /// A scanner in strict mode (see `strict`).
    pub(crate) fn new_strict(buf: &'a [u8], max_depth: i64) -> Self {
        Self {
            strict: true,
            ..Self::new(buf, max_depth)
        }
    }

    /// The whole buffer (offsets are into it).
    #[inline(always)]
    pub(crate) fn buf(&self) -> &'a [u8] {
        self.buf
    }

    /// End of the region being scanned.
    #[inline(always)]
    pub(crate) fn lim(&self) -> usize {
        self.lim
    }

    /// Scans `buf[..lim]` from now on (one NDJSON line, or the whole body again).
    pub(crate) fn set_lim(&mut self, lim: usize) {
        self.lim = lim;
    }

    /// The byte at `pos` when it is inside the region.
    #[inline(always)]
    pub(crate) fn peek(&self, pos: usize) -> Option<u8> {
        (pos < self.lim).then(|| self.buf[pos])
    }

    /// Err(too deep) when a container at `depth` (the top-level value is 1) is over the limit.
    #[inline]
    pub(crate) fn check_depth(&self, pos: usize, depth: i64) -> Scan<()> {
        if depth > self.max_depth {
            Err(JsonError::TooDeep { offset: pos })
        } else {
            Ok(())
        }
    }

    /// The first position at or after `pos` that is not whitespace.
    #[inline(always)]
    pub(crate) fn ws(&self, mut pos: usize) -> usize {
        while pos < self.lim && is_ws(self.buf[pos]) {
            pos += 1;
        }
        pos
    }

    /// The start of the one value a document holds (after leading whitespace).
    pub(crate) fn document_start(&self, pos: usize) -> Scan<usize> {
        let pos = self.ws(pos);
        if pos >= self.lim {
            let what = if self.lim == 0 {
                "empty body"
            } else {
                "expected a JSON value, found only whitespace"
            };
            return Err(JsonError::syntax(pos, what));
        }
        Ok(pos)
    }

    /// Err unless only whitespace follows a document's value ending at `end`.
    pub(crate) fn document_end(&self, end: usize) -> Scan<()> {
        let rest = self.ws(end);
        if rest < self.lim {
            return Err(JsonError::syntax(
                rest,
                "unexpected data after the JSON value",
            ));
        }
        Ok(())
    }

    /// A string opening at `pos`; returns (end after the closing quote, had escapes).
    #[inline]
    pub(crate) fn string(&self, mut pos: usize) -> Scan<(usize, bool)> {
        let buf = self.buf;
        let lim = self.lim;
        let start = pos;
        pos += 1;
        let mut escaped = false;
        loop {
            while pos + 8 <= lim {
                let w = u64::from_le_bytes(buf[pos..pos + 8].try_into().expect("8 bytes"));
                let m = special_bytes(w);
                if m != 0 {
                    pos += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                pos += 8;
            }
            if pos >= lim {
                return Err(JsonError::syntax(start, "unterminated string"));
            }
            match buf[pos] {
                b'"' => {
                    if escaped && self.strict {
                        check_surrogates(buf, start + 1, pos)?;
                    }
                    return Ok((pos + 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    pos = self.escape(pos)?;
                }
                c if c < 0x20 => return Err(JsonError::syntax(pos, "control character in string")),
                _ => pos += 1,
            }
        }
    }

    /// The escape sequence at `pos` (a backslash); returns its end.
    #[inline]
    fn escape(&self, pos: usize) -> Scan<usize> {
        let buf = self.buf;
        match self.peek(pos + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(pos + 2),
            Some(b'u') => {
                if pos + 6 > self.lim || !buf[pos + 2..pos + 6].iter().all(u8::is_ascii_hexdigit) {
                    return Err(JsonError::syntax(pos, "invalid \\u escape"));
                }
                Ok(pos + 6)
            }
            _ => Err(JsonError::syntax(pos, "invalid escape")),
        }
    }

    #[inline]
    fn digits(&self, mut pos: usize) -> usize {
        while pos < self.lim && self.buf[pos].is_ascii_digit() {
            pos += 1;
        }
        pos
    }

    /// A non-container value at `pos` (< lim); returns (end, kind).
    #[inline]
    pub(crate) fn scalar(&self, pos: usize) -> Scan<(usize, Kind)> {
        let buf = self.buf;
        let c = buf[pos];
        if c == b'"' {
            return self.string(pos).map(|(end, _)| (end, Kind::Str));
        }
        if c == b'-' || c.is_ascii_digit() {
            return self.number(pos);
        }
        for lit in [&b"true"[..], b"false", b"null"] {
            if buf[pos..self.lim].starts_with(lit) {
                return Ok((pos + lit.len(), Kind::Lit));
            }
        }
        Err(JsonError::syntax(pos, "unexpected character"))
    }

    /// A number at `pos` (a digit or `-`); returns (end, Int or Num).
    #[inline]
    fn number(&self, pos: usize) -> Scan<(usize, Kind)> {
        let buf = self.buf;
        let lim = self.lim;
        let mut p = pos;
        if buf[p] == b'-' {
            p += 1;
        }
        if p >= lim || !buf[p].is_ascii_digit() {
            return Err(JsonError::syntax(pos, "invalid number"));
        }
        p = if buf[p] == b'0' {
            p + 1
        } else {
            self.digits(p)
        };
        let mut kind = Kind::Int;
        if p + 1 < lim && buf[p] == b'.' && buf[p + 1].is_ascii_digit() {
            p = self.digits(p + 1);
            kind = Kind::Num;
        }
        if p < lim && (buf[p] | 0x20) == b'e' {
            let mut q = p + 1;
            if q < lim && (buf[q] == b'+' || buf[q] == b'-') {
                q += 1;
            }
            if q < lim && buf[q].is_ascii_digit() {
                p = self.digits(q);
                kind = Kind::Num;
            }
        }
        // Only an exponent or a very long number can overflow a double.
        if self.strict
            && (p - pos > 300
                || (kind == Kind::Num && buf[pos..p].iter().any(|&c| c | 0x20 == b'e')))
        {
            let text = std::str::from_utf8(&buf[pos..p]).expect("ASCII digits");
            if text.parse::<f64>().map_or(true, f64::is_infinite) {
                return Err(JsonError::unsupported(
                    pos,
                    "number is infinity when parsed as a double",
                ));
            }
        }
        Ok((p, kind))
    }

    /// `"key" :` with whitespace around; returns (the key, value position).
    #[inline]
    pub(crate) fn member_key(&self, pos: usize) -> Scan<(Key, usize)> {
        let pos = self.ws(pos);
        match self.peek(pos) {
            None => return Err(JsonError::eof(pos)),
            Some(b'"') => {}
            Some(_) => return Err(JsonError::syntax(pos, "expected a string key")),
        }
        let (end, escaped) = self.string(pos)?;
        let p = self.ws(end);
        match self.peek(p) {
            None => return Err(JsonError::eof(p)),
            Some(b':') => {}
            Some(_) => return Err(JsonError::syntax(p, "expected ':'")),
        }
        let key = Key {
            start: pos + 1,
            end: end - 1,
            escaped,
        };
        Ok((key, self.ws(p + 1)))
    }

    /// The decoded name of a key; None when it holds a lone surrogate (no name matches it).
    #[inline]
    pub(crate) fn key_name(&self, key: Key) -> Option<Cow<'a, [u8]>> {
        let raw = &self.buf[key.start..key.end];
        if !key.escaped {
            return Some(Cow::Borrowed(raw));
        }
        match decode_json_string(raw) {
            Decoded::Utf8(s) => Some(Cow::Owned(s.into_bytes())),
            Decoded::Utf16(_) => None,
        }
    }

    /// True when the key's decoded name is `name`.
    #[inline]
    pub(crate) fn key_is(&self, key: Key, name: &[u8]) -> bool {
        self.key_name(key).is_some_and(|k| *k == *name)
    }

    /// After a member or element: (position after the separator, true if it was `closer`).
    #[inline]
    pub(crate) fn after_value(&self, pos: usize, closer: u8) -> Scan<(usize, bool)> {
        let pos = self.ws(pos);
        match self.peek(pos) {
            None => Err(JsonError::eof(pos)),
            Some(b',') => Ok((pos + 1, false)),
            Some(c) if c == closer => Ok((pos + 1, true)),
            Some(_) => Err(JsonError::syntax(pos, "expected ',' or a closing bracket")),
        }
    }

    /// Any value at `pos` (whitespace already skipped), a container being at `depth`.
    pub(crate) fn value(&mut self, pos: usize, depth: i64) -> Scan<(usize, Kind)> {
        match self.peek(pos) {
            None => Err(JsonError::eof(pos)),
            Some(b'{') => Ok((self.container(pos, depth)?, Kind::Obj)),
            Some(b'[') => Ok((self.container(pos, depth)?, Kind::Arr)),
            Some(_) => self.scalar(pos),
        }
    }

    /// Validates the array or object opening at `pos` (at `depth`), iteratively; returns its end.
    fn container(&mut self, mut pos: usize, depth: i64) -> Scan<usize> {
        self.check_depth(pos, depth)?;
        self.stack.clear();
        self.stack.push(self.buf[pos]);
        pos += 1;
        let mut expect_first = true;
        loop {
            let top = *self.stack.last().expect("non-empty");
            let mut opened = false;
            if expect_first {
                expect_first = false;
                pos = self.ws(pos);
                let c = self.peek(pos).ok_or(JsonError::eof(pos))?;
                if (c == b'}' && top == b'{') || (c == b']' && top == b'[') {
                    // An empty container: its end counts as a value of the enclosing one.
                    self.stack.pop();
                    pos += 1;
                    if self.stack.is_empty() {
                        return Ok(pos);
                    }
                } else {
                    (pos, opened) = self.element(pos, depth, top)?;
                }
            }
            if opened {
                expect_first = true;
                continue;
            }
            // After a value: a separator or the closer of the innermost container.
            let top = *self.stack.last().expect("non-empty");
            pos = self.ws(pos);
            let c = self.peek(pos).ok_or(JsonError::eof(pos))?;
            if c == b',' {
                (pos, expect_first) = self.element(pos + 1, depth, top)?;
                continue;
            }
            if (c == b'}' && top == b'{') || (c == b']' && top == b'[') {
                self.stack.pop();
                pos += 1;
                if self.stack.is_empty() {
                    return Ok(pos);
                }
                continue;
            }
            return Err(JsonError::syntax(pos, "expected ',' or a closing bracket"));
        }
    }

    /// One member (in an object, `top == b'{'`) or element of the container being skipped, at
    /// `pos`. A scalar is stepped over; a container is opened (pushed). Returns (position,
    /// whether a container was opened).
    #[inline]
    fn element(&mut self, pos: usize, depth: i64, top: u8) -> Scan<(usize, bool)> {
        let pos = if top == b'{' {
            self.member_key(pos)?.1
        } else {
            self.ws(pos)
        };
        let c = self.peek(pos).ok_or(JsonError::eof(pos))?;
        if c == b'{' || c == b'[' {
            self.check_depth(pos, depth + self.stack.len() as i64)?;
            self.stack.push(c);
            return Ok((pos + 1, true));
        }
        Ok((self.scalar(pos)?.0, false))
    }
}

/// Strict mode: every `\uD800`-`\uDBFF` escape in `buf[start..end]` (a validated string's
/// contents) must be followed at once by a `\uDC00`-`\uDFFF` escape, and a low one must not
/// stand alone (orjson's rule; the error names the string's opening quote).
fn check_surrogates(buf: &[u8], start: usize, end: usize) -> Scan<()> {
    let hex = |i: usize| -> u16 {
        let text = std::str::from_utf8(&buf[i..i + 4]).expect("validated hex digits");
        u16::from_str_radix(text, 16).expect("validated hex digits")
    };
    let mut i = start;
    while i < end {
        if buf[i] != b'\\' {
            i += 1;
            continue;
        }
        if buf[i + 1] != b'u' {
            i += 2;
            continue;
        }
        let unit = hex(i + 2);
        i += 6;
        if (0xDC00..0xE000).contains(&unit) {
            return Err(JsonError::unsupported(
                start - 1,
                "lone low surrogate in string",
            ));
        }
        if (0xD800..0xDC00).contains(&unit) {
            let paired = i + 6 <= end
                && buf[i] == b'\\'
                && buf[i + 1] == b'u'
                && (0xDC00..0xE000).contains(&hex(i + 2));
            if !paired {
                return Err(JsonError::unsupported(
                    start - 1,
                    "high surrogate without a low one in string",
                ));
            }
            i += 6;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn first_special(bytes: &[u8]) -> Option<usize> {
        bytes
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
    }

    #[test]
    fn swar_finds_the_first_special_byte() {
        let mut rng = SplitMix64::new(11);
        let alphabet = [
            b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xff, 0xe2, b'!', b'#', b'[',
        ];
        for _ in 0..200_000 {
            let mut bytes = [0u8; 8];
            for b in &mut bytes {
                let r = rng.next_u64();
                *b = if r.trailing_zeros() >= 2 {
                    alphabet[(r >> 8) as usize % alphabet.len()]
                } else {
                    (r >> 16) as u8
                };
            }
            let m = special_bytes(u64::from_le_bytes(bytes));
            let got = (m != 0).then(|| (m.trailing_zeros() / 8) as usize);
            assert_eq!(got, first_special(&bytes), "{bytes:?}");
        }
    }

    fn skip(body: &[u8], max_depth: i64) -> Scan<(usize, Kind)> {
        Scanner::new(body, max_depth).value(0, 1)
    }

    #[test]
    fn skips_nested_values_and_reports_depth() {
        let body = br#"{"a":[1,{"b":[]},{}],"c":{"d":[true,null,"x"]}}"#;
        assert_eq!(skip(body, 4), Ok((body.len(), Kind::Obj)));
        assert_eq!(skip(body, 3), Err(JsonError::TooDeep { offset: 13 }));
        assert_eq!(skip(b"[[]]", 1), Err(JsonError::TooDeep { offset: 1 }));
        assert_eq!(skip(b"[[]]", 2), Ok((4, Kind::Arr)));
        assert_eq!(
            skip(b"[1,]", 9),
            Err(JsonError::syntax(3, "unexpected character"))
        );
        assert_eq!(
            skip(b"{\"a\" 1}", 9),
            Err(JsonError::syntax(5, "expected ':'"))
        );
        assert_eq!(skip(b"[1", 9), Err(JsonError::eof(2)));
    }
}
