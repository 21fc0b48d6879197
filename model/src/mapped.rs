//! What became of one line once parsed and mapped ([`Mapped`]), the one
//! function that does it for every reader ([`map_line`]), and the observer
//! the pipeline's sequencer calls with it, in input order.

use std::io;

use tsem_ingest::{lenient, EventType, ExportKind, Parser, Record, Serial, Task};

use crate::{Coefficient, Digest, Mapper, Outcome};

/// The result of parsing and mapping one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// An empty line (not a record).
    Blank,
    /// A hardware aggregate record.
    Aggregate(Digest),
    /// A security event with its coefficient.
    Event {
        /// The coefficient.
        coefficient: Coefficient,
        /// Export kind (`None` for a trajectory line).
        kind: Option<ExportKind>,
        /// The task, when the record names one.
        task: Option<Task>,
        /// The known event type (`None`: generic mapping of an unknown name).
        event_type: Option<EventType>,
        /// The kernel's numbering of the event, when printed.
        serial: Option<Serial>,
    },
    /// A v3 `log{}` notice (nothing to model).
    LogNotice,
    /// The line could not be used.
    Error {
        /// What is wrong.
        message: String,
        /// Export kind, if it got that far.
        kind: Option<ExportKind>,
        /// The task, if it got that far.
        task: Option<Task>,
        /// The kernel's numbering of the event, if it got that far.
        serial: Option<Serial>,
    },
}

/// Called by the sequencer for every line, in input order.
pub trait Observer {
    /// One line and what became of it; `outcome` is the model's result for events.
    fn line(
        &mut self,
        source: &str,
        number: u64,
        bytes: &[u8],
        mapped: &Mapped,
        outcome: Option<&Outcome>,
    ) -> io::Result<()>;
}

/// An observer that ignores everything.
pub struct NoObserver;

impl Observer for NoObserver {
    fn line(
        &mut self,
        _: &str,
        _: u64,
        _: &[u8],
        _: &Mapped,
        _: Option<&Outcome>,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// Parses and maps one line. A line the strict parser refuses still names
/// its task when the header can be read: the task of a synchronous event
/// sleeps until answered, whatever its bytes.
pub fn map_line(parser: &mut Parser, mapper: &Mapper, bytes: &[u8]) -> Mapped {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Mapped::Blank;
    }
    let parsed = parser.parse(bytes, |record| match record {
        Record::Aggregate { value } => match value.parse::<Digest>() {
            Ok(d) => Mapped::Aggregate(d),
            Err(e) => Mapped::Error {
                message: format!("aggregate.value: {e}"),
                kind: Some(ExportKind::Aggregate),
                task: None,
                serial: None,
            },
        },
        Record::LogNotice { .. } => Mapped::LogNotice,
        Record::Event(view) => {
            let task = view.task();
            let serial = view.serial();
            match mapper.coefficient(&view) {
                Ok(coefficient) => Mapped::Event {
                    coefficient,
                    kind: view.export,
                    task,
                    event_type: view.event_type,
                    serial,
                },
                Err(e) => Mapped::Error {
                    message: format!("{}: {e}", view.type_name),
                    kind: view.export,
                    task,
                    serial,
                },
            }
        }
    });
    parsed.unwrap_or_else(|e| {
        // The task of a synchronous event sleeps until answered, whatever its
        // bytes: find it in the header the kernel writes first.
        let h = lenient::scan_header(bytes);
        Mapped::Error {
            message: e.to_string(),
            kind: h.kind,
            task: h.task(),
            serial: h.serial(),
        }
    })
}
