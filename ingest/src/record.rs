//! Zero-copy parsing of one export record or trajectory line into a typed,
//! borrowed view (kernel-interface.md K4.2-K4.7).
//!
//! The line is copied once into a reused, padded buffer; `simd-json` builds a
//! flat tape over it (no per-event tree of allocations) and unescapes strings in
//! place, so every string of the view borrows from that buffer.

use simd_json::prelude::*;
use simd_json::tape::Value;
use simd_json::{Buffers, Tape};

use crate::event_type::EventType;

/// Default upper bound on one record, in bytes. Kernel records are a few KiB at
/// most (a pathname is at most 4 KiB); anything much larger is hostile input.
pub const DEFAULT_MAX_RECORD_LEN: usize = 1 << 20;

/// Why a line is not a usable record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line is longer than the configured maximum.
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// Length of the line.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The line is not valid JSON (includes invalid UTF-8 and nesting too deep).
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The top-level value is not an object.
    #[error("record is not a JSON object")]
    NotAnObject,
    /// A required key is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A key holds a value of the wrong JSON type.
    #[error("{key} must be {expected}")]
    WrongType {
        /// Which key.
        key: &'static str,
        /// What was expected ("a string", "an object").
        expected: &'static str,
    },
    /// `export.type` names no known record kind.
    #[error("unknown export type {0:?}")]
    UnknownExportType(String),
}

/// The kind of an export record (`export.type`, kernel-interface.md K4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExportKind {
    /// The namespace's hardware aggregate, sent once at creation.
    Aggregate,
    /// A synchronous event: the task sleeps until the TMA answers.
    Event,
    /// An event from atomic context: nobody waits for an answer.
    AsyncEvent,
    /// An event of a task already marked untrusted.
    Log,
}

impl ExportKind {
    /// The `export.type` text.
    pub fn name(self) -> &'static str {
        match self {
            ExportKind::Aggregate => "aggregate",
            ExportKind::Event => "event",
            ExportKind::AsyncEvent => "async_event",
            ExportKind::Log => "log",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<ExportKind> {
        Some(match name {
            "aggregate" => ExportKind::Aggregate,
            "event" => ExportKind::Event,
            "async_event" => ExportKind::AsyncEvent,
            "log" => ExportKind::Log,
            _ => return None,
        })
    }
}

/// A JSON object of the parsed line.
#[derive(Clone, Copy, Debug)]
pub struct Obj<'a>(Value<'a, 'a>);

/// A value of an object member: a string, a nested object, or something else.
#[derive(Clone, Copy, Debug)]
pub enum Member<'a> {
    /// A JSON string, unescaped by Quixote's rule.
    Str(&'a str),
    /// A nested object.
    Obj(Obj<'a>),
    /// Any other JSON value (numbers, arrays, literals): never produced by the kernel.
    Other,
}

impl<'a> Obj<'a> {
    fn member(v: Value<'a, 'a>) -> Member<'a> {
        if let Some(s) = v.into_string() {
            Member::Str(s)
        } else if v.is_object() {
            Member::Obj(Obj(v))
        } else {
            Member::Other
        }
    }

    /// The member named `key` (the first one if the key is duplicated).
    pub fn get(&self, key: &str) -> Option<Member<'a>> {
        self.0.get(key).map(Self::member)
    }

    /// The string member `key`: `Ok(None)` when absent, an error when not a string.
    pub fn str(&self, key: &'static str) -> Result<Option<&'a str>, ParseError> {
        match self.get(key) {
            None => Ok(None),
            Some(Member::Str(s)) => Ok(Some(s)),
            Some(_) => Err(ParseError::WrongType {
                key,
                expected: "a string",
            }),
        }
    }

    /// The object member `key`: `Ok(None)` when absent, an error when not an object.
    pub fn obj(&self, key: &'static str) -> Result<Option<Obj<'a>>, ParseError> {
        match self.get(key) {
            None => Ok(None),
            Some(Member::Obj(o)) => Ok(Some(o)),
            Some(_) => Err(ParseError::WrongType {
                key,
                expected: "an object",
            }),
        }
    }

    /// The members in document order.
    pub fn members(&self) -> impl Iterator<Item = (&'a str, Member<'a>)> + 'a {
        let obj = self.0.as_object();
        obj.into_iter()
            .flat_map(|o| o.iter())
            .map(|(k, v)| (k, Self::member(v)))
    }

    /// Every string leaf as (dotted path below `prefix`, value), in document
    /// order: the fields two descriptions of an event can be compared by.
    pub fn leaves(&self, prefix: &str, out: &mut Vec<(String, String)>) {
        for (k, m) in self.members() {
            let path = if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            };
            match m {
                Member::Str(s) => out.push((path, s.to_owned())),
                Member::Obj(inner) => inner.leaves(&path, out),
                Member::Other => out.push((path, "(not a string)".to_owned())),
            }
        }
    }

    /// The first string member named `key` anywhere below this object (depth first).
    pub fn find_str(&self, key: &str) -> Option<&'a str> {
        self.members().find_map(|(k, m)| match m {
            Member::Str(s) if k == key => Some(s),
            Member::Obj(inner) => inner.find_str(key),
            _ => None,
        })
    }

    /// What an event acts on, to pair two descriptions of "the same" event: the
    /// first pathname in the CELL, else its socket address
    /// (`af_inet.port=20480 af_inet.address=16777343`), else empty.
    pub fn event_target(cell: Option<Obj<'a>>) -> String {
        let Some(cell) = cell else {
            return String::new();
        };
        if let Some(p) = cell.find_str("pathname") {
            return p.to_owned();
        }
        match cell.get("addr") {
            Some(Member::Obj(addr)) => {
                let mut leaves = Vec::new();
                addr.leaves("", &mut leaves);
                leaves
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            _ => String::new(),
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.0.as_object().map_or(0, |o| o.len())
    }

    /// True when the object has no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A security event description: an `event`/`async_event`/`log` export record
/// or a trajectory/forensics line.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    /// The export wrapper's kind; `None` for a bare trajectory line.
    pub export: Option<ExportKind>,
    /// The `event{}` header.
    pub header: Obj<'a>,
    /// `event.type` as printed.
    pub type_name: &'a str,
    /// The known event type, or `None` for a name not in the table (mapped generically).
    pub event_type: Option<EventType>,
    /// `event.task_id` (hex text, not yet decoded).
    pub task_id: &'a str,
    /// The `COE{}` object.
    pub coe: Obj<'a>,
    /// The CELL object named after the type, when present.
    pub cell: Option<Obj<'a>>,
}

impl<'a> EventView<'a> {
    /// `event.pid`, present in export records.
    pub fn pid(&self) -> Option<&'a str> {
        self.header.str("pid").ok().flatten()
    }

    /// `event.context` (the namespace id), printed by v4 and later kernels.
    pub fn context(&self) -> Option<&'a str> {
        self.header.str("context").ok().flatten()
    }

    /// `event.number`, the kernel's count of the namespace's events
    /// (v4 and later kernels): a gap means an event never exported.
    pub fn number(&self) -> Option<&'a str> {
        self.header.str("number").ok().flatten()
    }

    /// `event.tnum`, present in export records of 2025 kernels.
    pub fn tnum(&self) -> Option<&'a str> {
        self.header.str("tnum").ok().flatten()
    }

    /// `event.process` (the task's `comm`).
    pub fn process(&self) -> Option<&'a str> {
        self.header.str("process").ok().flatten()
    }

    /// `event.p_task_id`, when printed (v3 and later kernels).
    pub fn p_task_id(&self) -> Option<&'a str> {
        self.header.str("p_task_id").ok().flatten()
    }
}

/// One parsed line.
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    /// `{"export": {"type": "aggregate"}, "aggregate": {"value": HEX}}`.
    Aggregate {
        /// The aggregate as hex text.
        value: &'a str,
    },
    /// A security event description.
    Event(EventView<'a>),
    /// The v3 `log{}` notice of an untrusted task (no description to model).
    LogNotice {
        /// `log.process`.
        process: &'a str,
        /// `log.event` (the event name).
        event: &'a str,
        /// `log.action` (`LOG` or `DENY`).
        action: &'a str,
    },
}

/// Reusable parser state: the padded line buffer, simd-json's buffers and the tape.
pub struct Parser {
    buffers: Buffers,
    input: Vec<u8>,
    tape: Option<Tape<'static>>,
    max_len: usize,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORD_LEN)
    }
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser")
            .field("max_len", &self.max_len)
            .finish()
    }
}

/// Copies `line` into `out`, rewriting backslash escapes to Quixote's rule
/// (mapping.md M3.1: the backslash is dropped and the next character taken literally).
/// `\"` and `\\` are kept for the JSON parser, which then yields the same bytes;
/// every other escape (`\n`, `\u0061`, ...) loses its backslash before parsing,
/// so JSON decoding cannot turn it into something Quixote would not hash.
fn copy_with_quixote_escapes(line: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c == b'\\' && i + 1 < line.len() {
            let next = line[i + 1];
            if next == b'"' || next == b'\\' {
                out.extend_from_slice(&[c, next]);
            } else {
                out.push(next);
            }
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
}

impl Parser {
    /// A parser that rejects records longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Parser {
            buffers: Buffers::new(4096),
            input: Vec::with_capacity(4096 + simd_json::INPUT_PADDING),
            tape: Some(Tape::null().reset()),
            max_len,
        }
    }

    /// The record length limit.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Parses one line (without its `\n`; a trailing `\r` is ignored) and calls
    /// `f` with the record view. The view borrows the parser's buffers, hence
    /// the callback.
    pub fn parse<R>(
        &mut self,
        line: &[u8],
        f: impl FnOnce(Record<'_>) -> R,
    ) -> Result<R, ParseError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max_len {
            return Err(ParseError::TooLong {
                len: line.len(),
                max: self.max_len,
            });
        }
        self.input.clear();
        if memchr::memchr(b'\\', line).is_some() {
            copy_with_quixote_escapes(line, &mut self.input);
        } else {
            self.input.extend_from_slice(line);
        }
        let len = self.input.len();
        self.input.resize(len + simd_json::INPUT_PADDING, 0);
        let mut tape: Tape<'_> = self.tape.take().unwrap_or_else(|| Tape::null().reset());
        let result =
            match simd_json::fill_tape_padded(&mut self.input, len, &mut self.buffers, &mut tape) {
                Ok(()) => classify(tape.as_value()).map(f),
                Err(e) => Err(ParseError::Json(diagnose(line, &e))),
            };
        self.tape = Some(tape.reset());
        result
    }
}

/// A precise message for a line simd-json refused: its own positions are
/// coarse for some errors (UTF-8 and stage-1 failures report offset 0).
fn diagnose(line: &[u8], error: &simd_json::Error) -> String {
    if let Err(e) = std::str::from_utf8(line) {
        return format!("invalid UTF-8 at byte {}", e.valid_up_to());
    }
    if let Some(at) = line.iter().position(|&b| b < 0x20 && b != b'\t') {
        return format!(
            "raw control character 0x{:02x} at byte {at} (JSON requires it escaped)",
            line[at]
        );
    }
    let (mut depth, mut in_string, mut escaped) = (0i64, false, false);
    for &b in line {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => depth += 1,
            (false, _, b'}' | b']') => depth -= 1,
            _ => {}
        }
    }
    if in_string || depth > 0 {
        return format!(
            "truncated record ({} unclosed bracket(s){})",
            depth.max(0),
            if in_string { ", open string" } else { "" }
        );
    }
    error.to_string()
}

fn classify<'a>(root: Value<'a, 'a>) -> Result<Record<'a>, ParseError> {
    if !root.is_object() {
        return Err(ParseError::NotAnObject);
    }
    let root = Obj(root);
    let export = match root.obj("export")? {
        None => None,
        Some(wrapper) => {
            let name = wrapper
                .str("type")?
                .ok_or(ParseError::Missing("export.type"))?;
            Some(
                ExportKind::from_name(name)
                    .ok_or_else(|| ParseError::UnknownExportType(name.to_owned()))?,
            )
        }
    };
    match export {
        Some(ExportKind::Aggregate) => {
            let agg = root
                .obj("aggregate")?
                .ok_or(ParseError::Missing("aggregate{}"))?;
            let value = agg
                .str("value")?
                .ok_or(ParseError::Missing("aggregate.value"))?;
            return Ok(Record::Aggregate { value });
        }
        Some(ExportKind::Log) if root.get("event").is_none() => {
            let log = root
                .obj("log")?
                .ok_or(ParseError::Missing("log{} or event{}"))?;
            let field = |k: &'static str| -> Result<&'a str, ParseError> {
                log.str(k)?.ok_or(ParseError::Missing(k))
            };
            return Ok(Record::LogNotice {
                process: field("process")?,
                event: field("event")?,
                action: field("action")?,
            });
        }
        _ => {}
    }
    let header = root.obj("event")?.ok_or(ParseError::Missing("event{}"))?;
    let type_name = header
        .str("type")?
        .ok_or(ParseError::Missing("event.type"))?;
    let task_id = header
        .str("task_id")?
        .ok_or(ParseError::Missing("event.task_id"))?;
    let coe = root.obj("COE")?.ok_or(ParseError::Missing("COE{}"))?;
    let cell = match root.get(type_name) {
        Some(Member::Obj(o)) => Some(o),
        None => None,
        Some(_) => {
            return Err(ParseError::WrongType {
                key: "the CELL named after event.type",
                expected: "an object",
            })
        }
    };
    Ok(Record::Event(EventView {
        export,
        header,
        type_name,
        event_type: EventType::from_name(type_name),
        task_id,
        coe,
        cell,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"event": {"context": "3", "number": "5", "process": "bash", "type": "capable", "ttd": "10", "p_ttd": "9", "task_id": "647110c3e238dca7ec813f0998fa58cd91c2a60d8e19f5bbe048f9566f1cb189", "p_task_id": "647110c3e238dca7ec813f0998fa58cd91c2a60d8e19f5bbe048f9566f1cb189", "ts": "1000"}, "COE": {"uid": "0", "euid": "0", "suid": "0", "gid": "0", "egid": "0", "sgid": "0", "fsuid": "0", "fsgid": "0", "capeff": "0x1ffffffffff"}, "capable": {"cap": "8", "opts": "0"}}"#;

    fn with_event<R>(line: &str, f: impl FnOnce(EventView<'_>) -> R) -> R {
        Parser::default()
            .parse(line.as_bytes(), |r| match r {
                Record::Event(e) => f(e),
                other => panic!("not an event: {other:?}"),
            })
            .unwrap()
    }

    #[test]
    fn trajectory_line_becomes_an_event_view() {
        with_event(SAMPLE, |e| {
            assert_eq!(e.export, None);
            assert_eq!(e.event_type, Some(EventType::Capable));
            assert_eq!(e.process(), Some("bash"));
            assert_eq!(e.cell.unwrap().str("cap").unwrap(), Some("8"));
            assert_eq!(e.coe.str("capeff").unwrap(), Some("0x1ffffffffff"));
        });
    }

    #[test]
    fn export_wrapper_sets_the_kind_and_keeps_pid_and_tnum() {
        let line = SAMPLE.replacen(
            r#"{"event": {"#,
            r#"{"export": {"type": "async_event"}, "event": {"pid": "42", "tnum": "7", "#,
            1,
        );
        with_event(&line, |e| {
            assert_eq!(e.export, Some(ExportKind::AsyncEvent));
            assert_eq!(e.pid(), Some("42"));
            assert_eq!(e.tnum(), Some("7"));
        });
    }

    #[test]
    fn aggregate_and_v3_log_records_are_recognised() {
        let mut p = Parser::default();
        let agg = br#"{"export": {"type": "aggregate"}, "aggregate": {"value": "00ff"}}"#;
        p.parse(agg, |r| {
            assert!(matches!(r, Record::Aggregate { value: "00ff" }))
        })
        .unwrap();
        let log = br#"{"export": {"type": "log"}, "log": {"process": "cat", "event": "file_open", "action": "DENY"}}"#;
        p.parse(log, |r| {
            assert!(matches!(
                r,
                Record::LogNotice {
                    process: "cat",
                    event: "file_open",
                    action: "DENY"
                }
            ))
        })
        .unwrap();
    }

    #[test]
    fn escapes_follow_quixote_not_json() {
        let line = SAMPLE.replace(r#""process": "bash""#, r#""process": "a\"b\\c\u0061\n""#);
        with_event(&line, |e| assert_eq!(e.process(), Some("a\"b\\cu0061n")));
    }

    #[test]
    fn leaves_targets_and_nested_lookups() {
        let line = r#"{"event": {"type": "socket_connect", "task_id": "aa"}, "COE": {"uid": "0"}, "socket_connect": {"sock": {"family": "2"}, "addr": {"af_inet": {"port": "20480", "address": "1"}}}}"#;
        with_event(line, |e| {
            let mut leaves = Vec::new();
            e.cell.unwrap().leaves("", &mut leaves);
            assert_eq!(leaves[0], ("sock.family".to_owned(), "2".to_owned()));
            assert_eq!(
                Obj::event_target(e.cell),
                "af_inet.port=20480 af_inet.address=1"
            );
            assert_eq!(e.cell.unwrap().find_str("port"), Some("20480"));
            assert_eq!(Obj::event_target(None), "");
        });
    }

    #[test]
    fn carriage_return_before_the_newline_is_ignored() {
        let line = format!("{SAMPLE}\r");
        with_event(&line, |e| assert_eq!(e.type_name, "capable"));
    }

    #[test]
    fn unknown_event_names_parse_without_a_type() {
        let line = SAMPLE.replace(r#""type": "capable""#, r#""type": "file_truncate""#);
        with_event(&line, |e| {
            assert_eq!(e.event_type, None);
            assert_eq!(e.type_name, "file_truncate");
            assert!(e.cell.is_none());
        });
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let mut p = Parser::new(64);
        let err = |p: &mut Parser, s: &str| p.parse(s.as_bytes(), |_| ()).unwrap_err();
        assert!(matches!(err(&mut p, "{\"a\": }"), ParseError::Json(_)));
        assert_eq!(err(&mut p, "[1]"), ParseError::NotAnObject);
        assert_eq!(err(&mut p, "{}"), ParseError::Missing("event{}"));
        assert!(matches!(
            err(&mut p, &"x".repeat(65)),
            ParseError::TooLong { len: 65, max: 64 }
        ));
        assert_eq!(
            err(&mut p, r#"{"export": {"type": "x"}}"#),
            ParseError::UnknownExportType("x".into())
        );
        let mut p = Parser::default();
        let no_coe = SAMPLE.replace("\"COE\"", "\"XOE\"");
        assert_eq!(err(&mut p, &no_coe), ParseError::Missing("COE{}"));
    }

    #[test]
    fn the_parser_is_reusable_after_an_error() {
        let mut p = Parser::default();
        assert!(p.parse(b"{", |_| ()).is_err());
        p.parse(SAMPLE.as_bytes(), |r| {
            assert!(matches!(r, Record::Event(_)))
        })
        .unwrap();
    }
}
