//! One module per subcommand; shared helpers for inputs and errors.

pub mod coefficients;
pub mod pseudonym;

use std::path::Path;

use anyhow::Context;
use tsem_ingest::{LineSource, DEFAULT_MAX_RECORD_LEN};
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
pub fn open_lines(path: &Path) -> anyhow::Result<LineSource> {
    LineSource::open(path, DEFAULT_MAX_RECORD_LEN).with_context(|| format!("cannot open {}", display_name(path)))
}

/// Loads a pseudonym list (or the pseudonym lines of a model file).
pub fn load_pseudonyms(path: Option<&Path>) -> anyhow::Result<Pseudonyms> {
    let Some(path) = path else {
        return Ok(Pseudonyms::new());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Pseudonyms::from_text(&text).with_context(|| format!("{}", path.display()))
}
