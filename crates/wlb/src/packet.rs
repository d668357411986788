//! `route_packet`: validate a request body, give every message an id, and route each message,
//! in one pass over the raw bytes and without building a value per message.
//!
//! The syntax is checked by [`crate::json`]'s scanner; this module descends by hand through
//! the three levels that carry meaning (packet object, messages array, message object) and
//! lets the scanner skip every other value. It records message spans and the first schema
//! error of each step; syntax errors stop it at once. The scanner runs in strict mode, the
//! analyzer's own definition of a readable value, so nothing accepted here is refused there
//! for its values. The verdict order is the contract's (`python/logdist/_wlb.pyi`):
//! `bad_utf8`, `bad_json`/`too_deep`/`bad_value` (whichever comes first in the body),
//! `bad_schema` (packet fields, then messages), `empty_packet`, `too_many_messages`.

use crate::dedup::{number_value, IdValue};
use crate::json::{decode_json_string, is_ws, Decoded, JsonError, Key, Kind, Scan, Scanner};
use crate::keyed::KeyHasher;
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
    /// The format of a name (`"auto"`, `"json"` or `"ndjson"`).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::packet::Format;
    ///
    /// assert_eq!(Format::parse("ndjson"), Some(Format::Ndjson));
    /// assert_eq!(Format::parse("xml"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::Auto),
            "json" => Some(Self::Json),
            "ndjson" => Some(Self::Ndjson),
            _ => None,
        }
    }
}

/// The stable error codes (the distributor answers 400, or 413 for `too_many_messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadUtf8,
    BadJson,
    TooDeep,
    BadSchema,
    /// Valid JSON that the analyzer cannot read: a number that overflows a double, or an
    /// unpaired surrogate escape.
    BadValue,
    EmptyPacket,
    TooManyMessages,
}

impl ErrorCode {
    /// The code as the distributor answers it.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::packet::ErrorCode;
    ///
    /// assert_eq!(ErrorCode::TooManyMessages.as_str(), "too_many_messages");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadUtf8 => "bad_utf8",
            Self::BadJson => "bad_json",
            Self::TooDeep => "too_deep",
            Self::BadSchema => "bad_schema",
            Self::BadValue => "bad_value",
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
    /// The fallback prefix holds a character outside ASCII letters, digits and `._:/-`.
    InvalidPrefix(String),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Packet(e) => write!(f, "{e}"),
            Self::Router(e) => write!(f, "{e}"),
            Self::InvalidPrefix(p) => write!(
                f,
                "fallback_prefix may only hold ASCII letters, digits and '._:/-': {p:?}"
            ),
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
    /// Refuse what the analyzer refuses (`bad_value`). Only re-routing bytes that were already
    /// accepted turns it off: they are never refused, the analyzer has the last word.
    pub strict: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            format: Format::Auto,
            max_messages: 10_000,
            max_depth: 64,
            strict: true,
        }
    }
}

/// What a message is placed by.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RouteKey {
    /// A weighted random pick per message (the router's strategy).
    #[default]
    Random,
    /// The message's id: its `"id"` member, or the id `route_packet` gives it.
    MessageId,
    /// A message field, by its path of member names (`source`, `metadata.trace_id`).
    Field(Vec<Vec<u8>>),
}

impl RouteKey {
    /// The route key of a name: `"random"`, `"message_id"`, or a dotted field path whose
    /// segments are not empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::packet::RouteKey;
    ///
    /// assert_eq!(RouteKey::parse("message_id"), Some(RouteKey::MessageId));
    /// assert_eq!(
    ///     RouteKey::parse("metadata.trace_id"),
    ///     Some(RouteKey::Field(vec![b"metadata".to_vec(), b"trace_id".to_vec()]))
    /// );
    /// assert_eq!(RouteKey::parse("metadata..x"), None);
    /// ```
    pub fn parse(spec: &str) -> Option<Self> {
        match spec {
            "random" => Some(Self::Random),
            "message_id" => Some(Self::MessageId),
            _ if spec.split('.').any(str::is_empty) => None,
            _ => Some(Self::Field(
                spec.split('.').map(|s| s.as_bytes().to_vec()).collect(),
            )),
        }
    }

    /// The member path the scanner looks up in each message (empty for random).
    fn path(&self) -> Vec<Vec<u8>> {
        match self {
            Self::Random => Vec::new(),
            Self::MessageId => vec![b"id".to_vec()],
            Self::Field(path) => path.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------- scanner

/// Where a message's route key is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySpan {
    /// Not there, or not a string or a number.
    Missing,
    /// The key's bytes as they are: a string without escapes (between the quotes) or a number.
    Raw(usize, usize),
    /// A string with escapes (between the quotes): hashed decoded.
    Escaped(usize, usize),
}

/// One message: its span in the body, whether it has an "id" member, and its route key.
#[derive(Debug, Clone, Copy)]
struct Msg {
    start: usize,
    end: usize,
    has_id: bool,
    key: KeySpan,
}

/// A non-object element: counts for the index of the next message, never routed.
const NOT_A_MESSAGE: Msg = Msg {
    start: usize::MAX,
    end: usize::MAX,
    has_id: true,
    key: KeySpan::Missing,
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
            Self::Id => "string or integer in [-2^63, 2^64)",
            Self::Metadata => "object",
        }
    }
}

/// Where a message sits, for error details.
#[derive(Clone, Copy)]
enum Label {
    Element(&'static str, usize),
    Line(usize),
}

impl Label {
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
    /// How many `"messages"`/`"log_messages"` members the packet had.
    arrays: u32,
    emitter_raw: Option<(usize, usize)>,
    agent_raw: Option<(usize, usize)>,
    pid_raw: Option<(usize, usize)>,
}

/// The packet pass over a body: the shared scanner for the syntax (and, strict, the values),
/// plus what the schema steps check, collected on the way.
struct PacketScanner<'a> {
    sc: Scanner<'a>,
    found: Found,
    /// The message being scanned (None between messages): what a `bad_value` detail names.
    at: Option<Label>,
    strict: bool,
    /// The member path of the route key in a message (empty: none is looked up).
    path: Vec<Vec<u8>>,
}

impl<'a> PacketScanner<'a> {
    fn new(buf: &'a [u8], max_depth: i64, strict: bool, path: Vec<Vec<u8>>) -> Self {
        Self {
            path,
            sc: if strict {
                Scanner::new_strict(buf, max_depth)
            } else {
                Scanner::new(buf, max_depth)
            },
            found: Found::default(),
            at: None,
            strict,
        }
    }

    /// Whether `field` takes the value `buf[vpos..end]` of `kind`. Strict, an integer id must
    /// be one the analyzer keeps as an integer (orjson's range, [-2^63, 2^64)): beyond it, it
    /// reads as a double, and two different ids could read as the same one.
    fn accepts(&self, field: Field, kind: Kind, vpos: usize, end: usize) -> bool {
        field.accepts(kind)
            && !(self.strict
                && field == Field::Id
                && kind == Kind::Int
                && matches!(
                    number_value(&self.sc.buf()[vpos..end], true),
                    IdValue::Float(_)
                ))
    }

    fn field_of(&self, key: Key) -> Option<Field> {
        self.sc.key_name(key).and_then(|k| Field::from_name(&k))
    }

    /// A message object at `pos`: records its span, whether it has an id, and its first error.
    fn message(&mut self, mut pos: usize, depth: i64, label: Label) -> Scan<usize> {
        self.at = Some(label);
        self.sc.check_depth(pos, depth)?;
        let start = pos;
        pos += 1;
        let check = self.found.msg_err.is_none();
        let mut err: Option<Field> = None;
        let mut has_id = false;
        let mut has_message = false;
        let mut route_key = KeySpan::Missing;
        let p = self.sc.ws(pos);
        if self.sc.peek(p) == Some(b'}') {
            pos = p + 1;
        } else {
            loop {
                let (key, vpos) = self.sc.member_key(pos)?;
                let (end, kind) = if self.path.first().is_some_and(|k| self.sc.key_is(key, k)) {
                    // the last member of that name wins, as in a parsed object
                    let (end, kind, span) = self.key_value(vpos, depth + 1, 1)?;
                    route_key = span;
                    (end, kind)
                } else {
                    self.sc.value(vpos, depth + 1)?
                };
                pos = end;
                if let Some(field) = check.then(|| self.field_of(key)).flatten() {
                    has_id |= field == Field::Id;
                    has_message |= field == Field::Message;
                    if err.is_none() && !self.accepts(field, kind, vpos, end) {
                        err = Some(field);
                    }
                }
                let (next, closed) = self.sc.after_value(pos, b'}')?;
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
            key: route_key,
        });
        self.at = None;
        if check {
            self.found.msg_err = match err {
                Some(field) => Some(format!(
                    "{}: expected {}",
                    label.path(Some(field)),
                    field.expected()
                )),
                None if !has_message => Some(format!(
                    "{}: required string is missing",
                    label.path(Some(Field::Message))
                )),
                None => None,
            };
        }
        Ok(pos)
    }

    /// The value at `pos` (at `depth`) of the member named `path[level - 1]`: its end, its
    /// kind, and where the route key is, descending into objects along the rest of the path.
    /// It checks what [`Scanner::value`] checks, with the same primitives and details.
    fn key_value(&mut self, pos: usize, depth: i64, level: usize) -> Scan<(usize, Kind, KeySpan)> {
        if level == self.path.len() {
            let (end, kind) = self.sc.value(pos, depth)?;
            let span = match kind {
                Kind::Str if memchr::memchr(b'\\', &self.sc.buf()[pos + 1..end - 1]).is_some() => {
                    KeySpan::Escaped(pos + 1, end - 1)
                }
                Kind::Str => KeySpan::Raw(pos + 1, end - 1),
                Kind::Int | Kind::Num => KeySpan::Raw(pos, end),
                _ => KeySpan::Missing,
            };
            return Ok((end, kind, span));
        }
        if self.sc.peek(pos) != Some(b'{') {
            let (end, kind) = self.sc.value(pos, depth)?;
            return Ok((end, kind, KeySpan::Missing));
        }
        self.sc.check_depth(pos, depth)?;
        let mut span = KeySpan::Missing;
        let p = self.sc.ws(pos + 1);
        if self.sc.peek(p) == Some(b'}') {
            return Ok((p + 1, Kind::Obj, span));
        }
        let mut pos = pos + 1;
        loop {
            let (key, vpos) = self.sc.member_key(pos)?;
            let end = if self.sc.key_is(key, &self.path[level]) {
                let (end, _, s) = self.key_value(vpos, depth + 1, level + 1)?;
                span = s;
                end
            } else {
                self.sc.value(vpos, depth + 1)?.0
            };
            let (next, closed) = self.sc.after_value(end, b'}')?;
            pos = next;
            if closed {
                return Ok((pos, Kind::Obj, span));
            }
        }
    }

    /// A value that stands where a message should, but is no object: it counts for the index
    /// of the next message and is a schema error.
    fn not_a_message(&mut self, pos: usize, depth: i64, label: Label) -> Scan<usize> {
        self.at = Some(label);
        let end = self.sc.value(pos, depth)?.0;
        self.at = None;
        self.found.msgs.push(NOT_A_MESSAGE);
        if self.found.msg_err.is_none() {
            self.found.msg_err = Some(format!("{}: expected object", label.path(None)));
        }
        Ok(end)
    }

    /// An array of messages at `pos` (at `depth`); returns its end.
    fn messages_array(&mut self, mut pos: usize, depth: i64, name: &'static str) -> Scan<usize> {
        self.sc.check_depth(pos, depth)?;
        pos += 1;
        let p = self.sc.ws(pos);
        if self.sc.peek(p) == Some(b']') {
            return Ok(p + 1);
        }
        let mut i = self.found.msgs.len();
        loop {
            pos = self.sc.ws(pos);
            let label = Label::Element(name, i);
            pos = match self.sc.peek(pos) {
                None => return Err(JsonError::eof(pos)),
                Some(b'{') => self.message(pos, depth + 1, label)?,
                Some(_) => self.not_a_message(pos, depth + 1, label)?,
            };
            i += 1;
            let (next, closed) = self.sc.after_value(pos, b']')?;
            pos = next;
            if closed {
                return Ok(pos);
            }
        }
    }

    /// A packet object (depth 1) opening at `pos`; returns its end.
    fn packet(&mut self, mut pos: usize) -> Scan<usize> {
        self.sc.check_depth(pos, 1)?;
        pos += 1;
        let p = self.sc.ws(pos);
        if self.sc.peek(p) == Some(b'}') {
            return Ok(p + 1);
        }
        loop {
            let (key, vpos) = self.sc.member_key(pos)?;
            pos = self.packet_member(key, vpos)?;
            let (next, closed) = self.sc.after_value(pos, b'}')?;
            pos = next;
            if closed {
                return Ok(pos);
            }
        }
    }

    /// The value of the packet member `key` at `vpos`; returns its end.
    fn packet_member(&mut self, key: Key, vpos: usize) -> Scan<usize> {
        let array_name = if self.sc.key_is(key, b"messages") {
            Some("messages")
        } else if self.sc.key_is(key, b"log_messages") {
            Some("log_messages")
        } else {
            None
        };
        if let Some(name) = array_name {
            self.found.arrays += 1;
            if self.sc.peek(vpos) == Some(b'[') {
                return self.messages_array(vpos, 2, name);
            }
            let end = self.sc.value(vpos, 2)?.0;
            self.packet_error(|| format!("{name}: expected array"));
            return Ok(end);
        }
        let (end, kind) = self.sc.value(vpos, 2)?;
        let is_emitter = self.sc.key_is(key, b"emitter_id");
        if is_emitter || self.sc.key_is(key, b"agent_id") {
            if kind == Kind::Str {
                let span = Some((vpos + 1, end - 1));
                if is_emitter {
                    self.found.emitter_raw = span;
                } else {
                    self.found.agent_raw = span;
                }
            } else {
                let name = if is_emitter { "emitter_id" } else { "agent_id" };
                self.packet_error(|| format!("{name}: expected string"));
            }
        } else if self.sc.key_is(key, b"packet_id") {
            match kind {
                Kind::Str => self.found.pid_raw = Some((vpos + 1, end - 1)),
                Kind::Int => self.found.pid_raw = Some((vpos, end)),
                _ => self.packet_error(|| "packet_id: expected string or integer".into()),
            }
        }
        Ok(end)
    }

    /// Records the packet-level schema error, unless there is one already.
    fn packet_error(&mut self, detail: impl FnOnce() -> String) {
        if self.found.pkt_err.is_none() {
            self.found.pkt_err = Some(detail());
        }
    }

    /// One message object per line; blank lines are skipped.
    fn ndjson(&mut self) -> Scan<()> {
        self.found = Found::default();
        let buf = self.sc.buf();
        let n = buf.len();
        let mut line = 0usize;
        let mut start = 0usize;
        loop {
            let nl = memchr::memchr(b'\n', &buf[start..]).map(|k| start + k);
            let end = nl.unwrap_or(n);
            self.sc.set_lim(end);
            line += 1;
            let pos = self.sc.ws(start);
            if pos < end {
                let pos = if buf[pos] == b'{' {
                    self.message(pos, 1, Label::Line(line))?
                } else {
                    self.not_a_message(pos, 1, Label::Line(line))?
                };
                let pos = self.sc.ws(pos);
                if pos < end {
                    return Err(JsonError::syntax(
                        pos,
                        "unexpected data after the value on this line",
                    ));
                }
            }
            match nl {
                Some(k) => start = k + 1,
                None => break,
            }
        }
        self.sc.set_lim(n);
        Ok(())
    }

    /// The syntax pass (step 2), collecting what steps 3 and 4 check. Returns `is_packet`.
    fn scan(&mut self, format: Format) -> Scan<bool> {
        if format == Format::Ndjson {
            self.ndjson()?;
            return Ok(false);
        }
        let pos = self.sc.document_start(0)?;
        let end = match self.sc.buf()[pos] {
            b'{' => {
                let end = self.packet(pos)?;
                if format == Format::Auto && self.sc.ws(end) < self.sc.lim() {
                    self.ndjson()?;
                    return Ok(false);
                }
                self.sc.document_end(end)?;
                return Ok(true);
            }
            b'[' => self.messages_array(pos, 1, "messages")?,
            _ => {
                let end = self.sc.value(pos, 1)?.0;
                self.found.pkt_err =
                    Some("expected a packet object or an array of messages".into());
                end
            }
        };
        self.sc.document_end(end)?;
        Ok(false)
    }
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
///
/// # Errors
///
/// [`PacketError`] with the first verdict in the contract's order: `bad_utf8`, `bad_json`,
/// `too_deep` or `bad_value`, `bad_schema`, `empty_packet`, `too_many_messages`.
///
/// # Examples
///
/// ```
/// use wlb::packet::{validate, ErrorCode, Options};
///
/// let v = validate(b"{\"message\":\"a\"}\n{\"message\":\"b\"}", &Options::default())?;
/// assert_eq!(v.count(), 2); // NDJSON
/// let e = validate(br#"[{"level":"INFO"}]"#, &Options::default()).unwrap_err();
/// assert_eq!(e.code, ErrorCode::BadSchema);
/// assert_eq!(e.detail, "messages[0].message: required string is missing");
/// # Ok::<(), wlb::packet::PacketError>(())
/// ```
pub fn validate<'a>(body: &'a [u8], opts: &Options) -> Result<Validated<'a>, PacketError> {
    validate_keyed(body, opts, &RouteKey::Random)
}

/// [`validate`], also noting where each message's route key is.
///
/// # Errors
///
/// Those of [`validate`] (the key changes no verdict and no detail).
pub fn validate_keyed<'a>(
    body: &'a [u8],
    opts: &Options,
    route_key: &RouteKey,
) -> Result<Validated<'a>, PacketError> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(PacketError::new(
            ErrorCode::BadUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        ));
    }
    let mut sc = PacketScanner::new(body, opts.max_depth, opts.strict, route_key.path());
    let is_packet = match sc.scan(opts.format) {
        Ok(p) => p,
        Err(JsonError::TooDeep { offset }) => {
            return Err(PacketError::new(
                ErrorCode::TooDeep,
                format!("nesting deeper than {} at byte {offset}", opts.max_depth),
            ))
        }
        Err(JsonError::Unsupported { offset, what }) => {
            let at = sc.at.map_or_else(|| "packet".to_owned(), |l| l.path(None));
            return Err(PacketError::new(
                ErrorCode::BadValue,
                format!("{at}: {what} (byte {offset})"),
            ));
        }
        Err(e) => return Err(PacketError::new(ErrorCode::BadJson, e.to_string())),
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
    /// The number of messages.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::packet::{validate, Options};
    ///
    /// let body = br#"{"emitter_id":"e1","packet_id":7,"messages":[{"message":"hi"},{"id":"x","message":"yo"}]}"#;
    /// let v = validate(body, &Options::default())?;
    /// assert_eq!(v.count(), 2);
    /// # Ok::<(), wlb::packet::PacketError>(())
    /// ```
    pub fn count(&self) -> usize {
        self.msgs.len()
    }

    /// The raw text between the quotes of `emitter_id` (or `agent_id`).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::packet::{validate, Options};
    ///
    /// let body = br#"{"emitter_id":"e1","packet_id":7,"messages":[{"message":"hi"},{"id":"x","message":"yo"}]}"#;
    /// let v = validate(body, &Options::default())?;
    /// assert_eq!(v.emitter_raw(), Some(&b"e1"[..]));
    /// # Ok::<(), wlb::packet::PacketError>(())
    /// ```
    pub fn emitter_raw(&self) -> Option<&'a [u8]> {
        self.emitter_raw
    }

    /// The raw text of `packet_id` (between the quotes for a string).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::packet::{validate, Options};
    ///
    /// let body = br#"{"emitter_id":"e1","packet_id":7,"messages":[{"message":"hi"},{"id":"x","message":"yo"}]}"#;
    /// let v = validate(body, &Options::default())?;
    /// assert_eq!(v.packet_id_raw(), Some(&b"7"[..]));
    /// # Ok::<(), wlb::packet::PacketError>(())
    /// ```
    pub fn packet_id_raw(&self) -> Option<&'a [u8]> {
        self.packet_id_raw
    }

    /// The id prefix: `E/P/` when the packet has a `packet_id`, else the fallback.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::packet::{validate, Options};
    ///
    /// let body = br#"{"emitter_id":"e1","packet_id":7,"messages":[{"message":"hi"},{"id":"x","message":"yo"}]}"#;
    /// let v = validate(body, &Options::default())?;
    /// assert_eq!(v.id_prefix("fb/"), b"e1/7/");
    /// # Ok::<(), wlb::packet::PacketError>(())
    /// ```
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

    /// The route-key hash of message `i` ([`crate::keyed::key_hash`] of the key's text: a
    /// string decoded, a number as written; with [`RouteKey::MessageId`], the id it is given
    /// when it has none), or None when its key is missing.
    ///
    /// # Panics
    ///
    /// When `i` is not below [`Validated::count`].
    pub fn key_hash(&self, i: usize, prefix: &[u8], route_key: &RouteKey) -> Option<u64> {
        let msg = self.msgs[i];
        let mut hasher = KeyHasher::new();
        match msg.key {
            KeySpan::Raw(start, end) => hasher.write(&self.body[start..end]),
            KeySpan::Escaped(start, end) => match decode_json_string(&self.body[start..end]) {
                Decoded::Utf8(text) => hasher.write(text.as_bytes()),
                Decoded::Utf16(units) => {
                    for unit in char::decode_utf16(units) {
                        let code =
                            unit.map_or_else(|e| u32::from(e.unpaired_surrogate()), u32::from);
                        hasher.write_code_point(code);
                    }
                }
            },
            KeySpan::Missing if *route_key == RouteKey::MessageId && !msg.has_id => {
                hasher.write(prefix);
                let mut digits = Vec::with_capacity(20);
                push_decimal(&mut digits, i);
                hasher.write(&digits);
            }
            KeySpan::Missing => return None,
        }
        Some(hasher.finish())
    }

    fn is_empty_object(&self, m: Msg) -> bool {
        self.body[m.start + 1..m.end - 1].iter().all(|&c| is_ws(c))
    }

    /// Appends message `i`'s text, with `"id":"<prefix><i>"` inserted when it has no id.
    ///
    /// # Panics
    ///
    /// When `i` is not below [`Validated::count`].
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::packet::{validate, Options};
    ///
    /// let body = br#"{"emitter_id":"e1","packet_id":7,"messages":[{"message":"hi"},{"id":"x","message":"yo"}]}"#;
    /// let v = validate(body, &Options::default())?;
    /// let mut out = Vec::new();
    /// v.write_message(0, b"e1/7/", &mut out);
    /// assert_eq!(out, br#"{"id":"e1/7/0","message":"hi"}"#);
    /// # Ok::<(), wlb::packet::PacketError>(())
    /// ```
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

impl Validated<'_> {
    /// One target index per message, and how many keyed messages had no key.
    fn picks(
        &self,
        prefix: &[u8],
        router: &mut Router,
        keyed: &Keyed,
    ) -> Result<(Vec<usize>, usize), RouterError> {
        let count = self.count();
        let excluded: Vec<usize> = keyed
            .exclude
            .iter()
            .filter_map(|n| router.index_of(n))
            .collect();
        let is_excluded = |i: usize| excluded.contains(&i);
        if keyed.route_key == RouteKey::Random && excluded.is_empty() {
            return Ok((router.pick_many(count)?, 0));
        }
        let mut unkeyed = 0;
        let mut picks = Vec::with_capacity(count);
        for i in 0..count {
            let pick = match self.key_hash(i, prefix, &keyed.route_key) {
                Some(h) if keyed.route_key != RouteKey::Random => {
                    router.pick_key_excluding(h, is_excluded)?
                }
                _ => {
                    unkeyed += usize::from(keyed.route_key != RouteKey::Random);
                    router.pick_index_excluding(is_excluded)?
                }
            };
            picks.push(pick);
        }
        Ok((picks, unkeyed))
    }

    /// Every message in one batch for the target "" (routing without a router).
    fn one_batch(&self, prefix: &[u8]) -> Batch {
        let count = self.count();
        let mut size = count.saturating_sub(1);
        for i in 0..count {
            size += self.message_len(i, prefix.len());
        }
        let mut bytes = Vec::with_capacity(size);
        for i in 0..count {
            if i > 0 {
                bytes.push(b',');
            }
            self.write_message(i, prefix, &mut bytes);
        }
        Batch {
            target: String::new(),
            bytes,
            count,
        }
    }

    /// Message `i` in the batch of target `picks[i]`; batches in order of first pick, each
    /// allocated once at its final size.
    fn batches_by_pick(&self, prefix: &[u8], picks: &[usize], router: &Router) -> Vec<Batch> {
        let mut batches: Vec<Batch> = Vec::new();
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
            sizes[b] += self.message_len(i, prefix.len()) + usize::from(batches[b].count > 0);
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
            self.write_message(i, prefix, out);
        }
        batches
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
    /// Raw text between the quotes of `emitter_id` (or `agent_id`); decode with
    /// [`crate::json::decode_json_string`].
    pub emitter_raw: Option<Vec<u8>>,
    /// Raw text of `packet_id` (between the quotes for a string, the digits for an integer).
    pub packet_id_raw: Option<Vec<u8>>,
    pub count: usize,
    /// Batches in the order their targets were first picked.
    pub batches: Vec<Batch>,
    /// Messages routed by key whose key was missing (they were placed at random).
    pub unkeyed: usize,
}

/// True when `prefix` only holds ASCII letters, digits and `._:/-`.
///
/// # Examples
///
/// ```
/// use wlb::packet::valid_prefix;
///
/// assert!(valid_prefix("req-1:2/"));
/// assert!(!valid_prefix("a b"));
/// ```
pub fn valid_prefix(prefix: &str) -> bool {
    prefix
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"._:/-".contains(&c))
}

/// Validates `body`, assigns ids, and routes each message with one `router` pick (in order),
/// or puts everything under "" without a router. On any error nothing is routed and no pick
/// is drawn.
///
/// # Performance
///
/// One pass over the body, eight bytes at a time inside strings; no value per message; each
/// batch is allocated once, at its final size.
///
/// # Errors
///
/// [`RouteError::InvalidPrefix`] for a bad `fallback_prefix`, [`RouteError::Packet`] for a
/// body [`validate`] rejects, [`RouteError::Router`] when the router cannot pick.
///
/// # Examples
///
/// ```
/// use wlb::packet::{route_packet, Options};
/// use wlb::router::{Router, Strategy};
///
/// let mut router = Router::new(Strategy::Swrr, 0);
/// router.set_target("a1", 1.0)?;
/// router.set_target("a2", 1.0)?;
/// let body = br#"[{"message":"x"},{"message":"y"},{"message":"z"}]"#;
/// let routed = route_packet(body, Some(&mut router), "req-9/", &Options::default())?;
/// assert_eq!(routed.count, 3);
/// assert_eq!(routed.batches[0].target, "a1");
/// assert_eq!(routed.batches[0].bytes, br#"{"id":"req-9/0","message":"x"},{"id":"req-9/2","message":"z"}"#);
/// assert_eq!(routed.batches[1].count, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn route_packet(
    body: &[u8],
    router: Option<&mut Router>,
    fallback_prefix: &str,
    opts: &Options,
) -> Result<RoutedPacket, RouteError> {
    route_packet_tagged(body, router, fallback_prefix, "", opts)
}

/// [`route_packet`], with `id_tag` after the `E/P/` prefix of the ids it gives to messages
/// without one, when the packet has a `packet_id` (a packet id reused with other content then
/// gets ids of its own, not those of the earlier packet). Without a `packet_id` the tag is not
/// used: the fallback prefix is unique already.
///
/// # Errors
///
/// As [`route_packet`]; [`RouteError::InvalidPrefix`] also for an `id_tag` with a character
/// outside ASCII letters, digits and `._:/-`.
///
/// # Examples
///
/// ```
/// use wlb::packet::{route_packet_tagged, Options};
///
/// let body = br#"{"emitter_id":"e","packet_id":"p-1","messages":[{"message":"x"}]}"#;
/// let routed = route_packet_tagged(body, None, "req-9/", "0af3/", &Options::default())?;
/// assert_eq!(routed.batches[0].bytes, br#"{"id":"e/p-1/0af3/0","message":"x"}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn route_packet_tagged(
    body: &[u8],
    router: Option<&mut Router>,
    fallback_prefix: &str,
    id_tag: &str,
    opts: &Options,
) -> Result<RoutedPacket, RouteError> {
    route_packet_keyed(
        body,
        router,
        fallback_prefix,
        id_tag,
        &Keyed::default(),
        opts,
    )
}

/// How [`route_packet_keyed`] places messages.
#[derive(Debug, Clone, Default)]
pub struct Keyed {
    /// What a message is placed by.
    pub route_key: RouteKey,
    /// Targets no message goes to (those a re-routed batch has tried already). A keyed message
    /// then goes to the next target in its rendezvous order.
    pub exclude: Vec<String>,
}

/// [`route_packet_tagged`], placing each message by its route key: a keyed message goes to the
/// candidate with the highest rendezvous score for it ([`Router::pick_key_excluding`], no
/// random draw), one whose key is missing gets a random pick (in message order, counted in
/// [`RoutedPacket::unkeyed`]).
///
/// # Errors
///
/// As [`route_packet_tagged`].
///
/// # Examples
///
/// ```
/// use wlb::packet::{route_packet_keyed, Keyed, Options, RouteKey};
/// use wlb::router::{Router, Strategy};
///
/// let mut router = Router::new(Strategy::Alias, 0);
/// router.set_target("a1", 1.0)?;
/// router.set_target("a2", 1.0)?;
/// let keyed = Keyed { route_key: RouteKey::parse("source").unwrap(), exclude: vec![] };
/// let body = br#"[{"message":"x","source":"db"},{"message":"y","source":"db"},{"message":"z"}]"#;
/// let routed = route_packet_keyed(body, Some(&mut router), "r/", "", &keyed, &Options::default())?;
/// assert_eq!(routed.unkeyed, 1);
/// // both "db" messages are in one batch
/// assert!(routed.batches.iter().any(|b| b.bytes.starts_with(br#"{"id":"r/0","message":"x","source":"db"},{"id":"r/1""#)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn route_packet_keyed(
    body: &[u8],
    router: Option<&mut Router>,
    fallback_prefix: &str,
    id_tag: &str,
    keyed: &Keyed,
    opts: &Options,
) -> Result<RoutedPacket, RouteError> {
    if !valid_prefix(fallback_prefix) {
        return Err(RouteError::InvalidPrefix(fallback_prefix.to_owned()));
    }
    if !valid_prefix(id_tag) {
        return Err(RouteError::InvalidPrefix(id_tag.to_owned()));
    }
    let v = validate_keyed(body, opts, &keyed.route_key)?;
    let count = v.count();
    let mut prefix = v.id_prefix(fallback_prefix);
    if v.packet_id_raw().is_some() {
        prefix.extend_from_slice(id_tag.as_bytes());
    }
    let mut unkeyed = 0;
    let batches = match router {
        None => vec![v.one_batch(&prefix)],
        Some(router) => {
            let picks;
            (picks, unkeyed) = v
                .picks(&prefix, router, keyed)
                .map_err(RouteError::Router)?;
            v.batches_by_pick(&prefix, &picks, router)
        }
    };
    Ok(RoutedPacket {
        emitter_raw: v.emitter_raw().map(<[u8]>::to_vec),
        packet_id_raw: v.packet_id_raw().map(<[u8]>::to_vec),
        count,
        batches,
        unkeyed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_with_escapes_and_long_runs() {
        let body = br#"[{"message":"0123456789abcdef0123456789\"\\\/\b\f\n\r\t\u00e9 ok \ud800","x":"\u00e9"}]"#;
        let lenient = Options {
            strict: false,
            ..Options::default()
        };
        assert_eq!(validate(body, &lenient).unwrap().count(), 1);
        let err = validate(body, &Options::default()).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadValue);
        assert_eq!(
            err.detail,
            "messages[0]: high surrogate without a low one in string (byte 12)"
        );
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
            "1.7976931348623157e308",
            "1E-400",
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
        // Valid JSON, but no double holds it: the analyzer refuses it, so ingest does too.
        let big = "9".repeat(400);
        for n in ["1E400", "-1e999", "1.8e308", big.as_str()] {
            let body = format!(r#"[{{"message":"x"}},{{"message":"x","n":{n}}}]"#);
            let err = validate(body.as_bytes(), &Options::default()).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadValue, "{n}");
            assert_eq!(
                err.detail,
                "messages[1]: number is infinity when parsed as a double (byte 36)"
            );
        }
    }

    #[test]
    fn integer_ids_stay_in_the_analyzers_integer_range() {
        // Found by the property tests: 2^64 + 1 and 2^64 + 2 read as the same double in the
        // analyzer, which then counted the second message as a duplicate of the first.
        let body = |id: &str| format!(r#"[{{"message":"x","id":{id}}}]"#);
        for id in ["0", "-0", "-9223372036854775808", "18446744073709551615"] {
            assert!(
                validate(body(id).as_bytes(), &Options::default()).is_ok(),
                "{id}"
            );
        }
        for id in [
            "18446744073709551616",
            "-9223372036854775809",
            &"9".repeat(30),
        ] {
            let err = validate(body(id).as_bytes(), &Options::default()).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadSchema, "{id}");
            assert_eq!(
                err.detail,
                "messages[0].id: expected string or integer in [-2^63, 2^64)"
            );
            let lenient = Options {
                strict: false,
                ..Options::default()
            };
            assert!(validate(body(id).as_bytes(), &lenient).is_ok(), "{id}");
        }
    }

    #[test]
    fn route_keys_are_found_where_the_path_says() {
        use crate::keyed::key_hash;
        let body = br#"[{"message":"a","metadata":{"t":{"u":"k1"},"x":[1]}},
            {"metadata":{"t":{"u":7}},"message":"b"},
            {"message":"c","metadata":{"t":{"u":"k\u0031"}}},
            {"message":"d","metadata":{"t":"flat"}},
            {"message":"e","metadata":{"t":{"u":null}}},
            {"message":"f","metadata":{"t":{"u":"no"},"t":{"u":"k2"}}}]"#;
        let key = RouteKey::parse("metadata.t.u").unwrap();
        let v = validate_keyed(body, &Options::default(), &key).unwrap();
        let hashes: Vec<Option<u64>> = (0..v.count()).map(|i| v.key_hash(i, b"p/", &key)).collect();
        assert_eq!(
            hashes,
            [
                Some(key_hash(b"k1")),
                Some(key_hash(b"7")),
                Some(key_hash(b"k1")),
                None,
                None,
                Some(key_hash(b"k2")),
            ]
        );
        // message_id: the id member, or the id the message is given
        let body = br#"[{"id":"x","message":"a"},{"message":"b"}]"#;
        let v = validate_keyed(body, &Options::default(), &RouteKey::MessageId).unwrap();
        assert_eq!(
            v.key_hash(0, b"p/", &RouteKey::MessageId),
            Some(key_hash(b"x"))
        );
        assert_eq!(
            v.key_hash(1, b"p/", &RouteKey::MessageId),
            Some(key_hash(b"p/1"))
        );
        // the key changes no verdict
        let bad = br#"[{"message":"a","metadata":{"t":{"u":"k1",}}}]"#;
        assert_eq!(
            validate_keyed(bad, &Options::default(), &key).unwrap_err(),
            validate(bad, &Options::default()).unwrap_err()
        );
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
