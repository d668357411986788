//! `route_packet`: validate a request body, give every message an id, and route each message,
//! in one pass over the raw bytes and without building a value per message.
//!
//! The scanner is a hand-written RFC 8259 validator. It descends by hand through the three
//! levels that carry meaning (packet object, messages array, message object) and skips every
//! other value with an iterative (stack-based, so never stack-overflowing) validator. Strings,
//! most of a log message's bytes, are skipped eight bytes at a time (SWAR). It records message
//! spans and the first schema error of each step; syntax errors stop it at once. The verdict
//! order is the contract's (`python/logdist/_wlb.pyi`): bad_utf8, bad_json/too_deep (whichever
//! comes first in the body), bad_schema (packet fields, then messages), empty_packet,
//! too_many_messages.

use crate::router::{Router, RouterError};
use std::fmt;

/// Which shape of body to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON, or NDJSON when more follows a first object.
    Auto,
    /// One JSON value: a packet object or an array of messages.
    Json,
    /// One message object per line.
    Ndjson,
}

impl Format {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::Auto),
            "json" => Some(Self::Json),
            "ndjson" => Some(Self::Ndjson),
            _ => None,
        }
    }
}

/// The stable error codes (the distributor answers 400, or 413 for too_many_messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadUtf8,
    BadJson,
    TooDeep,
    BadSchema,
    EmptyPacket,
    TooManyMessages,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadUtf8 => "bad_utf8",
            Self::BadJson => "bad_json",
            Self::TooDeep => "too_deep",
            Self::BadSchema => "bad_schema",
            Self::EmptyPacket => "empty_packet",
            Self::TooManyMessages => "too_many_messages",
        }
    }
}

/// A body that cannot be accepted: a code and a detail naming the offset or the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketError {
    pub code: ErrorCode,
    pub detail: String,
}

impl PacketError {
    fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl std::error::Error for PacketError {}

/// Why `route_packet` failed.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteError {
    /// The body was rejected; nothing was routed and no pick was drawn.
    Packet(PacketError),
    /// The router could not pick (no eligible target, or unusable weights).
    Router(RouterError),
    /// A bad argument (format, fallback prefix).
    Argument(String),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Packet(e) => write!(f, "{e}"),
            Self::Router(e) => write!(f, "{e}"),
            Self::Argument(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for RouteError {}

impl From<PacketError> for RouteError {
    fn from(e: PacketError) -> Self {
        Self::Packet(e)
    }
}

/// Options of `route_packet`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub format: Format,
    pub max_messages: i64,
    pub max_depth: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            format: Format::Auto,
            max_messages: 10_000,
            max_depth: 64,
        }
    }
}

/// A decoded JSON string: UTF-8 when it is valid Unicode, else the UTF-16 code units (a lone
/// surrogate escape such as `"\ud800"` is legal JSON but not a Rust `String`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Utf8(String),
    Utf16(Vec<u16>),
}

/// Decodes the text between the quotes of a JSON string that the scanner already validated.
/// Valid surrogate pairs combine; lone surrogates are kept (as Python's `json` does).
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
            let unit = match c {
                b'"' => Some(0x22),
                b'\\' => Some(0x5C),
                b'/' => Some(0x2F),
                b'b' => Some(0x08),
                b'f' => Some(0x0C),
                b'n' => Some(0x0A),
                b'r' => Some(0x0D),
                b't' => Some(0x09),
                _ => None,
            };
            if let Some(u) = unit {
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
        let ch = text[i..].chars().next().expect("in bounds");
        let mut buf = [0u16; 2];
        units.extend_from_slice(ch.encode_utf16(&mut buf));
        i += ch.len_utf8();
    }
    match String::from_utf16(&units) {
        Ok(s) => Decoded::Utf8(s),
        Err(_) => Decoded::Utf16(units),
    }
}

// ---------------------------------------------------------------------------------- scanner

/// The kind of a scanned JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Int,
    Num,
    Obj,
    Arr,
    Lit,
}

/// A syntax violation: code (bad_json or too_deep), byte offset, and what was expected.
#[derive(Debug)]
pub(crate) struct JsonError {
    pub(crate) code: ErrorCode,
    pub(crate) offset: usize,
    pub(crate) what: &'static str,
}

pub(crate) type Scan<T> = Result<T, JsonError>;

pub(crate) fn bad(offset: usize, what: &'static str) -> JsonError {
    JsonError {
        code: ErrorCode::BadJson,
        offset,
        what,
    }
}

fn too_deep(offset: usize) -> JsonError {
    JsonError {
        code: ErrorCode::TooDeep,
        offset,
        what: "nesting too deep",
    }
}

pub(crate) const EOF: &str = "unexpected end of input";

/// One message: its span in the body and whether it has an "id" member.
#[derive(Debug, Clone, Copy)]
struct Msg {
    start: usize,
    end: usize,
    has_id: bool,
}

/// A non-object element: counts for the index of the next message, never routed.
const NOT_A_MESSAGE: Msg = Msg {
    start: usize::MAX,
    end: usize::MAX,
    has_id: true,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Message,
    Level,
    Source,
    Timestamp,
    Id,
    Metadata,
}

impl Field {
    fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"message" => Self::Message,
            b"level" => Self::Level,
            b"source" => Self::Source,
            b"timestamp" => Self::Timestamp,
            b"id" => Self::Id,
            b"metadata" => Self::Metadata,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Level => "level",
            Self::Source => "source",
            Self::Timestamp => "timestamp",
            Self::Id => "id",
            Self::Metadata => "metadata",
        }
    }

    fn accepts(self, kind: Kind) -> bool {
        match self {
            Self::Message | Self::Level | Self::Source => kind == Kind::Str,
            Self::Timestamp => matches!(kind, Kind::Str | Kind::Int | Kind::Num),
            Self::Id => matches!(kind, Kind::Str | Kind::Int),
            Self::Metadata => kind == Kind::Obj,
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Self::Message | Self::Level | Self::Source => "string",
            Self::Timestamp => "string or number",
            Self::Id => "string or integer",
            Self::Metadata => "object",
        }
    }
}

/// Where a message sits, for error details.
#[derive(Clone, Copy)]
enum Label<'n> {
    Element(&'n str, usize),
    Line(usize),
}

impl Label<'_> {
    fn path(self, field: Option<Field>) -> String {
        match (self, field) {
            (Label::Element(name, i), Some(f)) => format!("{name}[{i}].{}", f.name()),
            (Label::Element(name, i), None) => format!("{name}[{i}]"),
            (Label::Line(n), Some(f)) => format!("line {n}: {}", f.name()),
            (Label::Line(n), None) => format!("line {n}"),
        }
    }
}

/// What the syntax pass found.
#[derive(Default)]
struct Found {
    msgs: Vec<Msg>,
    /// First message-level schema error (step 4).
    msg_err: Option<String>,
    /// First packet-level schema error (step 3).
    pkt_err: Option<String>,
    /// How many "messages"/"log_messages" members the packet had.
    arrays: u32,
    emitter_raw: Option<(usize, usize)>,
    agent_raw: Option<(usize, usize)>,
    pid_raw: Option<(usize, usize)>,
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

#[inline(always)]
pub(crate) fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// The validating scanner. `route_packet` uses it in its own (lenient) mode; the analyzer
/// (`crate::analyze`) drives its low-level methods in strict mode.
pub(crate) struct Scanner<'a> {
    pub(crate) buf: &'a [u8],
    /// End of the region being scanned (the body, or the current NDJSON line).
    pub(crate) lim: usize,
    max_depth: i64,
    /// Strict mode rejects what orjson rejects beyond RFC 8259's grammar: unpaired surrogate
    /// escapes and numbers that overflow a double. route_packet never sets it.
    strict: bool,
    stack: Vec<u8>,
    found: Found,
}

impl<'a> Scanner<'a> {
    fn new(buf: &'a [u8], max_depth: i64) -> Self {
        Self {
            buf,
            lim: buf.len(),
            max_depth,
            strict: false,
            stack: Vec::new(),
            found: Found::default(),
        }
    }

    /// A scanner in strict mode (see `strict`).
    pub(crate) fn new_strict(buf: &'a [u8], max_depth: i64) -> Self {
        Self {
            strict: true,
            ..Self::new(buf, max_depth)
        }
    }

    #[inline(always)]
    pub(crate) fn ws(&self, mut pos: usize) -> usize {
        while pos < self.lim && is_ws(self.buf[pos]) {
            pos += 1;
        }
        pos
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
                return Err(bad(start, "unterminated string"));
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
                    match buf.get(pos + 1).filter(|_| pos + 1 < lim) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => pos += 2,
                        Some(b'u') => {
                            if pos + 6 > lim
                                || !buf[pos + 2..pos + 6].iter().all(u8::is_ascii_hexdigit)
                            {
                                return Err(bad(pos, "invalid \\u escape"));
                            }
                            pos += 6;
                        }
                        _ => return Err(bad(pos, "invalid escape")),
                    }
                }
                c if c < 0x20 => return Err(bad(pos, "control character in string")),
                _ => pos += 1,
            }
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
        let lim = self.lim;
        let c = buf[pos];
        if c == b'"' {
            return self.string(pos).map(|(end, _)| (end, Kind::Str));
        }
        if c == b'-' || c.is_ascii_digit() {
            let mut p = pos;
            if buf[p] == b'-' {
                p += 1;
            }
            if p >= lim || !buf[p].is_ascii_digit() {
                return Err(bad(pos, "invalid number"));
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
                    return Err(bad(pos, "number is infinity when parsed as a double"));
                }
            }
            return Ok((p, kind));
        }
        for lit in [&b"true"[..], b"false", b"null"] {
            if buf[pos..lim].starts_with(lit) {
                return Ok((pos + lit.len(), Kind::Lit));
            }
        }
        Err(bad(pos, "unexpected character"))
    }

    /// `"key" :` with whitespace around; returns (key start, key end, escaped, value position).
    #[inline]
    pub(crate) fn member_key(&self, pos: usize) -> Scan<(usize, usize, bool, usize)> {
        let pos = self.ws(pos);
        if pos >= self.lim {
            return Err(bad(pos, EOF));
        }
        if self.buf[pos] != b'"' {
            return Err(bad(pos, "expected a string key"));
        }
        let (end, escaped) = self.string(pos)?;
        let p = self.ws(end);
        if p >= self.lim {
            return Err(bad(p, EOF));
        }
        if self.buf[p] != b':' {
            return Err(bad(p, "expected ':'"));
        }
        Ok((pos + 1, end - 1, escaped, self.ws(p + 1)))
    }

    /// The decoded name of a key, compared against the names that carry meaning.
    pub(crate) fn key_is(&self, (start, end, escaped): (usize, usize, bool), name: &[u8]) -> bool {
        let raw = &self.buf[start..end];
        if !escaped {
            return raw == name;
        }
        match decode_json_string(raw) {
            Decoded::Utf8(s) => s.as_bytes() == name,
            Decoded::Utf16(_) => false,
        }
    }

    fn field_of(&self, (start, end, escaped): (usize, usize, bool)) -> Option<Field> {
        let raw = &self.buf[start..end];
        if !escaped {
            return Field::from_name(raw);
        }
        match decode_json_string(raw) {
            Decoded::Utf8(s) => Field::from_name(s.as_bytes()),
            Decoded::Utf16(_) => None,
        }
    }

    /// After a member or element: (position after the separator, true if it was `closer`).
    #[inline]
    pub(crate) fn after_value(&self, pos: usize, closer: u8) -> Scan<(usize, bool)> {
        let pos = self.ws(pos);
        if pos >= self.lim {
            return Err(bad(pos, EOF));
        }
        match self.buf[pos] {
            b',' => Ok((pos + 1, false)),
            c if c == closer => Ok((pos + 1, true)),
            _ => Err(bad(pos, "expected ',' or a closing bracket")),
        }
    }

    /// Any value at `pos` (whitespace already skipped), a container being at `depth`.
    pub(crate) fn value(&mut self, pos: usize, depth: i64) -> Scan<(usize, Kind)> {
        if pos >= self.lim {
            return Err(bad(pos, EOF));
        }
        match self.buf[pos] {
            b'{' => Ok((self.container(pos, depth)?, Kind::Obj)),
            b'[' => Ok((self.container(pos, depth)?, Kind::Arr)),
            _ => self.scalar(pos),
        }
    }

    /// Validates the array or object opening at `pos` (at `depth`), iteratively; returns its end.
    fn container(&mut self, mut pos: usize, depth: i64) -> Scan<usize> {
        if depth > self.max_depth {
            return Err(too_deep(pos));
        }
        let buf = self.buf;
        let lim = self.lim;
        self.stack.clear();
        self.stack.push(buf[pos]);
        pos += 1;
        let mut expect_first = true;
        loop {
            let mut top = *self.stack.last().expect("non-empty");
            if expect_first {
                expect_first = false;
                pos = self.ws(pos);
                if pos >= lim {
                    return Err(bad(pos, EOF));
                }
                let c = buf[pos];
                if (c == b'}' && top == b'{') || (c == b']' && top == b'[') {
                    self.stack.pop();
                    pos += 1;
                    match self.stack.last() {
                        None => return Ok(pos),
                        Some(&t) => top = t,
                    }
                } else {
                    if top == b'{' {
                        pos = self.member_key(pos)?.3;
                    }
                    if pos >= lim {
                        return Err(bad(pos, EOF));
                    }
                    let c = buf[pos];
                    if c == b'{' || c == b'[' {
                        if depth + self.stack.len() as i64 > self.max_depth {
                            return Err(too_deep(pos));
                        }
                        self.stack.push(c);
                        pos += 1;
                        expect_first = true;
                        continue;
                    }
                    pos = self.scalar(pos)?.0;
                }
            }
            // After a value: a separator or the closer of the innermost container.
            pos = self.ws(pos);
            if pos >= lim {
                return Err(bad(pos, EOF));
            }
            let c = buf[pos];
            if c == b',' {
                pos += 1;
                if top == b'{' {
                    pos = self.member_key(pos)?.3;
                } else {
                    pos = self.ws(pos);
                }
                if pos >= lim {
                    return Err(bad(pos, EOF));
                }
                let c = buf[pos];
                if c == b'{' || c == b'[' {
                    if depth + self.stack.len() as i64 > self.max_depth {
                        return Err(too_deep(pos));
                    }
                    self.stack.push(c);
                    pos += 1;
                    expect_first = true;
                    continue;
                }
                pos = self.scalar(pos)?.0;
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
            return Err(bad(pos, "expected ',' or a closing bracket"));
        }
    }

    /// A message object at `pos`: records its span, whether it has an id, and its first error.
    fn message(&mut self, mut pos: usize, depth: i64, label: Label<'_>) -> Scan<usize> {
        if depth > self.max_depth {
            return Err(too_deep(pos));
        }
        let start = pos;
        pos += 1;
        let check = self.found.msg_err.is_none();
        let mut err: Option<Field> = None;
        let mut has_id = false;
        let mut has_message = false;
        let p = self.ws(pos);
        if p < self.lim && self.buf[p] == b'}' {
            pos = p + 1;
        } else {
            loop {
                let (ks, ke, esc, vpos) = self.member_key(pos)?;
                if vpos >= self.lim {
                    return Err(bad(vpos, EOF));
                }
                let (end, kind) = self.value(vpos, depth + 1)?;
                pos = end;
                if check {
                    if let Some(field) = self.field_of((ks, ke, esc)) {
                        match field {
                            Field::Id => has_id = true,
                            Field::Message => has_message = true,
                            _ => {}
                        }
                        if err.is_none() && !field.accepts(kind) {
                            err = Some(field);
                        }
                    }
                }
                let (next, closed) = self.after_value(pos, b'}')?;
                pos = next;
                if closed {
                    break;
                }
            }
        }
        self.found.msgs.push(Msg {
            start,
            end: pos,
            has_id,
        });
        if check {
            if let Some(field) = err {
                self.found.msg_err = Some(format!(
                    "{}: expected {}",
                    label.path(Some(field)),
                    field.expected()
                ));
            } else if !has_message {
                self.found.msg_err = Some(format!(
                    "{}: required string is missing",
                    label.path(Some(Field::Message))
                ));
            }
        }
        Ok(pos)
    }

    /// An array of messages at `pos` (at `depth`); returns its end.
    fn messages_array(&mut self, mut pos: usize, depth: i64, name: &str) -> Scan<usize> {
        if depth > self.max_depth {
            return Err(too_deep(pos));
        }
        pos += 1;
        let p = self.ws(pos);
        if p < self.lim && self.buf[p] == b']' {
            return Ok(p + 1);
        }
        let mut i = self.found.msgs.len();
        loop {
            pos = self.ws(pos);
            if pos >= self.lim {
                return Err(bad(pos, EOF));
            }
            if self.buf[pos] == b'{' {
                pos = self.message(pos, depth + 1, Label::Element(name, i))?;
            } else {
                pos = self.value(pos, depth + 1)?.0;
                self.found.msgs.push(NOT_A_MESSAGE);
                if self.found.msg_err.is_none() {
                    self.found.msg_err = Some(format!(
                        "{}: expected object",
                        Label::Element(name, i).path(None)
                    ));
                }
            }
            i += 1;
            let (next, closed) = self.after_value(pos, b']')?;
            pos = next;
            if closed {
                return Ok(pos);
            }
        }
    }

    /// A packet object (depth 1) opening at `pos`; returns its end.
    fn packet(&mut self, mut pos: usize) -> Scan<usize> {
        if self.max_depth < 1 {
            return Err(too_deep(pos));
        }
        pos += 1;
        let p = self.ws(pos);
        if p < self.lim && self.buf[p] == b'}' {
            return Ok(p + 1);
        }
        loop {
            let (ks, ke, esc, vpos) = self.member_key(pos)?;
            let key = (ks, ke, esc);
            if vpos >= self.lim {
                return Err(bad(vpos, EOF));
            }
            let c = self.buf[vpos];
            let array_name = if self.key_is(key, b"messages") {
                Some("messages")
            } else if self.key_is(key, b"log_messages") {
                Some("log_messages")
            } else {
                None
            };
            if let Some(name) = array_name {
                self.found.arrays += 1;
                if c == b'[' {
                    pos = self.messages_array(vpos, 2, name)?;
                } else {
                    pos = self.value(vpos, 2)?.0;
                    if self.found.pkt_err.is_none() {
                        self.found.pkt_err = Some(format!("{name}: expected array"));
                    }
                }
            } else {
                let (end, kind) = self.value(vpos, 2)?;
                pos = end;
                let is_emitter = self.key_is(key, b"emitter_id");
                if is_emitter || self.key_is(key, b"agent_id") {
                    if kind == Kind::Str {
                        let span = Some((vpos + 1, end - 1));
                        if is_emitter {
                            self.found.emitter_raw = span;
                        } else {
                            self.found.agent_raw = span;
                        }
                    } else if self.found.pkt_err.is_none() {
                        let name = if is_emitter { "emitter_id" } else { "agent_id" };
                        self.found.pkt_err = Some(format!("{name}: expected string"));
                    }
                } else if self.key_is(key, b"packet_id") {
                    match kind {
                        Kind::Str => self.found.pid_raw = Some((vpos + 1, end - 1)),
                        Kind::Int => self.found.pid_raw = Some((vpos, end)),
                        _ => {
                            if self.found.pkt_err.is_none() {
                                self.found.pkt_err =
                                    Some("packet_id: expected string or integer".into());
                            }
                        }
                    }
                }
            }
            let (next, closed) = self.after_value(pos, b'}')?;
            pos = next;
            if closed {
                return Ok(pos);
            }
        }
    }

    /// One message object per line; blank lines are skipped.
    fn ndjson(&mut self) -> Scan<()> {
        self.found = Found::default();
        let n = self.buf.len();
        let mut line = 0usize;
        let mut start = 0usize;
        loop {
            let nl = memchr::memchr(b'\n', &self.buf[start..]).map(|k| start + k);
            let end = nl.unwrap_or(n);
            self.lim = end;
            line += 1;
            let mut pos = self.ws(start);
            if pos < end {
                if self.buf[pos] == b'{' {
                    pos = self.message(pos, 1, Label::Line(line))?;
                } else {
                    pos = self.value(pos, 1)?.0;
                    self.found.msgs.push(NOT_A_MESSAGE);
                    if self.found.msg_err.is_none() {
                        self.found.msg_err = Some(format!("line {line}: expected object"));
                    }
                }
                let pos = self.ws(pos);
                if pos < end {
                    return Err(bad(pos, "unexpected data after the value on this line"));
                }
            }
            match nl {
                Some(k) => start = k + 1,
                None => break,
            }
        }
        self.lim = n;
        Ok(())
    }

    /// The syntax pass (step 2), collecting what steps 3 and 4 check. Returns `is_packet`.
    fn scan(&mut self, format: Format) -> Scan<bool> {
        if format == Format::Ndjson {
            self.ndjson()?;
            return Ok(false);
        }
        let n = self.buf.len();
        let pos = self.ws(0);
        if pos >= n {
            return Err(bad(
                pos,
                if n == 0 {
                    "empty body"
                } else {
                    "expected a JSON value, found only whitespace"
                },
            ));
        }
        let end = match self.buf[pos] {
            b'{' => {
                let end = self.packet(pos)?;
                let rest = self.ws(end);
                if rest < n {
                    if format == Format::Auto {
                        self.ndjson()?;
                        return Ok(false);
                    }
                    return Err(bad(rest, "unexpected data after the JSON value"));
                }
                return Ok(true);
            }
            b'[' => self.messages_array(pos, 1, "messages")?,
            _ => {
                let end = self.value(pos, 1)?.0;
                self.found.pkt_err =
                    Some("expected a packet object or an array of messages".into());
                end
            }
        };
        let rest = self.ws(end);
        if rest < n {
            return Err(bad(rest, "unexpected data after the JSON value"));
        }
        Ok(false)
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
            return Err(bad(start - 1, "lone low surrogate in string"));
        }
        if (0xD800..0xDC00).contains(&unit) {
            let paired = i + 6 <= end
                && buf[i] == b'\\'
                && buf[i + 1] == b'u'
                && (0xDC00..0xE000).contains(&hex(i + 2));
            if !paired {
                return Err(bad(start - 1, "high surrogate without a low one in string"));
            }
            i += 6;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------- routing

/// A validated body: message spans and the raw packet fields, ready to be routed.
#[derive(Debug)]
pub struct Validated<'a> {
    body: &'a [u8],
    msgs: Vec<Msg>,
    emitter_raw: Option<&'a [u8]>,
    packet_id_raw: Option<&'a [u8]>,
}

/// Checks steps 1 to 5 of the contract and returns the messages, or the verdict.
pub fn validate<'a>(body: &'a [u8], opts: &Options) -> Result<Validated<'a>, PacketError> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(PacketError::new(
            ErrorCode::BadUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        ));
    }
    let mut sc = Scanner::new(body, opts.max_depth);
    let is_packet = match sc.scan(opts.format) {
        Ok(p) => p,
        Err(e) if e.code == ErrorCode::TooDeep => {
            return Err(PacketError::new(
                ErrorCode::TooDeep,
                format!(
                    "nesting deeper than {} at byte {}",
                    opts.max_depth, e.offset
                ),
            ))
        }
        Err(e) => {
            return Err(PacketError::new(
                ErrorCode::BadJson,
                format!("invalid JSON at byte {}: {}", e.offset, e.what),
            ))
        }
    };
    let found = sc.found;
    if is_packet {
        if found.arrays == 0 {
            let detail = found
                .pkt_err
                .unwrap_or_else(|| "packet: missing \"messages\" (or \"log_messages\")".into());
            return Err(PacketError::new(ErrorCode::BadSchema, detail));
        }
        if found.arrays > 1 {
            return Err(PacketError::new(
                ErrorCode::BadSchema,
                "packet: give exactly one of \"messages\" and \"log_messages\"",
            ));
        }
    }
    if let Some(e) = found.pkt_err {
        return Err(PacketError::new(ErrorCode::BadSchema, e));
    }
    if let Some(e) = found.msg_err {
        return Err(PacketError::new(ErrorCode::BadSchema, e));
    }
    let count = found.msgs.len();
    if count == 0 {
        return Err(PacketError::new(
            ErrorCode::EmptyPacket,
            "the packet holds no messages",
        ));
    }
    if count as i64 > opts.max_messages {
        return Err(PacketError::new(
            ErrorCode::TooManyMessages,
            format!(
                "{count} messages, more than the limit of {}",
                opts.max_messages
            ),
        ));
    }
    let span = |s: Option<(usize, usize)>| s.map(|(a, b)| &body[a..b]);
    Ok(Validated {
        body,
        msgs: found.msgs,
        emitter_raw: span(found.emitter_raw).or(span(found.agent_raw)),
        packet_id_raw: span(found.pid_raw),
    })
}

impl<'a> Validated<'a> {
    pub fn count(&self) -> usize {
        self.msgs.len()
    }

    /// The raw text between the quotes of emitter_id (or agent_id).
    pub fn emitter_raw(&self) -> Option<&'a [u8]> {
        self.emitter_raw
    }

    /// The raw text of packet_id (between the quotes for a string).
    pub fn packet_id_raw(&self) -> Option<&'a [u8]> {
        self.packet_id_raw
    }

    /// The id prefix: `E/P/` when the packet has a packet_id, else the fallback.
    pub fn id_prefix(&self, fallback: &str) -> Vec<u8> {
        match self.packet_id_raw {
            Some(pid) => {
                let e = self.emitter_raw.unwrap_or(b"");
                let mut p = Vec::with_capacity(e.len() + pid.len() + 2);
                p.extend_from_slice(e);
                p.push(b'/');
                p.extend_from_slice(pid);
                p.push(b'/');
                p
            }
            None => fallback.as_bytes().to_vec(),
        }
    }

    /// The length `write_message` will append for message `i`.
    fn message_len(&self, i: usize, prefix_len: usize) -> usize {
        let m = self.msgs[i];
        let len = m.end - m.start;
        if m.has_id {
            len
        } else {
            // {"id":"<prefix><i>", + rest
            len + 7 + prefix_len + decimal_len(i) + usize::from(!self.is_empty_object(m))
        }
    }

    fn is_empty_object(&self, m: Msg) -> bool {
        self.body[m.start + 1..m.end - 1].iter().all(|&c| is_ws(c))
    }

    /// Appends message `i`'s text, with `"id":"<prefix><i>"` inserted when it has no id.
    pub fn write_message(&self, i: usize, prefix: &[u8], out: &mut Vec<u8>) {
        let m = self.msgs[i];
        if m.has_id {
            out.extend_from_slice(&self.body[m.start..m.end]);
            return;
        }
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(prefix);
        push_decimal(out, i);
        out.push(b'"');
        if !self.is_empty_object(m) {
            out.push(b',');
        }
        out.extend_from_slice(&self.body[m.start + 1..m.end]);
    }
}

fn decimal_len(mut i: usize) -> usize {
    let mut n = 1;
    while i >= 10 {
        i /= 10;
        n += 1;
    }
    n
}

fn push_decimal(out: &mut Vec<u8>, i: usize) {
    let mut buf = [0u8; 20];
    let mut k = buf.len();
    let mut v = i;
    loop {
        k -= 1;
        buf[k] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[k..]);
}

/// The messages routed to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Target name ("" when routing without a router).
    pub target: String,
    /// The messages' JSON texts joined by ",".
    pub bytes: Vec<u8>,
    pub count: usize,
}

/// The result of [`route_packet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedPacket {
    /// Raw text between the quotes of emitter_id (or agent_id); decode with [`decode_json_string`].
    pub emitter_raw: Option<Vec<u8>>,
    /// Raw text of packet_id (between the quotes for a string, the digits for an integer).
    pub packet_id_raw: Option<Vec<u8>>,
    pub count: usize,
    /// Batches in the order their targets were first picked.
    pub batches: Vec<Batch>,
}

/// True when `prefix` only holds ASCII letters, digits and `._:/-`.
pub fn valid_prefix(prefix: &str) -> bool {
    prefix
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"._:/-".contains(&c))
}

/// Validates `body`, assigns ids, and routes each message with one `router` pick (in order),
/// or puts everything under "" without a router. On any error nothing is routed and no pick
/// is drawn.
pub fn route_packet(
    body: &[u8],
    router: Option<&mut Router>,
    fallback_prefix: &str,
    opts: &Options,
) -> Result<RoutedPacket, RouteError> {
    if !valid_prefix(fallback_prefix) {
        return Err(RouteError::Argument(format!(
            "fallback_prefix may only hold ASCII letters, digits and '._:/-': {fallback_prefix:?}"
        )));
    }
    let v = validate(body, opts)?;
    let count = v.count();
    let prefix = v.id_prefix(fallback_prefix);
    let mut batches: Vec<Batch> = Vec::new();
    match router {
        None => {
            let mut size = count.saturating_sub(1);
            for i in 0..count {
                size += v.message_len(i, prefix.len());
            }
            let mut bytes = Vec::with_capacity(size);
            for i in 0..count {
                if i > 0 {
                    bytes.push(b',');
                }
                v.write_message(i, &prefix, &mut bytes);
            }
            batches.push(Batch {
                target: String::new(),
                bytes,
                count,
            });
        }
        Some(router) => {
            let picks = router.pick_many(count).map_err(RouteError::Router)?;
            // target index -> batch index, in order of first pick
            let mut slot: Vec<usize> = vec![usize::MAX; router.len()];
            let mut sizes: Vec<usize> = Vec::new();
            for (i, &t) in picks.iter().enumerate() {
                if slot[t] == usize::MAX {
                    slot[t] = batches.len();
                    batches.push(Batch {
                        target: router.name(t).to_owned(),
                        bytes: Vec::new(),
                        count: 0,
                    });
                    sizes.push(0);
                }
                let b = slot[t];
                sizes[b] += v.message_len(i, prefix.len()) + usize::from(batches[b].count > 0);
                batches[b].count += 1;
            }
            for (b, size) in batches.iter_mut().zip(sizes) {
                b.bytes.reserve_exact(size);
            }
            for (i, &t) in picks.iter().enumerate() {
                let out = &mut batches[slot[t]].bytes;
                if !out.is_empty() {
                    out.push(b',');
                }
                v.write_message(i, &prefix, out);
            }
        }
    }
    Ok(RoutedPacket {
        emitter_raw: v.emitter_raw().map(<[u8]>::to_vec),
        packet_id_raw: v.packet_id_raw().map(<[u8]>::to_vec),
        count,
        batches,
    })
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
                *b = if (r & 3) == 0 {
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

    #[test]
    fn strings_with_escapes_and_long_runs() {
        let body = br#"[{"message":"0123456789abcdef0123456789\"\\\/\b\f\n\r\t\u00e9 ok \ud800","x":"\u00e9"}]"#;
        let v = validate(body, &Options::default()).unwrap();
        assert_eq!(v.count(), 1);
        let raw = br#"[{"message":"0123456789abcdef0123456789 tab	inside"}]"#;
        let err = validate(raw, &Options::default()).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadJson);
        assert!(err.detail.contains("byte 43"), "{}", err.detail);
    }

    #[test]
    fn numbers_follow_rfc_8259() {
        let ok = |n: &str| {
            validate(
                format!(r#"[{{"message":"x","n":{n}}}]"#).as_bytes(),
                &Options::default(),
            )
            .is_ok()
        };
        for n in [
            "0",
            "-0",
            "1.5",
            "-1.5e+10",
            "1E400",
            "123456789012345678901234567890",
            "0.0e-0",
        ] {
            assert!(ok(n), "{n}");
        }
        for n in [
            "01", "1.", ".5", "+1", "1e", "-", "1e+", "NaN", "Infinity", "0x1",
        ] {
            assert!(!ok(n), "{n}");
        }
    }

    #[test]
    fn decimal_helpers() {
        for i in [0usize, 9, 10, 99, 100, 12345, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, i);
            assert_eq!(out, i.to_string().as_bytes());
            assert_eq!(decimal_len(i), out.len());
        }
    }
}
