//! Who waits, in a line the strict parser refused.
//!
//! A synchronous event's task sleeps until it is answered (kernel-interface.md K5), so a
//! record whose bytes cannot be parsed (a raw control byte or invalid UTF-8
//! in a pathname, nesting past the depth limit, a cut line) must still be
//! answered. The kernel writes the export wrapper and the `event{}` header
//! first, with fixed punctuation (kernel-interface.md K4.1, K4.2):
//!
//! ```text
//! {"export": {"type": "event"}, "event": {"pid": "41", "tnum": "7", "context": "1", "number": "4", "process": …
//! ```
//!
//! so [`scan_header`] reads just that prefix, key by key, and stops at the
//! first key it does not expect: nothing after it (the process name, paths,
//! anything an attacker controls) can pose as the pid.

use crate::record::ExportKind;

/// What [`scan_header`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LenientHeader {
    /// `export.type`, when the line starts with a known export wrapper.
    pub kind: Option<ExportKind>,
    /// `event.pid`.
    pub pid: Option<u64>,
    /// `event.tnum` (2025 kernels).
    pub tnum: Option<u64>,
    /// `event.context` (v4 and later).
    pub context: Option<u64>,
    /// `event.number` (v4 and later).
    pub number: Option<u64>,
}

/// A cursor over the line's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn skip_space(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    /// Consumes `c` (after optional whitespace).
    fn eat(&mut self, c: u8) -> Option<()> {
        self.skip_space();
        (self.bytes.get(self.at) == Some(&c)).then(|| self.at += 1)
    }

    /// A string without escapes: the kernel's keys and these values have none.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.at;
        let len = self.bytes[start..]
            .iter()
            .take(64)
            .position(|&b| b == b'"')?;
        let s = &self.bytes[start..start + len];
        if s.contains(&b'\\') {
            return None;
        }
        self.at = start + len + 1;
        Some(s)
    }

    /// `"key": "value"`.
    fn pair(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let key = self.plain_string()?;
        self.eat(b':')?;
        let value = self.plain_string()?;
        Some((key, value))
    }
}

fn number(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Reads the export wrapper and the leading keys of `event{}` of a line that
/// may be invalid further on. Fields it cannot read are `None`.
pub fn scan_header(line: &[u8]) -> LenientHeader {
    let mut h = LenientHeader::default();
    let mut c = Cursor { bytes: line, at: 0 };
    let head = (|| {
        c.eat(b'{')?;
        let (key, _) = (c.plain_string()?, c.eat(b':')?);
        if key != b"export" {
            return None;
        }
        c.eat(b'{')?;
        let (key, value) = c.pair()?;
        if key != b"type" {
            return None;
        }
        h.kind = std::str::from_utf8(value)
            .ok()
            .and_then(ExportKind::from_name);
        c.eat(b'}')?;
        c.eat(b',')?;
        let key = c.plain_string()?;
        if key != b"event" {
            return None;
        }
        c.eat(b':')?;
        c.eat(b'{')
    })();
    if head.is_none() {
        return h;
    }
    while let Some((key, value)) = c.pair() {
        let slot = match key {
            b"pid" => &mut h.pid,
            b"tnum" => &mut h.tnum,
            b"context" => &mut h.context,
            b"number" => &mut h.number,
            // The header's other keys come after these: stop before any
            // text a task controls (its name, its paths).
            _ => break,
        };
        if slot.is_some() {
            // A repeated key: trust neither.
            *slot = None;
            break;
        }
        *slot = number(value);
        if c.eat(b',').is_none() {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v4_record_with_a_raw_control_byte_further_on_names_its_task() {
        let line = b"{\"export\": {\"type\": \"event\"}, \"event\": {\"pid\": \"41\", \"context\": \"1\", \"number\": \"4\", \"process\": \"sh\", \"type\": \"file_open\"}, \"file_open\": {\"path\": \"/tmp/a\x01b\"}}";
        assert_eq!(
            scan_header(line),
            LenientHeader {
                kind: Some(ExportKind::Event),
                pid: Some(41),
                tnum: None,
                context: Some(1),
                number: Some(4),
            }
        );
    }

    #[test]
    fn a_2025_record_gives_its_tnum() {
        let line = b"{\"export\": {\"type\": \"async_event\"}, \"event\": {\"pid\": \"4242\", \"tnum\": \"77\", \"context\": \"3\", \"number\": \"5\", \"process\": \"\xff\"";
        let h = scan_header(line);
        assert_eq!(h.kind, Some(ExportKind::AsyncEvent));
        assert_eq!(
            (h.pid, h.tnum, h.context, h.number),
            (Some(4242), Some(77), Some(3), Some(5))
        );
    }

    #[test]
    fn text_after_the_leading_keys_cannot_pose_as_the_pid() {
        // The process name comes first here: the scan stops at it, and a
        // `"pid"` inside a path is never reached.
        let line = b"{\"export\": {\"type\": \"event\"}, \"event\": {\"process\": \"x\", \"pid\": \"1\"}, \"file_open\": {\"path\": \"\\\"pid\\\": \\\"1\\\"\"}}";
        let h = scan_header(line);
        assert_eq!(h.kind, Some(ExportKind::Event));
        assert_eq!(h.pid, None);
        // A repeated pid is trusted in neither copy.
        let twice =
            b"{\"export\": {\"type\": \"event\"}, \"event\": {\"pid\": \"5\", \"pid\": \"6\"";
        assert_eq!(scan_header(twice).pid, None);
    }

    #[test]
    fn lines_without_the_wrapper_name_nobody() {
        for line in [
            &b""[..],
            b"{",
            b"{\"event\": {\"pid\": \"3\"}}",
            b"{\"export\": {\"type\": \"event\"}",
            b"{\"export\": {\"type\": \"event\"}, \"event\": {\"pid\": \"-3\"}}",
            b"{\"export\": {\"type\": \"event\"}, \"event\": {\"pid\": \"99999999999999999999999\"}}",
        ] {
            assert_eq!(scan_header(line).pid, None, "{}", String::from_utf8_lossy(line));
        }
        // A trajectory line has no export wrapper: nobody waits for it.
        assert_eq!(scan_header(b"{\"event\": {\"pid\": \"3\"}}").kind, None);
    }
}
