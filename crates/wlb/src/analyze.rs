//! The analyzer's per-batch work: read a request body, deduplicate its messages by id against
//! a bounded window, and tally the unique ones by level and source, in one pass over the raw
//! bytes and without building a value per message.
//!
//! The semantics are those of the pure-Python twin (`logdist/_py/analyze.py`, which reads the
//! body with orjson) and are written down in `python/logdist/_wlb.pyi` (`BatchAnalyzer`).
//! The syntax pass is [`crate::json`]'s scanner in strict mode, which also rejects what
//! orjson rejects (unpaired surrogate escapes, numbers that overflow a double, nesting deeper
//! than 1024). For each message only `id`, `level` and `source` are located (the last one wins
//! when a key repeats, as in a dict); everything else is skipped.
//!
//! Ids are compared by their canonical value, as Python compares dict keys: a string by its
//! decoded text; a number by its mathematical value, so `1`, `1.0` and `1e0` are one id while
//! `"1"` is another (an integer literal in [-2^63, 2^64) is exact, any other number is the
//! nearest double, as orjson reads it). The window and the keys live in [`crate::dedup`].

use crate::dedup::{hash_key, number_value, DedupError, DedupWindow, IdKey, IdValue};
use crate::json::{decode_json_string, is_ws, Decoded, JsonError, Key, Kind, Scan, Scanner};
use crate::packet::{ErrorCode, PacketError};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

/// Deepest nesting accepted (the top-level value is depth 1), as orjson.
pub const MAX_DEPTH: i64 = 1024;

// ------------------------------------------------------------------------------ the scan

/// What a field's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Val {
    #[default]
    Absent,
    Null,
    Bool,
    /// A string; the span is its contents (between the quotes).
    Str {
        escaped: bool,
    },
    Int,
    Float,
    Object,
    Array,
}

#[derive(Debug, Clone, Copy, Default)]
struct Field {
    val: Val,
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Msg {
    object: bool,
    id: Field,
    level: Field,
    source: Field,
}

/// What a top-level `"messages"`/`"log_messages"` member held (the last one, if repeated).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Member {
    Absent,
    Null,
    Array(usize, usize),
    Other,
}

/// A document's verdict beyond syntax: its messages (a range of `msgs`) or a shape error.
enum Doc {
    Messages(Range<usize>),
    Shape(String),
}

/// Python's name of the type orjson gives a value, for shape errors.
fn type_name(val: Val) -> &'static str {
    match val {
        Val::Null | Val::Absent => "NoneType",
        Val::Bool => "bool",
        Val::Str { .. } => "str",
        Val::Int => "int",
        Val::Float => "float",
        Val::Object => "dict",
        Val::Array => "list",
    }
}

struct Walker<'s, 'a> {
    sc: Scanner<'a>,
    msgs: &'s mut Vec<Msg>,
}

impl Walker<'_, '_> {
    /// Any value at `pos` (whitespace skipped), classified; returns (end, field).
    fn field(&mut self, pos: usize, depth: i64) -> Scan<(usize, Field)> {
        let buf = self.sc.buf();
        if self.sc.peek(pos) == Some(b'"') {
            let (end, escaped) = self.sc.string(pos)?;
            let f = Field {
                val: Val::Str { escaped },
                start: pos + 1,
                end: end - 1,
            };
            return Ok((end, f));
        }
        let (end, kind) = self.sc.value(pos, depth)?;
        let val = match kind {
            Kind::Obj => Val::Object,
            Kind::Arr => Val::Array,
            Kind::Int => Val::Int,
            Kind::Num => Val::Float,
            Kind::Str => Val::Str { escaped: true },
            Kind::Lit if buf[pos] == b'n' => Val::Null,
            Kind::Lit => Val::Bool,
        };
        let mut f = Field {
            val,
            start: pos,
            end,
        };
        // An integer literal outside orjson's int range is a float.
        if val == Val::Int && matches!(number_value(&buf[pos..end], true), IdValue::Float(_)) {
            f.val = Val::Float;
        }
        Ok((end, f))
    }

    /// Which of the meaningful keys a member key is (decoded when it has escapes).
    fn key(&self, key: Key) -> u8 {
        const NAMES: [&[u8]; 5] = [b"id", b"level", b"source", b"messages", b"log_messages"];
        let Some(name) = self.sc.key_name(key) else {
            return 0;
        };
        NAMES
            .iter()
            .position(|&n| *n == *name)
            .map_or(0, |i| i as u8 + 1)
    }

    /// An object at `pos` (at `depth`) read as a message. With `top`, also the packet members;
    /// returns (end, message, `log_messages`, messages).
    fn object(
        &mut self,
        mut pos: usize,
        depth: i64,
        top: bool,
    ) -> Scan<(usize, Msg, Member, Member)> {
        self.sc.check_depth(pos, depth)?;
        let mut msg = Msg {
            object: true,
            ..Msg::default()
        };
        let (mut log_messages, mut messages) = (Member::Absent, Member::Absent);
        pos += 1;
        let p = self.sc.ws(pos);
        if self.sc.peek(p) == Some(b'}') {
            return Ok((p + 1, msg, log_messages, messages));
        }
        loop {
            let (key, vpos) = self.sc.member_key(pos)?;
            let Some(c) = self.sc.peek(vpos) else {
                return Err(JsonError::eof(vpos));
            };
            let which = self.key(key);
            if top && which >= 4 {
                let member = if c == b'[' {
                    let first = self.msgs.len();
                    pos = self.array(vpos, depth + 1)?;
                    Member::Array(first, self.msgs.len())
                } else {
                    let (end, f) = self.field(vpos, depth + 1)?;
                    pos = end;
                    if f.val == Val::Null {
                        Member::Null
                    } else {
                        Member::Other
                    }
                };
                if which == 5 {
                    log_messages = member;
                } else {
                    messages = member;
                }
            } else if (1..=3).contains(&which) {
                let (end, f) = self.field(vpos, depth + 1)?;
                pos = end;
                match which {
                    1 => msg.id = f,
                    2 => msg.level = f,
                    _ => msg.source = f,
                }
            } else {
                pos = self.sc.value(vpos, depth + 1)?.0;
            }
            let (next, closed) = self.sc.after_value(pos, b'}')?;
            pos = next;
            if closed {
                return Ok((pos, msg, log_messages, messages));
            }
        }
    }

    /// An array of messages at `pos` (at `depth`); appends one `Msg` per element.
    fn array(&mut self, mut pos: usize, depth: i64) -> Scan<usize> {
        self.sc.check_depth(pos, depth)?;
        pos += 1;
        let p = self.sc.ws(pos);
        if self.sc.peek(p) == Some(b']') {
            return Ok(p + 1);
        }
        loop {
            pos = self.sc.ws(pos);
            let Some(c) = self.sc.peek(pos) else {
                return Err(JsonError::eof(pos));
            };
            if c == b'{' {
                let (end, msg, _, _) = self.object(pos, depth + 1, false)?;
                pos = end;
                self.msgs.push(msg);
            } else {
                pos = self.sc.value(pos, depth + 1)?.0;
                self.msgs.push(Msg::default());
            }
            let (next, closed) = self.sc.after_value(pos, b']')?;
            pos = next;
            if closed {
                return Ok(pos);
            }
        }
    }

    /// One JSON document filling `[pos, lim)` (whitespace around it allowed). Its messages are
    /// left at the end of `msgs` (anything else it appended is dropped).
    fn document(&mut self, pos: usize) -> Scan<Doc> {
        let base = self.msgs.len();
        let pos = self.sc.document_start(pos)?;
        let (end, doc) = match self.sc.buf()[pos] {
            b'[' => (self.array(pos, 1)?, Doc::Messages(base..usize::MAX)),
            b'{' => {
                let (end, msg, log_messages, messages) = self.object(pos, 1, true)?;
                let chosen = match log_messages {
                    Member::Absent | Member::Null => messages,
                    m => m,
                };
                let doc = match chosen {
                    Member::Absent | Member::Null => {
                        self.msgs.push(msg);
                        let n = self.msgs.len();
                        Doc::Messages(n - 1..n)
                    }
                    Member::Array(a, b) => Doc::Messages(a..b),
                    Member::Other => {
                        Doc::Shape("packet field 'messages'/'log_messages' must be an array".into())
                    }
                };
                (end, doc)
            }
            _ => {
                let (end, f) = self.field(pos, 1)?;
                let detail = format!(
                    "body must be a JSON array or object, not {}",
                    type_name(f.val)
                );
                (end, Doc::Shape(detail))
            }
        };
        self.sc.document_end(end)?;
        Ok(match doc {
            Doc::Messages(r) => {
                let end = r.end.min(self.msgs.len());
                self.msgs.copy_within(r.start..end, base);
                self.msgs.truncate(base + (end - r.start));
                Doc::Messages(base..self.msgs.len())
            }
            Doc::Shape(detail) => {
                self.msgs.truncate(base);
                Doc::Shape(detail)
            }
        })
    }
}

fn bad_json(detail: String) -> PacketError {
    PacketError {
        code: ErrorCode::BadJson,
        detail,
    }
}

fn bad_schema(detail: String) -> PacketError {
    PacketError {
        code: ErrorCode::BadSchema,
        detail,
    }
}

/// Python's `bytes.strip()` / `bytes.isspace()` whitespace.
#[inline]
fn py_space(c: u8) -> bool {
    is_ws(c) || c == 0x0B || c == 0x0C
}

/// Fills `msgs` with the body's messages (in order), or returns the verdict.
fn read_messages(body: &[u8], msgs: &mut Vec<Msg>) -> Result<(), PacketError> {
    msgs.clear();
    let detail = if let Err(e) = std::str::from_utf8(body) {
        format!("invalid UTF-8 at byte {}", e.valid_up_to())
    } else {
        let mut w = Walker {
            sc: Scanner::new_strict(body, MAX_DEPTH),
            msgs,
        };
        match w.document(0) {
            Ok(Doc::Messages(_)) => return Ok(()),
            Ok(Doc::Shape(detail)) => return Err(bad_schema(detail)),
            Err(e) => e.to_string(),
        }
    };
    // Not one JSON document: NDJSON when a newline is inside the stripped body.
    let start = body
        .iter()
        .position(|&c| !py_space(c))
        .unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|&c| !py_space(c))
        .map_or(start, |e| e + 1);
    if memchr::memchr(b'\n', &body[start..end]).is_none() {
        return Err(bad_json(format!("body is not JSON: {detail}")));
    }
    msgs.clear();
    let mut line_no = 0usize;
    let mut i = 0usize;
    while i < body.len() {
        // bytes.splitlines(): lines end at \n, \r or \r\n.
        let j = memchr::memchr2(b'\n', b'\r', &body[i..]).map_or(body.len(), |k| i + k);
        let next = if j + 1 < body.len() && body[j] == b'\r' && body[j + 1] == b'\n' {
            j + 2
        } else {
            j + 1
        };
        line_no += 1;
        let line = &body[i..j];
        if !line.iter().all(|&c| py_space(c)) {
            if let Err(e) = std::str::from_utf8(line) {
                return Err(bad_json(format!(
                    "line {line_no} is not JSON: invalid UTF-8 at byte {}",
                    i + e.valid_up_to()
                )));
            }
            let mut sc = Scanner::new_strict(body, MAX_DEPTH);
            sc.set_lim(j);
            let mut w = Walker { sc, msgs };
            match w.document(i) {
                Ok(Doc::Messages(_)) => {}
                Ok(Doc::Shape(detail)) => return Err(bad_schema(detail)),
                Err(e) => return Err(bad_json(format!("line {line_no} is not JSON: {e}"))),
            }
        }
        i = next;
    }
    Ok(())
}

/// The message-level checks, in the twin's order: every message is an object, then every id
/// is a string, a number or null, then every level and source is a string or null.
fn check_messages(msgs: &[Msg]) -> Result<(), PacketError> {
    if let Some(i) = msgs.iter().position(|m| !m.object) {
        return Err(bad_schema(format!("message {i} is not a JSON object")));
    }
    let id_ok = |v: Val| {
        matches!(
            v,
            Val::Absent | Val::Null | Val::Str { .. } | Val::Int | Val::Float
        )
    };
    if let Some(i) = msgs.iter().position(|m| !id_ok(m.id.val)) {
        return Err(bad_schema(format!(
            "message {i}: 'id' must be a string or number"
        )));
    }
    let tally_ok = |v: Val| matches!(v, Val::Absent | Val::Null | Val::Str { .. });
    for (i, m) in msgs.iter().enumerate() {
        for (name, f) in [("level", m.level), ("source", m.source)] {
            if !tally_ok(f.val) {
                return Err(bad_schema(format!(
                    "message {i}: '{name}' must be a string or null"
                )));
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------ tallies

/// FxHash-style hasher with a final mix, for the small per-batch tally maps.
#[derive(Default)]
struct TallyHasher(u64);

impl Hasher for TallyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash_key(self.0, bytes);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A tally key: None (absent or null) or the decoded text.
type TallyKey<'a> = Option<std::borrow::Cow<'a, [u8]>>;

/// Counts per value, in order of first occurrence.
#[derive(Default)]
struct Tally<'a> {
    index: HashMap<TallyKey<'a>, usize, BuildHasherDefault<TallyHasher>>,
    counts: Vec<(TallyKey<'a>, u64)>,
    last: Option<(Field, usize)>,
}

impl<'a> Tally<'a> {
    fn add(&mut self, body: &'a [u8], f: Field) {
        // Runs of one value are common: compare the raw text with the previous one first.
        if let Some((prev, slot)) = self.last {
            if prev.val == f.val && body[prev.start..prev.end] == body[f.start..f.end] {
                self.counts[slot].1 += 1;
                return;
            }
        }
        let key: TallyKey<'a> = match f.val {
            Val::Str { escaped: false } => Some(std::borrow::Cow::Borrowed(&body[f.start..f.end])),
            Val::Str { escaped: true } => match decode_json_string(&body[f.start..f.end]) {
                Decoded::Utf8(s) => Some(std::borrow::Cow::Owned(s.into_bytes())),
                Decoded::Utf16(_) => unreachable!("strict mode rejects lone surrogates"),
            },
            _ => None,
        };
        let slot = if let Some(&slot) = self.index.get(&key) {
            slot
        } else {
            let slot = self.counts.len();
            self.index.insert(key.clone(), slot);
            self.counts.push((key, 0));
            slot
        };
        self.counts[slot].1 += 1;
        self.last = Some((f, slot));
    }

    fn into_vec(self) -> Vec<(Option<String>, u64)> {
        self.counts
            .into_iter()
            .map(|(k, c)| {
                let k = k.map(|b| String::from_utf8(b.into_owned()).expect("validated UTF-8"));
                (k, c)
            })
            .collect()
    }
}

// ------------------------------------------------------------------------------ the analyzer

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchReport {
    /// Messages counted: fresh ids (first occurrence in the batch) and id-less messages.
    pub unique: usize,
    /// Messages whose id was remembered (from earlier batches or earlier in this one).
    pub duplicates: usize,
    /// (level, count) over the unique messages, in order of first occurrence; None = absent/null.
    pub levels: Vec<(Option<String>, u64)>,
    /// (source, count), likewise.
    pub sources: Vec<(Option<String>, u64)>,
    /// The fresh ids in message order, each as its first occurrence gave it (`record_ids` only).
    pub fresh_ids: Option<Vec<IdValue>>,
}

/// Deduplicates and tallies batches of messages; see the module doc and `_wlb.pyi`.
///
/// # Performance
///
/// `ingest` is one pass over the body plus three over its messages (keys, a prefetching
/// touch of the window, the count); it builds no value per message and reuses its scratch
/// buffers from batch to batch (shrinking them after an outsized one).
pub struct BatchAnalyzer {
    window: DedupWindow,
    record_ids: bool,
    msgs: Vec<Msg>,
    /// Per batch: the canonical keys of the ids, one after another ...
    key: Vec<u8>,
    /// ... and per message (hash, start, end) of its key in `key`, None without an id.
    ids: Vec<Option<(u64, usize, usize)>>,
}

impl BatchAnalyzer {
    /// `capacity` >= 2 ids remembered at most.
    ///
    /// # Errors
    ///
    /// [`DedupError::CapacityTooSmall`] when `capacity` < 2.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::analyze::BatchAnalyzer;
    ///
    /// let mut a = BatchAnalyzer::new(1000, true)?;
    /// assert_eq!(a.window().capacity(), 1000);
    /// assert!(BatchAnalyzer::new(1, false).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(capacity: usize, record_ids: bool) -> Result<Self, DedupError> {
        Ok(Self {
            window: DedupWindow::new(capacity)?,
            record_ids,
            msgs: Vec::new(),
            key: Vec::new(),
            ids: Vec::new(),
        })
    }

    /// The dedup window (what is remembered).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::analyze::BatchAnalyzer;
    ///
    /// let mut a = BatchAnalyzer::new(1000, true)?;
    /// a.ingest(br#"[{"id":"x"}]"#)?;
    /// assert_eq!(a.window().len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn window(&self) -> &DedupWindow {
        &self.window
    }

    /// Whether reports list the fresh ids.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::analyze::BatchAnalyzer;
    ///
    /// let mut a = BatchAnalyzer::new(1000, true)?;
    /// assert!(a.record_ids());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn record_ids(&self) -> bool {
        self.record_ids
    }

    /// True when the id is remembered.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::analyze::BatchAnalyzer;
    /// use wlb::dedup::IdValue;
    ///
    /// let mut a = BatchAnalyzer::new(1000, false)?;
    /// a.ingest(br#"[{"id":1}]"#)?;
    /// assert!(a.contains(&IdValue::Float(1.0)));
    /// assert!(!a.contains(&IdValue::Str("1".into())));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains(&mut self, id: &IdValue) -> bool {
        IdKey::of_value(id, &mut self.key);
        self.window.contains(&self.key)
    }

    /// Analyses one body. On an error nothing is remembered or counted.
    ///
    /// # Errors
    ///
    /// [`PacketError`] with code `bad_json` (not JSON or NDJSON, as orjson reads it) or
    /// `bad_schema` (a body, message, id, level or source of the wrong type).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::analyze::BatchAnalyzer;
    /// use wlb::dedup::IdValue;
    /// use wlb::packet::ErrorCode;
    ///
    /// let mut a = BatchAnalyzer::new(1000, true)?;
    /// let r = a.ingest(br#"[{"id":1,"level":"INFO"},{"id":1.0,"level":"WARN"},{"level":"INFO"}]"#)?;
    /// assert_eq!((r.unique, r.duplicates), (2, 1));
    /// assert_eq!(r.levels, [(Some("INFO".into()), 2)]);
    /// assert_eq!(r.fresh_ids, Some(vec![IdValue::Int(1)]));
    /// assert_eq!(a.ingest(b"[1,").unwrap_err().code, ErrorCode::BadJson);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ingest(&mut self, body: &[u8]) -> Result<BatchReport, PacketError> {
        let mut msgs = std::mem::take(&mut self.msgs);
        let result = read_messages(body, &mut msgs)
            .and_then(|()| check_messages(&msgs))
            .map(|()| self.count(body, &msgs));
        self.msgs = msgs;
        self.shrink();
        result
    }

    /// Gives back what one huge batch made the scratch buffers grow to, so the analyzer's
    /// memory follows its usual batches, not its largest one.
    fn shrink(&mut self) {
        const KEEP: usize = 1 << 16;
        if self.msgs.capacity() > KEEP {
            self.msgs.clear();
            self.msgs.shrink_to(KEEP);
        }
        if self.ids.capacity() > KEEP {
            self.ids.clear();
            self.ids.shrink_to(KEEP);
        }
        if self.key.capacity() > 16 * KEEP {
            self.key.clear();
            self.key.shrink_to(16 * KEEP);
        }
    }

    /// Bytes held by the per-batch scratch buffers (their capacity).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::analyze::BatchAnalyzer;
    ///
    /// let mut a = BatchAnalyzer::new(1000, true)?;
    /// a.ingest(br#"[{"id":"x"}]"#)?;
    /// assert!(a.scratch_bytes() > 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn scratch_bytes(&self) -> usize {
        self.msgs.capacity() * std::mem::size_of::<Msg>()
            + self.ids.capacity() * std::mem::size_of::<Option<(u64, usize, usize)>>()
            + self.key.capacity()
    }

    /// Dedup and tallies over checked messages; cannot fail.
    fn count(&mut self, body: &[u8], msgs: &[Msg]) -> BatchReport {
        // Pass 1: every id's canonical key (into one buffer) and hash.
        self.key.clear();
        self.ids.clear();
        let mut scratch = Vec::new();
        for m in msgs {
            let id = m.id;
            let raw = &body[id.start..id.end];
            let start = self.key.len();
            match id.val {
                Val::Absent | Val::Null => {
                    self.ids.push(None);
                    continue;
                }
                Val::Str { escaped: false } => IdKey::append_str_bytes(raw, &mut self.key),
                Val::Str { escaped: true } => match decode_json_string(raw) {
                    Decoded::Utf8(s) => {
                        IdKey::of_str(&s, &mut scratch);
                        self.key.extend_from_slice(&scratch);
                    }
                    Decoded::Utf16(_) => unreachable!("strict mode rejects lone surrogates"),
                },
                Val::Int | Val::Float => {
                    IdKey::of_value(&number_value(raw, id.val == Val::Int), &mut scratch);
                    self.key.extend_from_slice(&scratch);
                }
                _ => unreachable!("checked by check_messages"),
            }
            let hash = self.window.hash(&self.key[start..]);
            self.ids.push(Some((hash, start, self.key.len())));
        }
        // Pass 2: touch the window's slots for all of them, so the cache misses overlap.
        let mut sink = 0u64;
        for &(hash, _, _) in self.ids.iter().flatten() {
            sink ^= self.window.touch(hash);
        }
        std::hint::black_box(sink);
        // Pass 3: the contract's rule, message by message.
        let mut levels = Tally::default();
        let mut sources = Tally::default();
        let mut fresh = self.record_ids.then(Vec::new);
        let mut unique = 0;
        for (m, id) in msgs.iter().zip(&self.ids) {
            if let Some((hash, start, end)) = *id {
                if !self.window.insert_hashed(hash, &self.key[start..end]) {
                    continue;
                }
                if let Some(out) = fresh.as_mut() {
                    out.push(id_value(body, m.id));
                }
            }
            unique += 1;
            levels.add(body, m.level);
            sources.add(body, m.source);
        }
        BatchReport {
            unique,
            duplicates: msgs.len() - unique,
            levels: levels.into_vec(),
            sources: sources.into_vec(),
            fresh_ids: fresh,
        }
    }
}

/// An id's value as its message gave it.
fn id_value(body: &[u8], id: Field) -> IdValue {
    let raw = &body[id.start..id.end];
    match id.val {
        Val::Str { escaped: false } => {
            IdValue::Str(String::from_utf8(raw.to_vec()).expect("validated UTF-8"))
        }
        Val::Str { escaped: true } => match decode_json_string(raw) {
            Decoded::Utf8(s) => IdValue::Str(s),
            Decoded::Utf16(_) => unreachable!("strict mode rejects lone surrogates"),
        },
        _ => number_value(raw, id.val == Val::Int),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest(a: &mut BatchAnalyzer, body: &str) -> BatchReport {
        a.ingest(body.as_bytes()).unwrap()
    }

    fn err(body: &[u8]) -> (ErrorCode, String) {
        let mut a = BatchAnalyzer::new(100, false).unwrap();
        let e = a.ingest(body).unwrap_err();
        (e.code, e.detail)
    }

    /// Shorthand for an expected tally key.
    #[allow(clippy::unnecessary_wraps)]
    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn counts_dedups_and_tallies() {
        let mut a = BatchAnalyzer::new(1000, true).unwrap();
        let r = ingest(
            &mut a,
            r#"[{"id":1,"level":"INFO","source":"a"},{"id":2,"level":"ERROR","source":"b"},
                {"id":1,"level":"X","source":"x"},{"level":"INFO"},{"id":null,"level":"INFO"}]"#,
        );
        assert_eq!((r.unique, r.duplicates), (4, 1));
        assert_eq!(r.levels, vec![(s("INFO"), 3), (s("ERROR"), 1)]);
        assert_eq!(r.sources, vec![(s("a"), 1), (s("b"), 1), (None, 2)]);
        assert_eq!(r.fresh_ids, Some(vec![IdValue::Int(1), IdValue::Int(2)]));
        let r = ingest(
            &mut a,
            r#"[{"id":1.0},{"id":1e0},{"id":"1"},{"id":0.5},{"id":-0.0},{"id":0}]"#,
        );
        assert_eq!((r.unique, r.duplicates), (3, 3));
        assert_eq!(
            r.fresh_ids,
            Some(vec![
                IdValue::Str("1".into()),
                IdValue::Float(0.5),
                IdValue::Float(-0.0)
            ])
        );
    }

    #[test]
    fn escaped_and_unescaped_strings_are_one_id() {
        let mut a = BatchAnalyzer::new(1000, true).unwrap();
        let r = ingest(
            &mut a,
            r#"[{"id":"Ab\u00e9"},{"id":"\u0041bé"},{"\u0069d":"Abé","level":"\u0049NFO"},{"id":"x","level":"INFO"}]"#,
        );
        assert_eq!((r.unique, r.duplicates), (2, 2));
        assert_eq!(r.fresh_ids.unwrap()[0], IdValue::Str("Abé".into()));
        assert_eq!(r.levels, vec![(None, 1), (s("INFO"), 1)]);
    }

    #[test]
    fn big_numbers_follow_orjson() {
        let mut a = BatchAnalyzer::new(1000, true).unwrap();
        // 2^64 is past the int range: a double, equal to 1.8446744073709552e19.
        let r = ingest(
            &mut a,
            r#"[{"id":18446744073709551615},{"id":18446744073709551616},{"id":1.8446744073709552e19},{"id":-9223372036854775809}]"#,
        );
        assert_eq!((r.unique, r.duplicates), (3, 1));
        assert_eq!(
            r.fresh_ids.unwrap(),
            vec![
                IdValue::Int(18_446_744_073_709_551_615),
                IdValue::Float(18_446_744_073_709_551_616.0),
                IdValue::Float(-9_223_372_036_854_775_808.0),
            ]
        );
        assert_eq!(err(br#"[{"id":1e400}]"#).0, ErrorCode::BadJson);
        assert_eq!(err(br#"[{"x":[1e999]}]"#).0, ErrorCode::BadJson);
        assert_eq!(err(br#"[{"x":"\ud800"}]"#).0, ErrorCode::BadJson);
        assert_eq!(err(br#"[{"x":"\udc00\ud800"}]"#).0, ErrorCode::BadJson);
        let mut a = BatchAnalyzer::new(10, false).unwrap();
        assert_eq!(
            ingest(&mut a, r#"[{"x":"\ud83d\ude00","id":1e-400}]"#).unique,
            1
        );
        assert!(a.contains(&IdValue::Int(0)));
    }

    #[test]
    fn body_shapes() {
        let mut a = BatchAnalyzer::new(1000, false).unwrap();
        let n = |a: &mut BatchAnalyzer, b: &str| {
            let r = ingest(a, b);
            r.unique + r.duplicates
        };
        assert_eq!(n(&mut a, "[]"), 0);
        assert_eq!(n(&mut a, r#"{"id":"one"}"#), 1);
        assert_eq!(
            n(
                &mut a,
                r#"{"messages":[{"id":"m1"},{"id":"m2"}],"packet_id":"p"}"#
            ),
            2
        );
        // log_messages wins over messages; a null one falls back to messages
        assert_eq!(
            n(&mut a, r#"{"messages":[{}],"log_messages":[{},{},{}]}"#),
            3
        );
        assert_eq!(n(&mut a, r#"{"log_messages":null,"messages":[{},{}]}"#), 2);
        assert_eq!(n(&mut a, r#"{"messages":null,"id":"solo"}"#), 1);
        // the last of repeated keys wins
        assert_eq!(n(&mut a, r#"{"messages":"x","messages":[{},{}]}"#), 2);
        assert_eq!(
            n(
                &mut a,
                "{\"id\":\"n1\"}\n\n[{\"id\":\"n2\"},{}]\r\n{\"messages\":[{}]}\r{}\n"
            ),
            5
        );
        assert_eq!(n(&mut a, "\n\n[{}]\n"), 1);
    }

    #[test]
    fn error_verdicts() {
        let code = |b: &[u8]| err(b).0;
        for b in [
            &b"not json"[..],
            b"",
            b"  ",
            b"{\"a\": ",
            b"[1] [2]",
            b"[1]\n[",
            b"\xff[]",
            b"[1,]",
        ] {
            assert_eq!(
                code(b),
                ErrorCode::BadJson,
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(
            err(b"42"),
            (
                ErrorCode::BadSchema,
                "body must be a JSON array or object, not int".into()
            )
        );
        assert_eq!(
            err(b"\"t\"").1,
            "body must be a JSON array or object, not str"
        );
        assert_eq!(
            err(b"1e300").1,
            "body must be a JSON array or object, not float"
        );
        assert_eq!(
            err(b"true").1,
            "body must be a JSON array or object, not bool"
        );
        assert_eq!(
            err(b"null").1,
            "body must be a JSON array or object, not NoneType"
        );
        assert_eq!(
            err(br#"{"messages":"nope"}"#).1,
            "packet field 'messages'/'log_messages' must be an array"
        );
        assert_eq!(
            err(br#"[{"id":true}, 3]"#).1,
            "message 1 is not a JSON object"
        );
        assert_eq!(
            err(br#"[{"id":"a"}, {"id":[1]}, {"level":1}]"#).1,
            "message 1: 'id' must be a string or number"
        );
        assert_eq!(
            err(br#"[{"id":"a"}, {"id":false}]"#).1,
            "message 1: 'id' must be a string or number"
        );
        assert_eq!(
            err(br#"[{"id":"a"}, {"source":{"a":1}, "level": 2}]"#).1,
            "message 1: 'level' must be a string or null"
        );
        assert_eq!(err(b"{\"id\":1}\n42\n[").0, ErrorCode::BadSchema);
        assert!(err(b"{\"id\":1}\n[\n42")
            .1
            .starts_with("line 2 is not JSON"));
    }

    #[test]
    fn depth_limit_is_orjsons() {
        let nest = |d: usize| format!("{}{}", "[".repeat(d), "]".repeat(d));
        let mut a = BatchAnalyzer::new(10, false).unwrap();
        assert!(a.ingest(nest(1024).as_bytes()).is_err()); // elements are not objects
        assert_eq!(err(nest(1024).as_bytes()).0, ErrorCode::BadSchema);
        assert_eq!(err(nest(1025).as_bytes()).0, ErrorCode::BadJson);
        let obj = |d: usize| format!("[{}1{}]", "{\"a\":".repeat(d - 1), "}".repeat(d - 1));
        assert!(a.ingest(obj(1024).as_bytes()).is_ok());
        assert_eq!(err(obj(1025).as_bytes()).0, ErrorCode::BadJson);
    }

    #[test]
    fn rejected_body_changes_nothing() {
        let mut a = BatchAnalyzer::new(100, false).unwrap();
        assert!(a.ingest(br#"[{"id":"a"},{"id":"b","level":{}}]"#).is_err());
        assert!(a.window().is_empty());
        assert_eq!(ingest(&mut a, r#"[{"id":"a"}]"#).unique, 1);
    }

    #[test]
    fn scratch_buffers_shrink_after_a_huge_batch() {
        let mut a = BatchAnalyzer::new(1 << 20, false).unwrap();
        let mut body = b"[".to_vec();
        for i in 0..200_000 {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(format!("{{\"id\":\"m-{i}\"}}").as_bytes());
        }
        body.push(b']');
        let big = a.ingest(&body).unwrap();
        assert_eq!(big.unique, 200_000);
        let after = a.scratch_bytes();
        let small = a.ingest(br#"[{"id":"x"}]"#).unwrap();
        assert_eq!(small.unique, 1);
        assert!(
            after <= (1 << 16) * 128 + 16 * (1 << 16),
            "{after} bytes kept"
        );
        assert_eq!(a.ingest(&body).unwrap().duplicates, 200_000); // still remembered
    }
}
