//! Turning an event description line into an export record (kernel-interface.md K4.2) by a
//! textual edit: the export wrapper and the `pid`/`tnum` members of `event{}`
//! are removed, new ones are inserted, and every other byte of the line is
//! kept as it was (the TMA must compute the coefficients of the original).

use std::fmt::Write as _;

/// Why a line cannot be sent as an event record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The line is not a JSON object (or is cut short).
    #[error("not a JSON object (syntax error near byte {0})")]
    Malformed(usize),
    /// The line has no `event` object to carry `pid`/`tnum`.
    #[error("no \"event\" object")]
    NoEvent,
}

/// One member of a JSON object, as byte positions in the line.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// The opening quote of the key.
    start: usize,
    /// The key's text between its quotes (raw, not unescaped).
    key: (usize, usize),
    /// The value, from its first to one past its last byte.
    value: (usize, usize),
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `b[i]` is `"`: the index just past the closing quote.
fn scan_string(b: &[u8], i: usize) -> Result<usize, RewriteError> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(RewriteError::Malformed(i))
}

/// The index just past the value that starts at `b[i]`.
fn scan_value(b: &[u8], i: usize) -> Result<usize, RewriteError> {
    match b.get(i) {
        None => Err(RewriteError::Malformed(i)),
        Some(b'"') => scan_string(b, i),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = scan_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err(RewriteError::Malformed(i))
        }
        Some(_) => {
            // A literal or number: up to the next delimiter.
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            if j == i {
                Err(RewriteError::Malformed(i))
            } else {
                Ok(j)
            }
        }
    }
}

/// The members of the object whose `{` is at `b[open]`.
fn members(b: &[u8], open: usize) -> Result<Vec<Member>, RewriteError> {
    let mut out = Vec::new();
    let mut i = skip_ws(b, open + 1);
    if b.get(i) == Some(&b'}') {
        return Ok(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err(RewriteError::Malformed(i));
        }
        let key_end = scan_string(b, i)?;
        let colon = skip_ws(b, key_end);
        if b.get(colon) != Some(&b':') {
            return Err(RewriteError::Malformed(colon));
        }
        let vstart = skip_ws(b, colon + 1);
        let vend = scan_value(b, vstart)?;
        out.push(Member {
            start: i,
            key: (i + 1, key_end - 1),
            value: (vstart, vend),
        });
        let next = skip_ws(b, vend);
        match b.get(next) {
            Some(b',') => i = skip_ws(b, next + 1),
            Some(b'}') => return Ok(out),
            _ => return Err(RewriteError::Malformed(next)),
        }
    }
}

/// Byte ranges that remove the members selected by `drop` together with one
/// separator each, so that what remains is still a well-formed object.
/// Returns the ranges and the number of members kept.
fn removals(b: &[u8], ms: &[Member], drop: impl Fn(&[u8]) -> bool) -> (Vec<(usize, usize)>, usize) {
    let flags: Vec<bool> = ms.iter().map(|m| drop(&b[m.key.0..m.key.1])).collect();
    let kept = flags.iter().filter(|&&f| !f).count();
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < ms.len() {
        if !flags[i] {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < ms.len() && flags[j] {
            j += 1;
        }
        // A run of dropped members [i, j): take the separator after it when
        // a kept member follows, else the one before it.
        let range = if j < ms.len() {
            (ms[i].start, ms[j].start)
        } else if i > 0 {
            (ms[i - 1].value.1, ms[j - 1].value.1)
        } else {
            (ms[i].start, ms[j - 1].value.1)
        };
        ranges.push(range);
        i = j;
    }
    (ranges, kept)
}

/// Appends `b[from..to]` (nothing when the range is empty or reversed: the
/// edits never overlap, but a malformed line must not make us panic).
fn copy(out: &mut Vec<u8>, b: &[u8], from: usize, to: usize) {
    if from < to {
        out.extend_from_slice(&b[from..to]);
    }
}

/// Writes the export record for `line` to `out` (followed by `\n`):
/// `{"export": {"type": KIND}, … "event": {"pid": "P", "tnum": "T", …} …}`.
/// A trailing `\r` of the line is dropped.
pub fn rewrite_event(
    line: &[u8],
    kind: &str,
    pid: u64,
    tnum: u64,
    out: &mut Vec<u8>,
) -> Result<(), RewriteError> {
    let b = line.strip_suffix(b"\r").unwrap_or(line);
    let open = skip_ws(b, 0);
    if b.get(open) != Some(&b'{') {
        return Err(RewriteError::Malformed(open));
    }
    let top = members(b, open)?;
    let event = top
        .iter()
        .find(|m| &b[m.key.0..m.key.1] == b"event" && b[m.value.0] == b'{')
        .ok_or(RewriteError::NoEvent)?;
    let ev = members(b, event.value.0)?;

    let (mut cuts, _) = removals(b, &top, |k| k == b"export");
    let (ev_cuts, ev_kept) = removals(b, &ev, |k| k == b"pid" || k == b"tnum");
    cuts.extend(ev_cuts);
    cuts.sort_unstable();

    let mut wrapper = String::new();
    let _ = write!(wrapper, "\"export\": {{\"type\": \"{kind}\"}}, ");
    let mut ids = String::new();
    let _ = write!(ids, "\"pid\": \"{pid}\", \"tnum\": \"{tnum}\"");
    if ev_kept > 0 {
        ids.push_str(", ");
    }
    // Insertions come before a cut that starts at the same place.
    let inserts = [(open + 1, wrapper), (event.value.0 + 1, ids)];

    out.reserve(b.len() + 64);
    let mut cursor = 0;
    let mut cut_iter = cuts.into_iter().peekable();
    for (at, text) in inserts {
        while let Some(&(s, e)) = cut_iter.peek() {
            if s >= at {
                break;
            }
            copy(out, b, cursor, s);
            cursor = cursor.max(e);
            cut_iter.next();
        }
        copy(out, b, cursor, at);
        out.extend_from_slice(text.as_bytes());
        cursor = cursor.max(at);
    }
    for (s, e) in cut_iter {
        copy(out, b, cursor, s);
        cursor = cursor.max(e);
    }
    copy(out, b, cursor, b.len());
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(line: &str, kind: &str) -> Result<String, RewriteError> {
        let mut out = Vec::new();
        rewrite_event(line.as_bytes(), kind, 1005, 7, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn bare_trajectory_line_gets_wrapper_and_ids() {
        let line = r#"{"event": {"context": "3", "type": "capable"}, "COE": {"uid": "0"}, "capable": {"cap": "8"}}"#;
        assert_eq!(
            rw(line, "event").unwrap(),
            "{\"export\": {\"type\": \"event\"}, \"event\": {\"pid\": \"1005\", \"tnum\": \"7\", \"context\": \"3\", \"type\": \"capable\"}, \"COE\": {\"uid\": \"0\"}, \"capable\": {\"cap\": \"8\"}}\n"
        );
    }

    #[test]
    fn existing_wrapper_and_ids_are_replaced() {
        let line = r#"{"export": {"type": "async_event"}, "event": {"pid": "277", "tnum": "9", "context": "6", "type": "capable"}, "COE": {}}"#;
        assert_eq!(
            rw(line, "event").unwrap(),
            r#"{"export": {"type": "event"}, "event": {"pid": "1005", "tnum": "7", "context": "6", "type": "capable"}, "COE": {}}"#
                .to_owned()
                + "\n"
        );
        // pid/tnum at the end of the object, wrapper after the payload.
        let line =
            r#"{"event": {"type": "x", "pid": "1", "tnum": "2"}, "export": {"type": "event"}}"#;
        assert_eq!(
            rw(line, "async_event").unwrap(),
            "{\"export\": {\"type\": \"async_event\"}, \"event\": {\"pid\": \"1005\", \"tnum\": \"7\", \"type\": \"x\"}}\n"
        );
        // Only pid/tnum in the event object.
        let line = r#"{"event": {"pid": "1"}, "COE": {}}"#;
        assert_eq!(
            rw(line, "event").unwrap(),
            "{\"export\": {\"type\": \"event\"}, \"event\": {\"pid\": \"1005\", \"tnum\": \"7\"}, \"COE\": {}}\n"
        );
    }

    #[test]
    fn strings_with_braces_and_escapes_are_kept_verbatim() {
        let line = "{\"event\": {\"type\": \"file_open\"}, \"file_open\": {\"path\": \"/a{b}\\\"c,d\\\\\"}}\r";
        let out = rw(line, "event").unwrap();
        assert!(
            out.ends_with("\"file_open\": {\"path\": \"/a{b}\\\"c,d\\\\\"}}\n"),
            "{out}"
        );
    }

    #[test]
    fn lines_without_an_event_object_are_refused() {
        assert_eq!(
            rw(r#"{"log": {"process": "cat"}}"#, "event"),
            Err(RewriteError::NoEvent)
        );
        assert!(matches!(
            rw(r#"{"event": {"type": "x""#, "event"),
            Err(RewriteError::Malformed(_))
        ));
        assert!(matches!(
            rw("not json", "event"),
            Err(RewriteError::Malformed(_))
        ));
    }
}
