//! Archives of TSEM records: every record the TMA received, verbatim and in
//! arrival order, compressed, indexed and tamper-evident, so that models can
//! be rebuilt later under any profile and pseudonym set, runs audited and
//! compared.
//!
//! # Layout
//!
//! An archive is a directory (mode 0700; every file 0600):
//!
//! * `FORMAT`: `tsem-archive 1`, the marker and format version.
//! * `seg-<first seq, 20 digits>.zst`: a segment: a skippable zstd frame
//!   naming where in the chain it was begun (the previous segment's chain
//!   digest and its first sequence number, [`index::segment_header`]), then
//!   one zstd frame of records, each followed by `\n`, byte for byte as
//!   received (segments of writers older than the header lack it; closed
//!   ones are read all the same). Records are numbered
//!   from 1 across the whole archive (the *sequence number*); a segment's
//!   first number is in its name, the others follow by position. A segment is
//!   closed when its records reach a size ([`WriterOptions::segment_bytes`],
//!   counted uncompressed) or an age ([`WriterOptions::segment_age`]).
//! * `index.jsonl`: one JSON line ([`IndexEntry`]) per closed segment, in
//!   order: sequence range, `ts` range of the event headers (decimal ns;
//!   records without `ts` do not count), records per type and per process,
//!   sizes, the file's SHA-256, and the *chain* digest, which covers the
//!   file's digest, its sequence range and the previous segment's chain digest
//!   ([`index::chain`]). Deleting, reordering, replacing or changing any
//!   segment or entry breaks the chain or a digest there; removing the newest
//!   segments together with their entries is caught by comparing the chain
//!   head with a value kept elsewhere (`archive verify --head`).
//! * `lock`: held (`flock`) by the one writer.
//!
//! # Durability
//!
//! The writer hands records to zstd in chunks and, at most every
//! [`WriterOptions::sync_interval`] (200 ms by default; also while the input
//! is idle, from a background thread) flushes the compressor (a complete zstd
//! block), writes and `fdatasync`s the segment. A record is *acknowledged*
//! (durable) once that has happened after it was appended; the durable
//! sequence number is reported ([`DurableWriter::on_durable`],
//! `archive write --report-durable`). Closing a segment finishes its frame,
//! syncs it, then appends and syncs its index entry. So a crash loses at most
//! the records of the open segment that were not yet acknowledged.
//!
//! The archive does not hold back verdicts: the pipeline answers the kernel
//! before the archive thread sees a record, so a record can be answered and
//! then lost in a crash within one sync interval.
//!
//! # Recovery
//!
//! A segment file without an index entry is the open segment. No chain
//! digest vouches for it, so its header must say that it was begun at the
//! archive's end (after the last chain digest, at the next sequence number);
//! otherwise (planted, copied, another archive's) it is damage: `verify`
//! reports it, readers refuse it, and no writer seals it into the chain.
//! Readers read it up to its last complete record and say so (or leave it
//! out, or refuse the archive: [`OpenSegmentPolicy`]), and `verify` lists it
//! with the recovered segments as *unsealed*; the next writer closes it:
//! its complete records are rewritten into a complete segment (a torn last
//! record is dropped), whose index entry is marked `recovered` with what was
//! found, and sequence numbers continue after it. An incomplete last index
//! line (a crash while closing) is cut off. Nothing is ever mixed silently.
//!
//! # Hostile segments
//!
//! Decoding is streamed with bounded memory: a record longer than
//! [`reader::MAX_RECORD_LEN`], a closed segment that decodes to more than its
//! index entry says, or an open one that expands more than
//! [`reader::MAX_EXPANSION`] times its size stops decoding and is damage (a
//! decompression bomb is never buffered).
//!
//! # Numbers
//!
//! Measured on the 2-core development machine (release build, other builds
//! around, so a few per cent of noise), with the conformance corpus
//! concatenated 30 times (90 000 records, 66.7 MB):
//!
//! * compression: 15.8x at level 3 (4.2 MB on disk), 14.6x at level 1; the
//!   corpus alone (3000 distinct records, 2.2 MB) 11.9x in 300 KiB segments;
//! * `archive write`: about 575 000 records/s at level 3 (665 000 at level 1),
//!   syncs included;
//! * `run`: median of 11 alternating runs 0.164 s without `--archive`
//!   (550 000 records/s) and 0.180 s with it (500 000 records/s): archiving
//!   costs about 10 % of the throughput. Its CPU cost (about 2 µs per record,
//!   three quarters of it zstd) runs on the tap thread, beside the workers.
#![warn(missing_docs)]

pub mod durable;
pub mod filter;
pub mod header;
pub mod index;
pub mod parquet_file;
pub mod reader;
pub mod source;
pub mod writer;

use std::io;
use std::path::{Path, PathBuf};

pub use durable::DurableWriter;
pub use filter::Filter;
pub use header::{record_info, RecordInfo};
pub use index::IndexEntry;
pub use parquet_file::{export_parquet, ExportStats};
pub use reader::{Archive, Problem, Unsealed, UnsealedKind, VerifyReport};
pub use source::{ArchiveSource, ArchiveTap, OpenSegmentPolicy};
pub use writer::{ArchiveWriter, OpenReport, WriterOptions};

/// The `parquet` crate this one writes with, for readers of exported files
/// (tests use it to read them back with the same version).
pub use parquet;

/// Why an archive operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The directory is neither an archive nor empty.
    #[error("{}: not an archive (no FORMAT file)", .0.display())]
    NotAnArchive(PathBuf),
    /// The archive has a format this version does not know.
    #[error("{}: unknown archive format {found:?}", path.display())]
    Format {
        /// The archive.
        path: PathBuf,
        /// The content of its `FORMAT` file.
        found: String,
    },
    /// The directory could have been planted or changed by another user.
    #[error(transparent)]
    Untrusted(#[from] tsem_durable::TrustError),
    /// Another writer has the archive open.
    #[error("{}: another writer has this archive open", .0.display())]
    Locked(PathBuf),
    /// The archive is damaged in a way that stops writing.
    #[error("{}: damaged: {what} (see `tsem-stream archive verify`)", path.display())]
    Damaged {
        /// The archive or file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The archive has records not sealed into its chain (an open segment)
    /// and the reader was asked to refuse them
    /// ([`OpenSegmentPolicy::Refuse`]).
    #[error(
        "{}: open segment with records from seq {first_seq} on, not sealed into the archive's chain",
        path.display()
    )]
    Unsealed {
        /// The open segment.
        path: PathBuf,
        /// Its first sequence number.
        first_seq: u64,
    },
    /// The writer was already finished.
    #[error("the archive writer is finished")]
    Finished,
    /// Writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(String),
}

impl ArchiveError {
    /// An I/O error at `path`.
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> ArchiveError {
        ArchiveError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}
