//! Who an event is about and where it stands in its namespace's numbering:
//! the fields a verdict and the loss count need, read from the parsed
//! header or, for a line the strict parser refused, from the lenient scan.

use crate::lenient::LenientHeader;
use crate::record::EventView;

/// Identity of a task waiting for (or owed) a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    /// Global PID.
    pub pid: u64,
    /// Task number (2025 kernels); `None` on kernels that do not print it.
    pub tnum: Option<u64>,
}

/// Where an event stands in its namespace's numbering (`event.context` and
/// `event.number`, v4 and later kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Serial {
    /// The namespace (`context`).
    pub context: u64,
    /// The event's number in it.
    pub number: u64,
}

impl EventView<'_> {
    /// The task the event names (`pid`, `tnum`), when it names one.
    pub fn task(&self) -> Option<Task> {
        let pid = self.pid()?.parse().ok()?;
        let tnum = self.tnum().and_then(|t| t.parse().ok());
        Some(Task { pid, tnum })
    }

    /// The event's numbering (`context`, `number`), when printed.
    pub fn serial(&self) -> Option<Serial> {
        Some(Serial {
            context: self.context()?.parse().ok()?,
            number: self.number()?.parse().ok()?,
        })
    }
}

impl LenientHeader {
    /// The task the header names, when its pid could be read.
    pub fn task(&self) -> Option<Task> {
        self.pid.map(|pid| Task {
            pid,
            tnum: self.tnum,
        })
    }

    /// The header's numbering, when both fields could be read.
    pub fn serial(&self) -> Option<Serial> {
        self.context
            .zip(self.number)
            .map(|(context, number)| Serial { context, number })
    }
}
