//! Reading TSEM security event descriptions: line framing and zero-copy,
//! typed parsing of export records and trajectory lines.
//!
//! The crate knows the JSON shapes of kernel-interface.md K4 and the text conventions of mapping.md M3
//! (numbers, digests, escapes); it knows nothing about hashing or models.
#![warn(missing_docs)]

pub mod event_type;
pub mod export;
pub mod follow;
pub mod hex;
pub mod lenient;
pub mod lines;
pub mod number;
pub mod record;
pub mod source;
pub mod tap;
pub mod task;

pub use event_type::EventType;
pub use lines::{LineReader, Lines};
pub use number::{parse_c_integer, CInteger, NumberError};
pub use record::{
    EventView, ExportKind, Member, Obj, ParseError, Parser, Record, DEFAULT_MAX_RECORD_LEN,
};
pub use source::{
    for_each_record, open_path, Fetch, MappedFile, MemorySource, Oversized, RecordSource,
    StreamSource, TimedReader, TimedSource, OVERSIZED_HEAD_LEN,
};
pub use tap::{LineTap, TapBatch, TeeTap};
pub use task::{Serial, Task};
