//! One module per subcommand; shared helpers for inputs and errors.

pub mod archive;
pub mod bench;
pub mod coefficients;
pub mod console;
pub mod diff;
pub mod explain;
pub mod fleet;
pub mod modeling;
pub mod process;
pub mod pseudonym;
pub mod rebuild;
pub mod replay;
pub mod run;
pub mod show;
pub mod sign;
pub mod signals;
pub mod sim;

use std::path::Path;

use anyhow::Context;
use tsem_ingest::{RecordSource, DEFAULT_MAX_RECORD_LEN};
use tsem_model::Pseudonyms;

/// The name of an input in messages: the path, or `<stdin>` for `-`.
pub fn display_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Opens an input file (or `-` for stdin) for line reading.
pub fn open_lines(path: &Path) -> anyhow::Result<Box<dyn RecordSource>> {
    crate::input::Input::records_or_bundled(Some(path))
        .records(tsem_archive::OpenSegmentPolicy::Include)
}

/// Loads a pseudonym list (or the pseudonym lines of a model file).
pub fn load_pseudonyms(path: Option<&Path>) -> anyhow::Result<Pseudonyms> {
    let Some(path) = path else {
        return Ok(Pseudonyms::new());
    };
    // A pseudonym makes a file's content not count: the list is trusted
    // like a model file.
    let text = modeling::read_model_file(path)?;
    Pseudonyms::from_text(&text).with_context(|| format!("{}", path.display()))
}

/// The kernel's export file `external_tma/<id>` as a pipeline source (one
/// record per read, ENODATA + poll when empty; a FIFO of a simulator works
/// too). It ends when `stop` is set (see [`signals::stop_on_signals`]).
pub fn export_source(
    path: &Path,
    spin: std::time::Duration,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
) -> anyhow::Result<Box<dyn tsem_ingest::RecordSource>> {
    let reader = tsem_ingest::export::ExportReader::open(path)
        .map(|r| r.with_spin(spin))
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(
        tsem_ingest::TimedSource::new(reader, path.display().to_string()).with_stop(stop),
    ))
}

/// A growing file followed like `tail -f`, until `stop` is set.
pub fn follow_source(
    path: &Path,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
) -> anyhow::Result<Box<dyn tsem_ingest::RecordSource>> {
    let reader = tsem_ingest::follow::FollowReader::open(path, DEFAULT_MAX_RECORD_LEN)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(
        tsem_ingest::TimedSource::new(reader, path.display().to_string()).with_stop(stop),
    ))
}
