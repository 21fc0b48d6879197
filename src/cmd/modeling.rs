//! Options and helpers shared by the commands that build or use a model
//! (`run`, `learn`, `enforce`, `show --events`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use tsem_model::{modelfile, pseudonym_of, Digest, Mapper, Model};
use tsem_pipeline::{ErrorPolicy, ModelSink, PipelineOptions};

use crate::cli::{OnError, ProfileArg};

/// How the model is set up before events are applied.
#[derive(Args, Clone, Debug, Default)]
pub struct ModelArgs {
    /// Mapping profile (default: the one the model file given with -m was
    /// written for, else quixote).
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// Hardware aggregate to start from (hex), as the kernel's aggregate record would.
    #[arg(long, value_name = "HEX")]
    pub aggregate: Option<String>,
    /// Base nonce (hex).
    #[arg(long, value_name = "HEX")]
    pub base: Option<String>,
    /// File of `pseudonym HEX` lines (a model file's pseudonym lines are accepted too).
    #[arg(long, value_name = "FILE")]
    pub pseudonyms: Option<PathBuf>,
    /// A pathname to treat as a pseudonym (repeatable).
    #[arg(long = "pseudonym", value_name = "PATH")]
    pub pseudonym_paths: Vec<String>,
    /// Model file to load first.
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// Refuse a model file that is not signed by a trusted key.
    #[arg(long, requires = "model")]
    pub require_signed: bool,
    /// A public (or private) key in PEM whose signatures are trusted
    /// (repeatable; default: the `*.pem` files of /etc/tsem-stream/trusted-keys/
    /// when it exists). A model signed by any other key is refused.
    #[arg(long = "trusted-key", value_name = "PEM")]
    pub trusted_keys: Vec<PathBuf>,
    /// Memory-mapped model store directory (created if missing, reopened otherwise).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Do not keep event descriptions in memory (a long `run` that writes no
    /// trajectory would otherwise grow with every new point).
    #[arg(skip)]
    pub drop_descriptions: bool,
}

/// How the pipeline runs.
#[derive(Args, Clone, Debug)]
pub struct RunTuning {
    /// Worker threads that parse and map events.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Most lines per batch.
    #[arg(long, default_value_t = 256)]
    pub batch_lines: usize,
    /// Policy for bad lines.
    #[arg(long, value_enum, default_value_t)]
    pub on_error: OnError,
    /// Print a statistics line to stderr every SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub stats_interval: Option<f64>,
}

impl RunTuning {
    /// The pipeline options these flags select.
    pub fn options(&self) -> PipelineOptions {
        PipelineOptions {
            workers: self.workers.max(1),
            batch_lines: self.batch_lines.max(1),
            queue_depth: 4 * self.workers.max(1),
            on_error: match self.on_error {
                OnError::Stop => ErrorPolicy::Stop,
                OnError::Skip => ErrorPolicy::Skip,
            },
            stats_interval: self.stats_interval.map(std::time::Duration::from_secs_f64),
            ..PipelineOptions::default()
        }
    }
}

fn digest_arg(name: &str, hex: &str) -> anyhow::Result<Digest> {
    hex.parse().with_context(|| format!("--{name}"))
}

/// Reads a model file, refusing a world-writable one (anyone could have changed it).
pub fn read_model_file(path: &Path) -> anyhow::Result<String> {
    let bytes = tsem_durable::read_trusted_file(path, tsem_durable::trusted::MAX_MODEL_FILE)?;
    String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8 text", path.display()))
}

/// Where trusted public keys are kept when no `--trusted-key` is given.
pub const TRUSTED_KEY_DIR: &str = "/etc/tsem-stream/trusted-keys";

impl ModelArgs {
    /// The fingerprints of the trusted keys: those given, else the `*.pem`
    /// files of [`TRUSTED_KEY_DIR`] when it exists (a directory only its
    /// owner may change), else none.
    fn trusted_fingerprints(&self) -> anyhow::Result<Vec<String>> {
        let mut files = self.trusted_keys.clone();
        let dir = Path::new(TRUSTED_KEY_DIR);
        if files.is_empty() && dir.is_dir() {
            tsem_durable::check_private_dir(dir)?;
            for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "pem") {
                    files.push(path);
                }
            }
        }
        files
            .iter()
            .map(|path| {
                let pem =
                    tsem_durable::read_trusted_file(path, tsem_durable::trusted::MAX_KEY_FILE)?;
                let pem = String::from_utf8(pem)
                    .with_context(|| format!("{}: not a PEM key", path.display()))?;
                let key = tsem_model::signature::public_key_from_pem(&pem)
                    .with_context(|| format!("{}", path.display()))?;
                Ok(tsem_model::signature::fingerprint(&key)?)
            })
            .collect()
    }

    /// Builds the starting model: base, aggregate, model file, pseudonyms, in that order.
    pub fn build_model(&self, unseal: bool) -> anyhow::Result<Model> {
        let file = match &self.model {
            Some(path) => Some((path, read_model_file(path)?)),
            None => None,
        };
        // A model remembers the profile it was written for (`# profile`).
        let profile = match (self.profile, &file) {
            (Some(p), _) => p.into(),
            (None, Some((path, text))) => {
                modelfile::declared_profile(text).with_context(|| format!("{}", path.display()))?
            }
            (None, None) => tsem_model::Profile::default(),
        };
        let mut model = Model::new(profile);
        if let Some(b) = &self.base {
            model.set_base(digest_arg("base", b)?);
        }
        if let Some(a) = &self.aggregate {
            model.set_aggregate(digest_arg("aggregate", a)?);
        }
        if let Some((path, text)) = &file {
            let report =
                modelfile::load(text, &mut model).with_context(|| format!("{}", path.display()))?;
            if self.require_signed && !report.signed {
                bail!(
                    "{}: the model is not signed (--require-signed)",
                    path.display()
                );
            }
            let trusted = self.trusted_fingerprints()?;
            if self.require_signed && trusted.is_empty() {
                bail!(
                    "--require-signed needs a trusted key: --trusted-key PEM, or *.pem files in {}",
                    TRUSTED_KEY_DIR
                );
            }
            // Like Secure Boot and IMA: the key comes from the configuration,
            // never from the file it vouches for.
            if let Some(signer) = &report.signer {
                let fp = tsem_model::signature::fingerprint(signer)?;
                if !trusted.is_empty() && !trusted.contains(&fp) {
                    bail!(
                        "{}: signed by key {fp}, which is not a trusted key \
                         (--trusted-key, {TRUSTED_KEY_DIR})",
                        path.display()
                    );
                }
            }
            if unseal {
                model.unseal();
            }
        }
        for p in super::load_pseudonyms(self.pseudonyms.as_deref())?.iter() {
            model.add_pseudonym(*p);
        }
        for path in &self.pseudonym_paths {
            model.add_pseudonym(pseudonym_of(path.as_bytes()));
        }
        if self.drop_descriptions {
            model.keep_descriptions(false);
        }
        Ok(model)
    }

    /// The model wrapped in a sink (with its store when `--store` is given), and
    /// the mapper for its profile and pseudonyms.
    pub fn sink(&self, model: Model) -> anyhow::Result<(ModelSink, Arc<Mapper>)> {
        let requested = model.pseudonyms().clone();
        let seal = model.is_sealed();
        if let (Some(dir), Some(file)) = (&self.store, &self.model) {
            if tsem_store::ModelStore::exists(dir) {
                bail!(
                    "store {} already holds a model: leave out -m {} to go on with it, \
                     or give a new --store directory",
                    dir.display(),
                    file.display()
                );
            }
        }
        let mut sink = match &self.store {
            Some(dir) => ModelSink::with_store(model, dir)
                .with_context(|| format!("store {}", dir.display()))?,
            None => ModelSink::new(model),
        };
        // Enforcing over a reopened store seals the store's own model.
        if seal && !sink.model().is_sealed() {
            sink.model_mut().seal();
            sink.sync_all().map_err(anyhow::Error::msg)?;
        }
        // A reopened store keeps its own pseudonyms. Adding one now would not
        // change the points it learned without it, so refuse rather than
        // silently model with a pseudonym set the user did not ask for.
        if let (Some(dir), Some(p)) = (
            &self.store,
            requested
                .iter()
                .find(|p| !sink.model().pseudonyms().contains(p)),
        ) {
            bail!(
                "store {}: it was learned without pseudonym {p}; a pseudonym cannot be added \
                 to learned points: rebuild instead (tsem-stream model rebuild --from {} \
                 --pseudonym PATH -o MODEL)",
                dir.display(),
                dir.display()
            );
        }
        let m = sink.model();
        let mapper = Arc::new(Mapper::new(m.profile(), m.pseudonyms().clone()));
        Ok((sink, mapper))
    }
}

/// The pipeline's periodic stats line (`--stats-interval`), to stderr.
pub fn progress_to_stderr() -> Option<tsem_pipeline::ProgressSink> {
    Some(Box::new(|line| eprintln!("{line}")))
}

/// Writes an output file (`-`: standard output) the safe way
/// ([`tsem_durable::write_output`]): a regular file is replaced atomically
/// and durably, mode 0600; a device or FIFO is written through.
pub fn write_file_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        return out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("cannot write to standard output");
    }
    tsem_durable::write_output(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
