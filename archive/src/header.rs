//! The few header fields the index and the filters need, read from a record
//! without a full JSON parse.
//!
//! Why not [`tsem_ingest::Parser`]: the archive thread runs beside the pipeline
//! and must stay cheap; a full parse of every line (COE, CELL, every string
//! unescaped) costs as much as mapping it. This scanner walks the top-level
//! object structurally (strings, escapes and nesting are honoured, so a
//! pathname that contains `"event": {` cannot fool it), reads the string
//! members of the `event{}` (or v3 `log{}`, or `export{}`) object, and stops
//! as soon as the header is complete. On every line the kernel writes it
//! yields exactly what the full parser yields (first key wins, Quixote's
//! unescape rule); on malformed lines it yields what it could read, which only
//! affects statistics and filters, never the archived bytes.

use std::borrow::Cow;

/// What the index and the filters know about one record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordInfo<'a> {
    /// `event.type`; for a v3 log notice `log.event`; for other records
    /// (the aggregate) `export.type`. `None` when the line has none of these.
    pub kind: Option<Cow<'a, str>>,
    /// `event.process` (or `log.process`).
    pub process: Option<Cow<'a, str>>,
    /// `event.ts`, when it is a decimal number.
    pub ts: Option<u64>,
    /// `event.task_id` as printed.
    pub task_id: Option<Cow<'a, str>>,
}

/// The string members of one object that the header needs.
#[derive(Default)]
struct Wanted<'a> {
    kind: Option<&'a [u8]>,
    process: Option<&'a [u8]>,
    ts: Option<&'a [u8]>,
    task_id: Option<&'a [u8]>,
}

/// A cursor over a line.
struct Scan<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    /// A string at the cursor (after its opening quote): its raw bytes,
    /// escapes untouched.
    fn string_body(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        loop {
            let at = self.i + memchr::memchr2(b'"', b'\\', self.s.get(self.i..)?)?;
            if self.s[at] == b'"' {
                self.i = at + 1;
                return Some(&self.s[start..at]);
            }
            self.i = at + 2;
        }
    }

    /// Skips one value of any kind.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.string_body().map(|_| ())
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                while self.i < self.s.len() {
                    match self.s[self.i] {
                        b'"' => {
                            self.i += 1;
                            self.string_body()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                None
            }
            _ => {
                while self.i < self.s.len() && !matches!(self.s[self.i], b',' | b'}' | b']') {
                    self.i += 1;
                }
                Some(())
            }
        }
    }

    /// Walks the members of the object at the cursor, calling `f(key)` with
    /// the cursor on each value; `f` returns whether it consumed the value.
    /// Stops early when `f` returns `Stop`.
    fn members(&mut self, mut f: impl FnMut(&mut Self, &'a [u8]) -> Step) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            if !self.eat(b'"') {
                return None;
            }
            let key = self.string_body()?;
            if !self.eat(b':') {
                return None;
            }
            match f(self, key) {
                Step::Skip => self.skip_value()?,
                Step::Consumed => {}
                Step::Stop => return Some(()),
            }
            if self.eat(b',') {
                continue;
            }
            return self.eat(b'}').then_some(());
        }
    }

    /// The string members of the object at the cursor that `wanted` names.
    fn header(&mut self, keys: &HeaderKeys) -> Option<Wanted<'a>> {
        let mut w = Wanted::default();
        self.members(|scan, key| {
            let slot = if key == keys.kind {
                &mut w.kind
            } else if Some(key) == keys.process {
                &mut w.process
            } else if key == b"ts" && keys.full {
                &mut w.ts
            } else if key == b"task_id" && keys.full {
                &mut w.task_id
            } else {
                return Step::Skip;
            };
            if slot.is_some() || scan.peek() != Some(b'"') {
                return Step::Skip;
            }
            scan.i += 1;
            *slot = scan.string_body();
            Step::Consumed
        })?;
        Some(w)
    }
}

/// What a member callback did with the value.
enum Step {
    Skip,
    Consumed,
    Stop,
}

/// The keys of the header-like objects.
struct HeaderKeys {
    kind: &'static [u8],
    process: Option<&'static [u8]>,
    full: bool,
}

const EVENT: HeaderKeys = HeaderKeys {
    kind: b"type",
    process: Some(b"process"),
    full: true,
};
const LOG: HeaderKeys = HeaderKeys {
    kind: b"event",
    process: Some(b"process"),
    full: false,
};
const EXPORT: HeaderKeys = HeaderKeys {
    kind: b"type",
    process: None,
    full: false,
};

/// Quixote's unescape rule (mapping.md M3.1): a backslash is dropped and the next
/// character taken literally.
fn text(raw: &[u8]) -> Cow<'_, str> {
    if !raw.contains(&b'\\') {
        return match std::str::from_utf8(raw) {
            Ok(t) => Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(raw),
        };
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            i += 1;
        }
        out.push(raw[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn decimal(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 20 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// Reads the header fields of one record (a line without its `\n`).
pub fn record_info(line: &[u8]) -> RecordInfo<'_> {
    let mut scan = Scan { s: line, i: 0 };
    let mut event = None;
    let mut log = None;
    let mut export = None;
    // Malformed input simply leaves fields unset.
    let _ = scan.members(|scan, key| {
        let (slot, keys) = match key {
            b"event" => (&mut event, &EVENT),
            b"log" => (&mut log, &LOG),
            b"export" => (&mut export, &EXPORT),
            _ => return Step::Skip,
        };
        if slot.is_some() || scan.peek() != Some(b'{') {
            return Step::Skip;
        }
        *slot = scan.header(keys);
        if slot.is_none() {
            return Step::Stop;
        }
        // The event header is all we need: the COE and CELL that follow
        // cannot change what the index records.
        if key == b"event" {
            Step::Stop
        } else {
            Step::Consumed
        }
    });
    match (event, log) {
        (Some(e), _) => RecordInfo {
            kind: e.kind.map(text),
            process: e.process.map(text),
            ts: e.ts.and_then(decimal),
            task_id: e.task_id.map(text),
        },
        (None, Some(l)) => RecordInfo {
            kind: l.kind.map(text),
            process: l.process.map(text),
            ts: None,
            task_id: None,
        },
        (None, None) => RecordInfo {
            kind: export.and_then(|x| x.kind).map(text),
            ..RecordInfo::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsem_ingest::{Parser, Record};

    const LINE: &str = r#"{"export": {"type": "event"}, "event": {"pid": "42", "tnum": "7", "process": "bash", "type": "file_open", "ttd": "10", "p_ttd": "9", "task_id": "647110c3e238dca7ec813f0998fa58cd91c2a60d8e19f5bbe048f9566f1cb189", "ts": "1000"}, "COE": {"uid": "0"}, "file_open": {"file": {"path": {"pathname": "/x\"}, \"event\": {\"type\": \"y"}}}}"#;

    #[test]
    fn reads_the_event_header() {
        let info = record_info(LINE.as_bytes());
        assert_eq!(info.kind.as_deref(), Some("file_open"));
        assert_eq!(info.process.as_deref(), Some("bash"));
        assert_eq!(info.ts, Some(1000));
        assert_eq!(
            info.task_id.as_deref(),
            Some("647110c3e238dca7ec813f0998fa58cd91c2a60d8e19f5bbe048f9566f1cb189")
        );
    }

    #[test]
    fn aggregate_log_and_garbage() {
        let agg = br#"{"export": {"type": "aggregate"}, "aggregate": {"value": "00"}}"#;
        assert_eq!(record_info(agg).kind.as_deref(), Some("aggregate"));
        let log = br#"{"export": {"type": "log"}, "log": {"process": "cat", "event": "file_open", "action": "DENY"}}"#;
        let info = record_info(log);
        assert_eq!(info.kind.as_deref(), Some("file_open"));
        assert_eq!(info.process.as_deref(), Some("cat"));
        assert_eq!(record_info(b"not json"), RecordInfo::default());
        assert_eq!(
            record_info(b"{\"event\": {\"type\": \"x"),
            RecordInfo::default()
        );
        assert_eq!(record_info(b"").kind, None);
        let odd = br#"{"event": {"type": 5, "ts": "12a", "process": "a\\\"b\nc"}}"#;
        let info = record_info(odd);
        assert_eq!(info.kind, None);
        assert_eq!(info.ts, None);
        assert_eq!(info.process.as_deref(), Some("a\\\"bnc"));
    }

    /// On every line of the conformance corpus the scanner agrees with the
    /// full parser.
    #[test]
    fn agrees_with_the_parser_on_the_corpus() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/conformance/events.jsonl"
        );
        let text = std::fs::read(path).expect("the conformance corpus beside the repository");
        let mut parser = Parser::default();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let info = record_info(line);
            parser
                .parse(line, |r| {
                    let Record::Event(v) = r else {
                        panic!("not an event")
                    };
                    assert_eq!(info.kind.as_deref(), Some(v.type_name));
                    assert_eq!(info.process.as_deref(), v.process());
                    assert_eq!(info.task_id.as_deref(), Some(v.task_id));
                    let ts = v.header.str("ts").unwrap().and_then(|t| t.parse().ok());
                    assert_eq!(info.ts, ts);
                })
                .unwrap();
        }
    }
}
