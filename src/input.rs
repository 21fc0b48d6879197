//! What an input is, decided in one place for every command: events (a file,
//! a FIFO, stdin), an archive, a model store, a model file, a NATS stream, or
//! the bundled example; and the records of those that hold records.

use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tsem_archive::{Archive, ArchiveError, ArchiveSource, OpenSegmentPolicy};
use tsem_ingest::{open_path, MemorySource, RecordSource, DEFAULT_MAX_RECORD_LEN};
use tsem_store::ModelStore;

/// The bundled example: 109 raw export records of a real TSEM kernel, for a
/// first run without any input.
const BUNDLED_EXAMPLE: &[u8] = include_bytes!("../examples/real-kernel-export.jsonl");

/// An input of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The bundled example (no input given).
    Bundled,
    /// Standard input (`-`): event lines or export records.
    Stdin,
    /// A file of event lines or export records (regular, FIFO or device).
    Events(PathBuf),
    /// A model file.
    Model(PathBuf),
    /// An archive directory.
    Archive(PathBuf),
    /// A model store directory.
    Store(PathBuf),
    /// A fleet's NATS stream (`nats://…`).
    Nats(String),
}

/// An error that is the input's fault (exit status 1), not a failure.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

impl Input {
    /// Tells what `path` is: `-` is stdin and `nats://…` a stream; a
    /// directory is a store (it has a `header`) or an archive (a `FORMAT`
    /// file); a regular file whose first line that is not blank or a comment
    /// starts with `{` holds records, any other one is a model file (model
    /// directives never start with `{`); anything else (a FIFO, a device)
    /// is read as records.
    pub fn detect(path: &Path) -> anyhow::Result<Input> {
        if path.as_os_str() == "-" {
            return Ok(Input::Stdin);
        }
        if let Some(url) = path.to_str().filter(|s| s.starts_with("nats://")) {
            return Ok(Input::Nats(url.to_owned()));
        }
        if path.is_dir() {
            if ModelStore::exists(path) {
                return Ok(Input::Store(path.to_path_buf()));
            }
            if Archive::is_archive(path) {
                return Ok(Input::Archive(path.to_path_buf()));
            }
            bail!("{}: neither a model store nor an archive", path.display());
        }
        Ok(if starts_like_a_model_file(path)? {
            Input::Model(path.to_path_buf())
        } else {
            Input::Events(path.to_path_buf())
        })
    }

    /// The input given on a command line that reads records, where no
    /// input at all means the bundled example.
    pub fn records_or_bundled(path: Option<&Path>) -> Input {
        match path {
            None => Input::Bundled,
            Some(p) if p.as_os_str() == "-" => Input::Stdin,
            Some(p) => Input::Events(p.to_path_buf()),
        }
    }

    /// The kind, as `diff` and messages name it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Input::Bundled => "bundled",
            Input::Stdin | Input::Events(_) => "events",
            Input::Model(_) => "model",
            Input::Archive(_) => "archive",
            Input::Store(_) => "store",
            Input::Nats(_) => "nats",
        }
    }

    /// The path (`-` for stdin, the URL of a stream).
    pub fn path(&self) -> PathBuf {
        match self {
            Input::Bundled => PathBuf::from("<bundled example>"),
            Input::Stdin => PathBuf::from("-"),
            Input::Events(p) | Input::Model(p) | Input::Archive(p) | Input::Store(p) => p.clone(),
            Input::Nats(url) => PathBuf::from(url),
        }
    }

    /// The records of an input that holds records: events, stdin, an
    /// archive, the bundled example.
    ///
    /// An archive's open segment (records not yet sealed into its chain) is
    /// read, left out or refused as `open_segment` says.
    pub fn records(
        &self,
        open_segment: OpenSegmentPolicy,
    ) -> anyhow::Result<Box<dyn RecordSource>> {
        match self {
            Input::Bundled => Ok(Box::new(MemorySource::new(
                BUNDLED_EXAMPLE.to_vec(),
                DEFAULT_MAX_RECORD_LEN,
                "<bundled example: examples/real-kernel-export.jsonl>",
            ))),
            Input::Stdin | Input::Events(_) => {
                let path = self.path();
                open_path(&path, DEFAULT_MAX_RECORD_LEN)
                    .with_context(|| format!("cannot open {}", path.display()))
            }
            Input::Archive(path) => Ok(Box::new(archive_source(
                path,
                DEFAULT_MAX_RECORD_LEN,
                open_segment,
            )?)),
            Input::Model(path) => bail!(
                "{}: this is a model file: it holds coefficients, not event descriptions; \
                 give the events file, archive or store it was learned from",
                path.display()
            ),
            Input::Store(path) => bail!(
                "{}: a model store holds a model, not a stream of records",
                path.display()
            ),
            Input::Nats(url) => bail!("{url}: a NATS stream is read by `fleet` and `replay`"),
        }
    }
}

/// The records of the archive in `path` (lines longer than `max_len` are
/// reported, not read), its open segment read, left out or refused as
/// `open_segment` says; reading it is said on stderr.
pub fn archive_source(
    path: &Path,
    max_len: usize,
    open_segment: OpenSegmentPolicy,
) -> anyhow::Result<ArchiveSource> {
    let archive = Archive::open(path).with_context(|| format!("archive {}", path.display()))?;
    if let (Some(name), OpenSegmentPolicy::Include) = (archive.open_segment(), open_segment) {
        eprintln!(
            "tsem-stream: {}: reading the open segment {name} too (records not yet sealed into the chain)",
            path.display()
        );
    }
    match ArchiveSource::new(archive, max_len).with_open_segment(open_segment) {
        Ok(source) => Ok(source),
        Err(e @ ArchiveError::Unsealed { .. }) => Err(BadInput(format!(
            "{e}; give --sealed-only to leave it out or --include-unsealed to read it"
        ))
        .into()),
        Err(e) => Err(e).with_context(|| format!("archive {}", path.display())),
    }
}

/// True when `path` is a regular file whose first line that is not blank or
/// a comment does not start with `{`.
fn starts_like_a_model_file(path: &Path) -> anyhow::Result<bool> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if !file.metadata()?.is_file() {
        return Ok(false);
    }
    let mut reader = io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        // A model's lines are short; a record's first bytes are enough to tell.
        let n = reader
            .by_ref()
            .take(4096)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok(false);
        }
        let text = line.trim_ascii();
        if text.is_empty() || text.starts_with(b"#") {
            continue;
        }
        return Ok(!text.starts_with(b"{"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_files_are_told_apart_from_event_files() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m");
        let events = dir.path().join("e");
        let empty = dir.path().join("empty");
        std::fs::write(&model, "# profile quixote\naggregate 00\nseal\nend\n").unwrap();
        std::fs::write(&events, "\n# comment\n{\"event\": {}}\n").unwrap();
        std::fs::write(&empty, "").unwrap();
        assert_eq!(Input::detect(&model).unwrap(), Input::Model(model.clone()));
        assert_eq!(
            Input::detect(&events).unwrap(),
            Input::Events(events.clone())
        );
        assert_eq!(Input::detect(&empty).unwrap(), Input::Events(empty.clone()));
        assert_eq!(Input::detect(Path::new("-")).unwrap(), Input::Stdin);
        assert_eq!(
            Input::detect(Path::new("nats://h/s")).unwrap(),
            Input::Nats("nats://h/s".into())
        );
    }

    #[test]
    fn a_directory_that_is_neither_store_nor_archive_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = Input::detect(dir.path()).unwrap_err().to_string();
        assert!(e.contains("neither a model store nor an archive"), "{e}");
    }
}
