//! Consumers of every record received, verbatim and in arrival order (the
//! archive, a fleet publisher): the pipeline hands them batches on a thread
//! of their own, after the kernel has been answered.

use std::io;

/// The records of one batch, in arrival order, as a [`LineTap`] sees them.
pub struct TapBatch<'a> {
    records: Vec<(u64, &'a [u8])>,
}

impl<'a> TapBatch<'a> {
    /// A batch of (line number, bytes without `\n`) pairs, in arrival order.
    pub fn new(records: Vec<(u64, &'a [u8])>) -> TapBatch<'a> {
        TapBatch { records }
    }

    /// Each record's line number and bytes (without `\n`).
    pub fn records(&self) -> impl Iterator<Item = (u64, &'a [u8])> + '_ {
        self.records.iter().copied()
    }
}

/// A consumer of every record received, verbatim and in arrival order (the
/// archive). It runs on its own thread so that slow storage does not delay
/// modeling; a bounded queue in front of it makes it push back instead of
/// letting memory grow.
pub trait LineTap: Send {
    /// Takes one batch of records.
    fn write_batch(&mut self, batch: &TapBatch<'_>) -> io::Result<()>;
    /// Called once after the last batch (flush, close segments).
    fn finish(&mut self) -> io::Result<()>;
}

/// Several taps fed from one: each batch goes to every tap in turn (the
/// archive and a publisher, say). The first failure stops the run.
pub struct TeeTap(pub Vec<Box<dyn LineTap>>);

impl LineTap for TeeTap {
    fn write_batch(&mut self, batch: &TapBatch<'_>) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|t| t.write_batch(batch))
    }
    fn finish(&mut self) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|t| t.finish())
    }
}
