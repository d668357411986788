//! OTLP logs: a protobuf `ExportLogsServiceRequest` decoded and converted to logdist messages.
//!
//! The output is byte for byte what the Python twin (`logdist/_py/otlp.py`: the
//! `opentelemetry-proto` classes, then orjson) produces: the same messages in the same key
//! order, the same float, string and timestamp text, the same records rejected with the same
//! reason. The decoder follows the wire format as upb (the protobuf runtime behind the Python
//! classes) reads it, so both refuse the same bodies:
//!
//! * varints of at most 10 bytes, tags and lengths of at most 5, a tag above `u32::MAX`, field
//!   number 0, wire types 6 and 7, an unmatched end-group, and a truncated field are malformed;
//! * a known field with another wire type than its own is an unknown field, skipped;
//! * unknown fields are skipped without looking inside (groups are walked to their end);
//! * a known `string` field must be UTF-8;
//! * sub-messages and groups nest at most `MAX_MESSAGE_DEPTH` levels below the request;
//! * a singular message field that appears twice is merged (as protobuf concatenation does):
//!   its repeated fields add up, its scalars and `oneof` take the last value.
//!
//! Two passes: `validate` walks the whole body (and counts the log records), then the
//! conversion reads it again, trusting its structure.
//!
//! # Performance
//! No allocation per record beyond the output; the resource and scope parts of a message are
//! rendered once per `ResourceLogs` / `ScopeLogs`.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;

/// An `AnyValue` (body or attribute) nested deeper than this makes its record invalid.
pub const MAX_VALUE_DEPTH: u32 = 32;
/// Sub-messages (and groups) nest at most this deep below the request (upb's default limit).
pub const MAX_MESSAGE_DEPTH: u32 = 100;

/// Why a body is not converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtlpError {
    /// Not a protobuf `ExportLogsServiceRequest`.
    Malformed {
        /// where the decoder stopped
        offset: usize,
        /// what it found there
        reason: &'static str,
    },
    /// More log records than the bound (counted before any conversion).
    TooManyRecords {
        /// log records in the request
        records: usize,
        /// the bound
        max: usize,
    },
}

impl OtlpError {
    /// The stable error code: `bad_protobuf` or `too_many_messages`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "bad_protobuf",
            Self::TooManyRecords { .. } => "too_many_messages",
        }
    }
}

impl fmt::Display for OtlpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { offset, reason } => write!(
                f,
                "not an ExportLogsServiceRequest: {reason} at byte {offset}"
            ),
            Self::TooManyRecords { records, max } => write!(
                f,
                "{records} log records, the bound is {max} (max_messages_per_packet): export smaller batches"
            ),
        }
    }
}

impl std::error::Error for OtlpError {}

/// A converted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// The messages of the valid records, as a JSON array (`[]` when none).
    pub messages: Vec<u8>,
    /// How many records are in `messages`.
    pub accepted: usize,
    /// How many records were invalid.
    pub rejected: usize,
    /// The reason of the first invalid record ("" when none).
    pub error_message: String,
}

/// Decode an `ExportLogsServiceRequest` and convert its log records to logdist messages.
///
/// # Errors
/// `Malformed` for a body that is not a request, `TooManyRecords` for more than
/// `max_records` log records. An invalid record is no error: it is counted in `rejected`.
///
/// # Examples
/// ```
/// // one ResourceLogs, one ScopeLogs, one LogRecord with a string body "hi"
/// let body = b"\x0a\x0c\x12\x0a\x12\x08\x2a\x04\x0a\x02hi\x10\x09";
/// let c = wlb::otlp::logs_to_messages(body, 10).unwrap();
/// assert_eq!(c.accepted, 1);
/// assert!(c.messages.starts_with(br#"[{"message":"hi","level":"INFO","#));
/// ```
pub fn logs_to_messages(body: &[u8], max_records: usize) -> Result<Converted, OtlpError> {
    let mut records = 0;
    validate(body, 0, Ty::Request, 0, &mut records)?;
    if records > max_records {
        return Err(OtlpError::TooManyRecords {
            records,
            max: max_records,
        });
    }
    let mut conv = Conversion {
        out: Vec::with_capacity(body.len() * 2 + 2),
        accepted: 0,
        rejected: 0,
        first: String::new(),
    };
    conv.out.push(b'[');
    conv.request(body)?;
    conv.out.push(b']');
    Ok(Converted {
        messages: conv.out,
        accepted: conv.accepted,
        rejected: conv.rejected,
        error_message: conv.first,
    })
}

// --- the wire format -------------------------------------------------------------------------

const VARINT: u8 = 0;
const I64: u8 = 1;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
const I32: u8 = 5;

/// A field's value (groups are skipped by the reader).
#[derive(Clone, Copy)]
enum Val<'a> {
    Varint(u64),
    I64(u64),
    I32(u32),
    Len(&'a [u8]),
}

/// A bounds-checked reader over one message's bytes; `base` is their offset in the body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn err(&self, reason: &'static str) -> OtlpError {
        OtlpError::Malformed {
            offset: self.base + self.pos,
            reason,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// A varint of at most `max` bytes (the bits past 64 dropped, as upb does).
    fn varint(&mut self, max: usize) -> Result<u64, OtlpError> {
        let mut v: u64 = 0;
        for i in 0..max {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            if i < 10 {
                v |= u64::from(b & 0x7f).checked_shl(7 * i as u32).unwrap_or(0);
            }
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }

    /// The next tag: (field number, wire type). Field 0 and wire types 6, 7 are malformed.
    fn tag(&mut self) -> Result<(u32, u8), OtlpError> {
        let start = self.pos;
        let t = self.varint(5)?;
        let Ok(t) = u32::try_from(t) else {
            self.pos = start;
            return Err(self.err("tag out of range"));
        };
        let (field, wt) = (t >> 3, (t & 7) as u8);
        if field == 0 || wt > I32 {
            self.pos = start;
            return Err(self.err("invalid tag"));
        }
        Ok((field, wt))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], OtlpError> {
        if self.buf.len() - self.pos < n {
            return Err(self.err("truncated field"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The value of a field of wire type `wt` (not a group).
    fn value(&mut self, wt: u8) -> Result<Val<'a>, OtlpError> {
        Ok(match wt {
            VARINT => Val::Varint(self.varint(10)?),
            I64 => Val::I64(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or([0; 8]),
            )),
            I32 => Val::I32(u32::from_le_bytes(
                self.take(4)?.try_into().unwrap_or([0; 4]),
            )),
            _ => {
                let n = self.varint(5)?;
                let n = usize::try_from(n).map_err(|_| self.err("truncated field"))?;
                Val::Len(self.take(n)?)
            }
        })
    }

    /// Skip a group whose start tag (field `field`) was just read, nested `depth` deep.
    fn skip_group(&mut self, field: u32, depth: u32) -> Result<(), OtlpError> {
        if depth > MAX_MESSAGE_DEPTH {
            return Err(self.err("nested too deep"));
        }
        loop {
            if self.at_end() {
                return Err(self.err("unterminated group"));
            }
            let (f, wt) = self.tag()?;
            match wt {
                EGROUP if f == field => return Ok(()),
                EGROUP => return Err(self.err("mismatched end group")),
                SGROUP => self.skip_group(f, depth + 1)?,
                _ => {
                    self.value(wt)?;
                }
            }
        }
    }

    /// The next field (groups skipped), or None at the end of the message.
    fn next_field(&mut self, depth: u32) -> Result<Option<(u32, Val<'a>, usize)>, OtlpError> {
        loop {
            if self.at_end() {
                return Ok(None);
            }
            let (field, wt) = self.tag()?;
            match wt {
                SGROUP => self.skip_group(field, depth + 1)?,
                EGROUP => return Err(self.err("end group outside a group")),
                _ => {
                    let v = self.value(wt)?;
                    let at = match v {
                        Val::Len(s) => self.base + self.pos - s.len(),
                        _ => 0,
                    };
                    return Ok(Some((field, v, at)));
                }
            }
        }
    }
}

/// The message types of the schema.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    Request,
    ResourceLogs,
    Resource,
    EntityRef,
    ScopeLogs,
    Scope,
    LogRecord,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
}

/// What a known length-delimited field holds.
enum Known {
    Str,
    Msg(Ty),
}

fn known(ty: Ty, field: u32) -> Option<Known> {
    use Known::{Msg, Str};
    Some(match (ty, field) {
        (Ty::Request, 1) => Msg(Ty::ResourceLogs),
        (Ty::ResourceLogs, 1) => Msg(Ty::Resource),
        (Ty::ResourceLogs, 2) => Msg(Ty::ScopeLogs),
        (Ty::Resource | Ty::KvList, 1) | (Ty::Scope, 3) | (Ty::LogRecord, 6) => Msg(Ty::KeyValue),
        (Ty::Resource, 3) => Msg(Ty::EntityRef),
        (Ty::ScopeLogs, 1) => Msg(Ty::Scope),
        (Ty::ScopeLogs, 2) => Msg(Ty::LogRecord),
        (Ty::KeyValue, 2) | (Ty::ArrayValue, 1) | (Ty::LogRecord, 5) => Msg(Ty::AnyValue),
        (Ty::AnyValue, 5) => Msg(Ty::ArrayValue),
        (Ty::AnyValue, 6) => Msg(Ty::KvList),
        (Ty::ResourceLogs | Ty::ScopeLogs, 3)
        | (Ty::EntityRef, 1..=4)
        | (Ty::Scope, 1 | 2)
        | (Ty::LogRecord, 3 | 12)
        | (Ty::KeyValue | Ty::AnyValue, 1) => Str,
        _ => return None,
    })
}

/// Walk a message of type `ty` nested `depth` deep: wire format, UTF-8 of strings, depth.
fn validate(
    buf: &[u8],
    base: usize,
    ty: Ty,
    depth: u32,
    records: &mut usize,
) -> Result<(), OtlpError> {
    let mut r = Reader::new(buf, base);
    while let Some((field, v, at)) = r.next_field(depth)? {
        let Val::Len(s) = v else { continue };
        match known(ty, field) {
            Some(Known::Str) if std::str::from_utf8(s).is_err() => {
                return Err(OtlpError::Malformed {
                    offset: at,
                    reason: "a string field is not UTF-8",
                });
            }
            Some(Known::Msg(sub)) => {
                if depth + 1 > MAX_MESSAGE_DEPTH {
                    return Err(OtlpError::Malformed {
                        offset: at,
                        reason: "nested too deep",
                    });
                }
                if sub == Ty::LogRecord {
                    *records += 1;
                }
                validate(s, at, sub, depth + 1, records)?;
            }
            Some(Known::Str) | None => {}
        }
    }
    Ok(())
}

/// The occurrences of a singular message field: parsed in turn, they are the merged message.
#[derive(Clone, Default)]
struct Parts<'a> {
    first: Option<&'a [u8]>,
    rest: Vec<&'a [u8]>,
}

impl<'a> Parts<'a> {
    fn one(s: &'a [u8]) -> Self {
        Self {
            first: Some(s),
            rest: Vec::new(),
        }
    }

    fn push(&mut self, s: &'a [u8]) {
        if self.first.is_none() {
            self.first = Some(s);
        } else {
            self.rest.push(s);
        }
    }

    fn is_present(&self) -> bool {
        self.first.is_some()
    }

    /// Every field of the merged message, in order (the body was validated already).
    fn each(&self, mut f: impl FnMut(u32, Val<'a>)) -> Result<(), OtlpError> {
        for s in self.first.iter().chain(self.rest.iter()) {
            let mut r = Reader::new(s, 0);
            while let Some((field, v, _)) = r.next_field(0)? {
                f(field, v);
            }
        }
        Ok(())
    }
}

// --- the conversion --------------------------------------------------------------------------

/// Why a record is invalid (the text of the Python twin's `_Invalid`).
enum Invalid {
    Depth,
    Severity(i32),
    TraceId(usize),
    SpanId(usize),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Depth => write!(f, "a value is nested deeper than {MAX_VALUE_DEPTH} levels"),
            Self::Severity(n) => write!(f, "severity_number {n} is outside 0..24"),
            Self::TraceId(n) => write!(f, "trace_id of {n} bytes, expected 16"),
            Self::SpanId(n) => write!(f, "span_id of {n} bytes, expected 8"),
        }
    }
}

/// An `AnyValue`, its `oneof` resolved (the last member set wins; a message member set twice
/// in a row is merged).
enum Any<'a> {
    None,
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(Parts<'a>),
    Kv(Parts<'a>),
    StrIndex,
}

fn any<'a>(p: &Parts<'a>) -> Result<Any<'a>, OtlpError> {
    let mut v = Any::None;
    p.each(|field, val| match (field, val) {
        (1, Val::Len(s)) => v = Any::Str(s),
        (2, Val::Varint(n)) => v = Any::Bool(n != 0),
        (3, Val::Varint(n)) => v = Any::Int(n as i64),
        (4, Val::I64(n)) => v = Any::Double(f64::from_bits(n)),
        (5, Val::Len(s)) => match &mut v {
            Any::Array(parts) => parts.push(s),
            _ => v = Any::Array(Parts::one(s)),
        },
        (6, Val::Len(s)) => match &mut v {
            Any::Kv(parts) => parts.push(s),
            _ => v = Any::Kv(Parts::one(s)),
        },
        (7, Val::Len(s)) => v = Any::Bytes(s),
        (8, Val::Varint(_)) => v = Any::StrIndex,
        _ => {}
    })?;
    Ok(v)
}

/// The repeated `KeyValue`s (field `field`) of a message.
fn key_values<'a>(p: &Parts<'a>, field: u32) -> Result<Vec<&'a [u8]>, OtlpError> {
    let mut kvs = Vec::new();
    p.each(|f, v| {
        if let (true, Val::Len(s)) = (f == field, v) {
            kvs.push(s);
        }
    })?;
    Ok(kvs)
}

/// A value of the conversion: either JSON output or an invalid record.
type Conv<T> = Result<Result<T, Invalid>, OtlpError>;

/// An `AnyValue` as JSON, at nesting `depth` (1 for a body or an attribute).
fn write_any(out: &mut Vec<u8>, v: &Any<'_>, depth: u32) -> Conv<()> {
    match v {
        Any::Str(s) => write_str(out, s),
        Any::Int(n) => write_int(out, *n),
        Any::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Any::Double(d) => write_double(out, *d),
        Any::Bytes(b) => {
            out.push(b'"');
            base64(out, b);
            out.push(b'"');
        }
        Any::None => out.extend_from_slice(b"null"),
        _ if depth >= MAX_VALUE_DEPTH => return Ok(Err(Invalid::Depth)),
        Any::Array(parts) => {
            out.push(b'[');
            let mut items = Vec::new();
            parts.each(|f, v| {
                if let (1, Val::Len(s)) = (f, v) {
                    items.push(s);
                }
            })?;
            for (i, s) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if let Err(e) = write_any(out, &any(&Parts::one(s))?, depth + 1)? {
                    return Ok(Err(e));
                }
            }
            out.push(b']');
        }
        Any::Kv(parts) => {
            let kvs = key_values(parts, 1)?;
            if let Err(e) = write_object(out, &kvs, depth + 1)? {
                return Ok(Err(e));
            }
        }
        Any::StrIndex => out.extend_from_slice(b"{}"),
    }
    Ok(Ok(()))
}

/// Repeated `KeyValue`s as a JSON object: a repeated key keeps its first place and takes its
/// last value (a Python dict built in order). Every value is converted, even one replaced.
fn write_object(out: &mut Vec<u8>, kvs: &[&[u8]], depth: u32) -> Conv<()> {
    // Written in place, `"key":value` after `"key":value`; only a repeated key (rare) makes the
    // object be rewritten from the recorded places.
    let start = out.len();
    out.push(b'{');
    let mut entries: Vec<(&[u8], std::ops::Range<usize>)> = Vec::with_capacity(kvs.len());
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut repeated = false;
    for kv in kvs {
        let mut key: &[u8] = b"";
        let mut value = Parts::default();
        Parts::one(kv).each(|f, v| match (f, v) {
            (1, Val::Len(s)) => key = s,
            (2, Val::Len(s)) => value.push(s),
            _ => {}
        })?;
        if out.len() > start + 1 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        let value_start = out.len();
        if let Err(e) = write_any(out, &any(&value)?, depth)? {
            return Ok(Err(e));
        }
        let range = value_start..out.len();
        let found = if entries.len() < 16 {
            entries.iter().position(|(k, _)| *k == key)
        } else {
            if index.is_empty() {
                index.extend(entries.iter().enumerate().map(|(i, (k, _))| (*k, i)));
            }
            index.get(key).copied()
        };
        if let Some(i) = found {
            entries[i].1 = range;
            repeated = true;
        } else {
            if !index.is_empty() {
                index.insert(key, entries.len());
            }
            entries.push((key, range));
        }
    }
    if repeated {
        let written = out.split_off(start);
        out.push(b'{');
        for (i, (k, r)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, k);
            out.push(b':');
            out.extend_from_slice(&written[r.start - start..r.end - start]);
        }
    }
    out.push(b'}');
    Ok(Ok(()))
}

/// The object of `kvs` rendered, and the JSON string of its "service.name" value if that is a
/// string.
fn attributes_json(kvs: &[&[u8]]) -> Conv<(Vec<u8>, Option<Vec<u8>>)> {
    let mut obj = Vec::new();
    if let Err(e) = write_object(&mut obj, kvs, 1)? {
        return Ok(Err(e));
    }
    let name = kvs
        .iter()
        .any(|kv| kv.windows(12).any(|w| w == b"service.name"));
    let source = if name { service_name(&obj) } else { None };
    Ok(Ok((obj, source)))
}

/// The value of the top-level key "service.name" in a rendered object, when it is a string.
fn service_name(obj: &[u8]) -> Option<Vec<u8>> {
    // Walk the rendered object: keys are JSON strings, values balanced JSON.
    let mut i = 1;
    while i < obj.len() && obj[i] != b'}' {
        let key_end = string_end(obj, i);
        let key = &obj[i..key_end];
        let val_start = key_end + 1;
        let val_end = value_end(obj, val_start);
        if key == b"\"service.name\"" {
            return (obj[val_start] == b'"').then(|| obj[val_start..val_end].to_vec());
        }
        i = val_end + 1; // past the ','
    }
    None
}

/// The end (exclusive) of the JSON string starting at `i`.
fn string_end(s: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// The end (exclusive) of the JSON value starting at `i` (compact JSON, as rendered here).
fn value_end(s: &[u8], mut i: usize) -> usize {
    let mut nest = 0usize;
    while i < s.len() {
        match s[i] {
            b'"' => {
                i = string_end(s, i);
                if nest == 0 {
                    return i;
                }
                continue;
            }
            b'[' | b'{' => nest += 1,
            b']' | b'}' => {
                if nest == 0 {
                    return i;
                }
                nest -= 1;
                if nest == 0 {
                    return i + 1;
                }
            }
            b',' if nest == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    s.len()
}

/// A `LogRecord`'s fields.
#[derive(Default)]
struct Record<'a> {
    time: u64,
    observed: u64,
    severity: i32,
    severity_text: &'a [u8],
    body: Parts<'a>,
    attributes: Vec<&'a [u8]>,
    dropped: u32,
    flags: u32,
    trace_id: &'a [u8],
    span_id: &'a [u8],
    event_name: &'a [u8],
}

impl<'a> Record<'a> {
    fn read(s: &'a [u8]) -> Result<Self, OtlpError> {
        let mut r = Record::default();
        Parts::one(s).each(|f, v| match (f, v) {
            (1, Val::I64(n)) => r.time = n,
            (11, Val::I64(n)) => r.observed = n,
            (2, Val::Varint(n)) => r.severity = n as i32,
            (3, Val::Len(s)) => r.severity_text = s,
            (5, Val::Len(s)) => r.body.push(s),
            (6, Val::Len(s)) => r.attributes.push(s),
            (7, Val::Varint(n)) => r.dropped = n as u32,
            (8, Val::I32(n)) => r.flags = n,
            (9, Val::Len(s)) => r.trace_id = s,
            (10, Val::Len(s)) => r.span_id = s,
            (12, Val::Len(s)) => r.event_name = s,
            _ => {}
        })?;
        Ok(r)
    }
}

struct Conversion {
    out: Vec<u8>,
    accepted: usize,
    rejected: usize,
    first: String,
}

impl Conversion {
    fn reject(&mut self, n: usize, reason: impl FnOnce() -> String) {
        self.rejected += n;
        if self.first.is_empty() {
            self.first = reason();
        }
    }

    fn request(&mut self, body: &[u8]) -> Result<(), OtlpError> {
        let mut resource_logs = Vec::new();
        Parts::one(body).each(|f, v| {
            if let (1, Val::Len(s)) = (f, v) {
                resource_logs.push(s);
            }
        })?;
        for (i, rl) in resource_logs.into_iter().enumerate() {
            self.resource_logs(i, rl)?;
        }
        Ok(())
    }

    fn resource_logs(&mut self, i: usize, rl: &[u8]) -> Result<(), OtlpError> {
        let mut resource = Parts::default();
        let mut scope_logs = Vec::new();
        let mut schema_url: &[u8] = b"";
        Parts::one(rl).each(|f, v| match (f, v) {
            (1, Val::Len(s)) => resource.push(s),
            (2, Val::Len(s)) => scope_logs.push(s),
            (3, Val::Len(s)) => schema_url = s,
            _ => {}
        })?;
        let (res, source) = match attributes_json(&key_values(&resource, 1)?)? {
            Ok(r) => r,
            Err(e) => {
                let mut n = 0;
                for sl in &scope_logs {
                    Parts::one(sl).each(|f, v| {
                        if let (2, Val::Len(_)) = (f, v) {
                            n += 1;
                        }
                    })?;
                }
                self.reject(n, || format!("resource_logs[{i}].resource: {e}"));
                return Ok(());
            }
        };
        let mut ctx = Vec::with_capacity(res.len() + 64);
        ctx.extend_from_slice(b",\"resource\":");
        ctx.extend_from_slice(&res);
        if !schema_url.is_empty() {
            ctx.extend_from_slice(b",\"resource_schema_url\":");
            write_str(&mut ctx, schema_url);
        }
        for (j, sl) in scope_logs.into_iter().enumerate() {
            self.scope_logs(i, j, sl, source.as_deref(), &ctx)?;
        }
        Ok(())
    }

    fn scope_logs(
        &mut self,
        i: usize,
        j: usize,
        sl: &[u8],
        source: Option<&[u8]>,
        res_ctx: &[u8],
    ) -> Result<(), OtlpError> {
        let mut scope = Parts::default();
        let mut records = Vec::new();
        let mut schema_url: &[u8] = b"";
        Parts::one(sl).each(|f, v| match (f, v) {
            (1, Val::Len(s)) => scope.push(s),
            (2, Val::Len(s)) => records.push(s),
            (3, Val::Len(s)) => schema_url = s,
            _ => {}
        })?;
        let (mut name, mut version): (&[u8], &[u8]) = (b"", b"");
        let mut attrs = Vec::new();
        scope.each(|f, v| match (f, v) {
            (1, Val::Len(s)) => name = s,
            (2, Val::Len(s)) => version = s,
            (3, Val::Len(s)) => attrs.push(s),
            _ => {}
        })?;
        let mut ctx = Vec::with_capacity(res_ctx.len() + 64);
        ctx.extend_from_slice(res_ctx);
        ctx.extend_from_slice(b",\"scope\":{\"name\":");
        write_str(&mut ctx, name);
        ctx.extend_from_slice(b",\"version\":");
        write_str(&mut ctx, version);
        if !attrs.is_empty() {
            ctx.extend_from_slice(b",\"attributes\":");
            if let Err(e) = write_object(&mut ctx, &attrs, 1)? {
                self.reject(records.len(), || format!("scope_logs[{j}].scope: {e}"));
                return Ok(());
            }
        }
        if !schema_url.is_empty() {
            ctx.extend_from_slice(b",\"schema_url\":");
            write_str(&mut ctx, schema_url);
        }
        ctx.push(b'}');
        for (k, lr) in records.into_iter().enumerate() {
            let mark = self.out.len();
            if self.accepted > 0 {
                self.out.push(b',');
            }
            match write_record(&mut self.out, &Record::read(lr)?, source, &ctx)? {
                Ok(()) => self.accepted += 1,
                Err(e) => {
                    self.out.truncate(mark);
                    self.reject(1, || {
                        format!("resource_logs[{i}].scope_logs[{j}].log_records[{k}]: {e}")
                    });
                }
            }
        }
        Ok(())
    }
}

const SEVERITY_NAMES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

/// One record as a logdist message (see the README's mapping table); `ctx` is the rendered
/// `,"resource":...,"scope":{...}` tail of its metadata.
fn write_record(out: &mut Vec<u8>, r: &Record<'_>, source: Option<&[u8]>, ctx: &[u8]) -> Conv<()> {
    let n = r.severity;
    if !(0..=24).contains(&n) {
        return Ok(Err(Invalid::Severity(n)));
    }
    out.extend_from_slice(b"{\"message\":");
    if r.body.is_present() {
        match any(&r.body)? {
            Any::Str(s) => write_str(out, s),
            v => {
                let mut text = Vec::new();
                if let Err(e) = write_any(&mut text, &v, 1)? {
                    return Ok(Err(e));
                }
                write_str(out, &text);
            }
        }
    } else {
        out.extend_from_slice(b"\"\"");
    }
    if !r.severity_text.is_empty() {
        out.extend_from_slice(b",\"level\":");
        write_str(out, r.severity_text);
    } else if n != 0 {
        let (base, step) = ((n - 1) / 4, (n - 1) % 4);
        out.extend_from_slice(b",\"level\":\"");
        out.extend_from_slice(SEVERITY_NAMES[base as usize].as_bytes());
        if step != 0 {
            out.push(b'1' + step as u8);
        }
        out.push(b'"');
    }
    if let Some(s) = source {
        out.extend_from_slice(b",\"source\":");
        out.extend_from_slice(s);
    }
    if r.time != 0 || r.observed != 0 {
        out.extend_from_slice(b",\"timestamp\":");
        rfc3339(out, if r.time != 0 { r.time } else { r.observed });
    }
    out.extend_from_slice(b",\"metadata\":{");
    let mark = out.len();
    let key = |out: &mut Vec<u8>, k: &[u8]| {
        if out.len() > mark {
            out.push(b',');
        }
        out.extend_from_slice(k);
    };
    if r.observed != 0 {
        key(out, b"\"observed_timestamp\":");
        rfc3339(out, r.observed);
    }
    if n != 0 {
        key(out, b"\"severity_number\":");
        write_int(out, i64::from(n));
    }
    if !r.severity_text.is_empty() {
        key(out, b"\"severity_text\":");
        write_str(out, r.severity_text);
    }
    if !r.event_name.is_empty() {
        key(out, b"\"event_name\":");
        write_str(out, r.event_name);
    }
    if !r.trace_id.is_empty() {
        if r.trace_id.len() != 16 {
            return Ok(Err(Invalid::TraceId(r.trace_id.len())));
        }
        key(out, b"\"trace_id\":");
        hex(out, r.trace_id);
    }
    if !r.span_id.is_empty() {
        if r.span_id.len() != 8 {
            return Ok(Err(Invalid::SpanId(r.span_id.len())));
        }
        key(out, b"\"span_id\":");
        hex(out, r.span_id);
    }
    if r.flags != 0 {
        key(out, b"\"flags\":");
        write_int(out, i64::from(r.flags));
    }
    key(out, b"\"attributes\":");
    if let Err(e) = write_object(out, &r.attributes, 1)? {
        return Ok(Err(e));
    }
    if r.dropped != 0 {
        out.extend_from_slice(b",\"dropped_attributes_count\":");
        write_int(out, i64::from(r.dropped));
    }
    out.extend_from_slice(ctx);
    out.extend_from_slice(b"}}");
    Ok(Ok(()))
}

// --- JSON text, as orjson writes it ----------------------------------------------------------

/// A JSON string: `"` and `\` escaped, control characters as \b \t \n \f \r or \u00xx, the
/// rest (DEL, non-ASCII) as is.
fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

fn write_int(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// A double as orjson writes it: the shortest digits that read back the same, fixed notation
/// for decimal exponents -5..=15 (always with a fraction: `1.0`), else `1.5e+16` / `1e-7`;
/// NaN and the infinities as the protobuf JSON mapping's strings.
fn write_double(out: &mut Vec<u8>, d: f64) {
    if d.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
        return;
    }
    if d.is_infinite() {
        out.extend_from_slice(if d > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
        return;
    }
    // The shortest round-trip digits, as "1.2345e-7" (at most 17 digits and "e-324": 32 bytes).
    let mut buf = [0u8; 40];
    let len = {
        let mut w = &mut buf[..];
        let _ = write!(w, "{:e}", d.abs());
        40 - w.len()
    };
    let sci = &buf[..len];
    let e_at = sci.iter().position(|&b| b == b'e').unwrap_or(len);
    let exp: i32 = std::str::from_utf8(sci.get(e_at + 1..).unwrap_or_default())
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut digits = [0u8; 24];
    let mut n = 0;
    for &b in &sci[..e_at] {
        if b.is_ascii_digit() && n < digits.len() {
            digits[n] = b;
            n += 1;
        }
    }
    let digits = &digits[..n];
    if d.is_sign_negative() {
        out.push(b'-');
    }
    if (-5..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            for i in 0..int_len {
                out.push(digits.get(i).copied().unwrap_or(b'0'));
            }
            out.push(b'.');
            if digits.len() > int_len {
                out.extend_from_slice(&digits[int_len..]);
            } else {
                out.push(b'0');
            }
        } else {
            out.extend_from_slice(b"0.");
            for _ in 0..(-exp - 1) {
                out.push(b'0');
            }
            out.extend_from_slice(digits);
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp >= 0 { b'+' } else { b'-' });
        write_int(out, i64::from(exp.abs()));
    }
}

fn hex(out: &mut Vec<u8>, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &x in b {
        out.push(HEX[usize::from(x >> 4)]);
        out.push(HEX[usize::from(x & 15)]);
    }
    out.push(b'"');
}

fn base64(out: &mut Vec<u8>, b: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in b.chunks(3) {
        let n = match *chunk {
            [a, b, c] => (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c),
            [a, b] => (u32::from(a) << 16) | (u32::from(b) << 8),
            [a] => u32::from(a) << 16,
            _ => 0,
        };
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

/// Nanoseconds since the epoch as `"YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ"` (UTC).
fn rfc3339(out: &mut Vec<u8>, ns: u64) {
    let (secs, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    let (days, sod) = (secs / 86_400, secs % 86_400);
    // civil_from_days (H. Hinnant), for days >= 0
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let text = [
        (year, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        (sod / 3600, 2, b':'),
        (sod / 60 % 60, 2, b':'),
        (sod % 60, 2, b'.'),
        (frac, 9, b'Z'),
    ];
    out.push(b'"');
    for (v, width, sep) in text {
        let mut buf = [b'0'; 9];
        let mut m = v;
        for i in (0..width).rev() {
            buf[i] = b'0' + (m % 10) as u8;
            m /= 10;
        }
        out.extend_from_slice(&buf[..width]);
        out.push(sep);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dbl(d: f64) -> String {
        let mut v = Vec::new();
        write_double(&mut v, d);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn doubles_as_orjson() {
        for (d, s) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.234_567_890_123_456_8e20, "1.2345678901234568e+20"),
            (1e-7, "1e-7"),
            (2.5e-5, "0.000025"),
            (1e-5, "0.00001"),
            (5e-6, "5e-6"),
            (5e-324, "5e-324"),
            (1.797_693_134_862_315_7e308, "1.7976931348623157e+308"),
            (123.456, "123.456"),
            (f64::NAN, "\"NaN\""),
            (f64::NEG_INFINITY, "\"-Infinity\""),
        ] {
            assert_eq!(dbl(d), s, "{d:e}");
        }
    }

    #[test]
    fn timestamps() {
        let mut v = Vec::new();
        rfc3339(&mut v, 1_764_614_788_000_000_001);
        assert_eq!(v, b"\"2025-12-01T18:46:28.000000001Z\"");
        v.clear();
        rfc3339(&mut v, u64::MAX);
        assert_eq!(v, b"\"2554-07-21T23:34:33.709551615Z\"");
    }

    #[test]
    fn strings_and_bytes() {
        let mut v = Vec::new();
        write_str(&mut v, "a\"\\\n\u{1f}\u{7f}é".as_bytes());
        assert_eq!(v, "\"a\\\"\\\\\\n\\u001f\u{7f}é\"".as_bytes());
        v.clear();
        base64(&mut v, b"abcd");
        assert_eq!(v, b"YWJjZA==");
    }

    #[test]
    fn malformed_bodies() {
        for body in [
            &b"\x00\x01"[..],
            b"\x1c",
            b"\x1e",
            b"\x0a\x05\x01",
            b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
            b"\x1b\x08\x01",
        ] {
            let e = logs_to_messages(body, 10).unwrap_err();
            assert_eq!(e.code(), "bad_protobuf", "{body:?}");
        }
        assert_eq!(logs_to_messages(b"", 10).unwrap().messages, b"[]".to_vec());
    }
}
