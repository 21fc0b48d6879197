//! Selecting records by type, process, task and time, with the index used to
//! skip whole segments.

use crate::header::RecordInfo;
use crate::index::{IndexEntry, NO_TYPE};

/// Which records to keep. Each list is a choice (any of its values); the
/// lists and the time bounds must all match. An empty filter keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Record types (`event.type`; `aggregate` for the aggregate record).
    pub types: Vec<String>,
    /// Process names (`event.process`).
    pub processes: Vec<String>,
    /// Task ids (`event.task_id`, hex, any case), or prefixes of them.
    pub task_ids: Vec<String>,
    /// Only records with `ts >= since` (records without `ts` never match a time bound).
    pub since: Option<u64>,
    /// Only records with `ts <= until`.
    pub until: Option<u64>,
}

impl Filter {
    /// True when the filter keeps every record.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
            && self.processes.is_empty()
            && self.task_ids.is_empty()
            && self.since.is_none()
            && self.until.is_none()
    }

    /// False when the index entry proves that no record of the segment matches.
    pub fn may_match(&self, entry: &IndexEntry) -> bool {
        if !self.types.is_empty() && !self.types.iter().any(|t| entry.types.contains_key(t)) {
            return false;
        }
        if !self.processes.is_empty()
            && !self
                .processes
                .iter()
                .any(|p| entry.processes.contains_key(p))
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let (Some(lo), Some(hi)) = (entry.ts_min, entry.ts_max) else {
                return false;
            };
            if self.since.is_some_and(|s| hi < s) || self.until.is_some_and(|u| lo > u) {
                return false;
            }
        }
        true
    }

    /// True when the record is selected.
    pub fn matches(&self, info: &RecordInfo<'_>) -> bool {
        if !self.types.is_empty() {
            let kind = info.kind.as_deref().unwrap_or(NO_TYPE);
            if !self.types.iter().any(|t| t == kind) {
                return false;
            }
        }
        if !self.processes.is_empty() {
            let Some(p) = info.process.as_deref() else {
                return false;
            };
            if !self.processes.iter().any(|q| q == p) {
                return false;
            }
        }
        if !self.task_ids.is_empty() {
            let Some(t) = info.task_id.as_deref() else {
                return false;
            };
            let t = t.to_ascii_lowercase();
            if !self
                .task_ids
                .iter()
                .any(|want| t.starts_with(&want.to_ascii_lowercase()))
            {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(ts) = info.ts else {
                return false;
            };
            if self.since.is_some_and(|s| ts < s) || self.until.is_some_and(|u| ts > u) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::record_info;
    use crate::index::SegmentStats;

    const A: &[u8] =
        br#"{"event": {"process": "bash", "type": "file_open", "task_id": "AB12", "ts": "100"}}"#;
    const B: &[u8] =
        br#"{"event": {"process": "cat", "type": "capable", "task_id": "cd34", "ts": "200"}}"#;

    fn entry(lines: &[&[u8]]) -> IndexEntry {
        let mut s = SegmentStats::default();
        for l in lines {
            s.add(l);
        }
        IndexEntry {
            segment: String::new(),
            first_seq: 1,
            last_seq: s.records,
            records: s.records,
            bytes: s.bytes,
            file_bytes: 0,
            ts_min: s.ts_min,
            ts_max: s.ts_max,
            types: s.types,
            processes: s.processes,
            level: 3,
            closed_unix: 0,
            sha256: String::new(),
            chain: String::new(),
            recovered: None,
        }
    }

    #[test]
    fn records_and_segments_are_selected_consistently() {
        let e = entry(&[A, B]);
        let cases = [
            (Filter::default(), true, true),
            (
                Filter {
                    types: vec!["capable".into()],
                    ..Filter::default()
                },
                false,
                true,
            ),
            (
                Filter {
                    processes: vec!["bash".into(), "x".into()],
                    ..Filter::default()
                },
                true,
                false,
            ),
            (
                Filter {
                    task_ids: vec!["ab".into()],
                    ..Filter::default()
                },
                true,
                false,
            ),
            (
                Filter {
                    since: Some(150),
                    ..Filter::default()
                },
                false,
                true,
            ),
            (
                Filter {
                    until: Some(100),
                    ..Filter::default()
                },
                true,
                false,
            ),
        ];
        for (f, a, b) in cases {
            assert_eq!(f.matches(&record_info(A)), a, "{f:?}");
            assert_eq!(f.matches(&record_info(B)), b, "{f:?}");
            assert!(f.may_match(&e));
        }
        let f = Filter {
            since: Some(201),
            ..Filter::default()
        };
        assert!(!f.may_match(&e));
        let f = Filter {
            types: vec!["file_open".into()],
            ..Filter::default()
        };
        assert!(!f.may_match(&entry(&[B])));
        assert!(!Filter {
            until: Some(5),
            ..Filter::default()
        }
        .may_match(&entry(&[b"{}"])));
    }
}
