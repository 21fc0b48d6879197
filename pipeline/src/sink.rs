//! The sequencer's end of the pipeline: the model, kept in memory, mirrored
//! into the memory-mapped store (when one is configured) batch by batch.

use std::path::Path;

use tsem_model::state::{trajectory_line, Point};
use tsem_model::views::{render, View};
use tsem_model::{Mapped, Model, Outcome};
use tsem_store::{model_from_parts, ModelStore, StoreError, StoreMeta, StoredPoint};

use crate::engine::VerdictPolicy;
use crate::stats::Stats;

/// Why the model's store could not follow the model.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A view could not be rendered.
    #[error("rendering the model: {0}")]
    Render(#[from] std::io::Error),
}

/// The model a pipeline feeds, with its optional durable store.
pub struct ModelSink {
    model: Model,
    store: Option<ModelStore>,
    /// Point indices changed since the last commit (each once).
    touched: Vec<usize>,
    touched_mark: Vec<bool>,
    unknown_event_names: u64,
    errors: u64,
}

impl ModelSink {
    /// A sink that keeps the model in memory only.
    pub fn new(model: Model) -> ModelSink {
        ModelSink {
            model,
            store: None,
            touched: Vec::new(),
            touched_mark: Vec::new(),
            unknown_event_names: 0,
            errors: 0,
        }
    }

    /// A sink backed by the store in `dir`: an existing store is reopened (and
    /// must use `profile`), otherwise one is created from `model`.
    pub fn with_store(model: Model, dir: &Path) -> Result<ModelSink, StoreError> {
        let mut sink = ModelSink::new(model);
        if ModelStore::exists(dir) {
            let store = ModelStore::open(dir)?;
            let meta = store.meta().clone();
            if meta.profile != sink.model.profile() {
                return Err(StoreError::ProfileMismatch {
                    store: meta.profile,
                    requested: sink.model.profile(),
                });
            }
            let mut restored = model_from_parts(&meta, &store.points(), &store.pseudonyms());
            restored.keep_descriptions(false);
            sink.unknown_event_names = meta.unknown_event_names;
            sink.errors = meta.errors;
            sink.model = restored;
            sink.store = Some(store);
        } else {
            let meta = sink.meta();
            let mut store = ModelStore::create(dir, &meta)?;
            // Points loaded from a model file before the run go in with the first batch.
            for (i, p) in sink.model.points().iter().enumerate() {
                store.upsert_point(stored(i, p));
            }
            let pseudonyms: Vec<_> = sink.model.pseudonyms().iter().copied().collect();
            store.set_pseudonyms(&pseudonyms);
            for line in sink.model.trajectory() {
                store.append_trajectory(line);
            }
            store.commit()?;
            sink.model.keep_descriptions(false);
            sink.store = Some(store);
        }
        Ok(sink)
    }

    fn meta(&self) -> StoreMeta {
        let m = &self.model;
        StoreMeta {
            profile: m.profile(),
            aggregate: m.aggregate(),
            host_aggregate: m.host_aggregate(),
            base: m.base(),
            measurement: m.measurement(),
            sealed: m.is_sealed(),
            enforcing: m.is_enforcing(),
            events: m.events(),
            violations: m.violations(),
            unknown_event_names: self.unknown_event_names,
            errors: self.errors,
        }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, to change it between runs (sealing, pseudonyms).
    pub fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    /// True when a store is attached.
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// Events whose name is outside the TSEM table.
    pub fn unknown_event_names(&self) -> u64 {
        self.unknown_event_names
    }

    /// Lines that could not be used.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// What workers need to answer synchronous events on their own.
    pub fn verdict_policy(&self) -> VerdictPolicy {
        let m = &self.model;
        VerdictPolicy {
            sealed: m.is_sealed(),
            enforcing: m.is_enforcing(),
            valid: if m.is_sealed() {
                m.points()
                    .iter()
                    .filter(|p| p.valid)
                    .map(|p| p.coefficient)
                    .collect()
            } else {
                Default::default()
            },
        }
    }

    pub(crate) fn note_error(&mut self) {
        self.errors += 1;
    }

    /// Applies one mapped record (mapping.md M10.6); returns the model's outcome for events.
    pub(crate) fn apply(
        &mut self,
        mapped: &Mapped,
        bytes: &[u8],
        stats: &mut Stats,
    ) -> Option<Outcome> {
        match mapped {
            Mapped::Blank => None,
            Mapped::Aggregate(agg) => {
                stats.count_export(Some(tsem_ingest::ExportKind::Aggregate));
                self.model.set_aggregate(*agg);
                None
            }
            Mapped::LogNotice => {
                stats.count_export(Some(tsem_ingest::ExportKind::Log));
                None
            }
            Mapped::Event {
                coefficient,
                kind,
                event_type,
                ..
            } => {
                stats.count_export(*kind);
                stats.by_type[event_type.map_or(0, |t| t as usize)] += 1;
                if event_type.is_none() {
                    self.unknown_event_names += 1;
                }
                let outcome = self.model.update(*coefficient, bytes);
                if let Some(store) = &mut self.store {
                    if outcome.new_point {
                        let line = trajectory_line(bytes);
                        if outcome.violation {
                            store.append_forensics(&line);
                        } else {
                            store.append_trajectory(&line);
                        }
                    }
                    if self.touched_mark.len() <= outcome.index {
                        self.touched_mark.resize(outcome.index + 1, false);
                    }
                    if !self.touched_mark[outcome.index] {
                        self.touched_mark[outcome.index] = true;
                        self.touched.push(outcome.index);
                    }
                }
                Some(outcome)
            }
            Mapped::Error { .. } => None,
        }
    }

    /// Makes everything applied so far durable (no-op without a store).
    pub fn commit(&mut self) -> Result<(), SinkError> {
        let meta = self.meta();
        let Some(store) = &mut self.store else {
            return Ok(());
        };
        for &i in &self.touched {
            store.upsert_point(stored(i, &self.model.points()[i]));
            self.touched_mark[i] = false;
        }
        self.touched.clear();
        store.set_meta(meta);
        store.commit()?;
        Ok(())
    }

    /// Re-synchronises the store with the whole model after an offline change
    /// (sealing, accepting forensics, new pseudonyms) and commits.
    pub fn sync_all(&mut self) -> Result<(), SinkError> {
        if let Some(store) = &mut self.store {
            for (i, p) in self.model.points().iter().enumerate() {
                store.upsert_point(stored(i, p));
            }
            let pseudonyms: Vec<_> = self.model.pseudonyms().iter().copied().collect();
            store.set_pseudonyms(&pseudonyms);
        }
        self.commit()
    }

    /// Renders a view of the model; descriptions come from the store when one
    /// keeps them.
    pub fn render(&self, view: View, prefix: bool) -> Result<Vec<u8>, SinkError> {
        let mut out = Vec::new();
        let described = matches!(view, View::Trajectory | View::Forensics);
        match (&self.store, described) {
            (Some(store), true) => {
                let lines = if view == View::Trajectory {
                    store.trajectory()
                } else {
                    store.forensics()
                }?;
                for l in lines {
                    out.extend_from_slice(&l);
                    out.push(b'\n');
                }
            }
            _ => render(&self.model, view, prefix, &mut out)?,
        }
        Ok(out)
    }

    /// Gives the model back.
    pub fn into_model(self) -> Model {
        self.model
    }
}

fn stored(index: usize, p: &Point) -> StoredPoint {
    StoredPoint {
        coefficient: p.coefficient,
        count: p.count,
        valid: p.valid,
        order: index as u64,
    }
}
