//! Explanations of forensics (mapping.md M10.5, M11): for each event a sealed model
//! refused, the closest learned events, what differs between them and what to
//! do about it; and what is wrong with the model itself (pseudonyms it lacks,
//! pseudonyms added after learning, points that do not cover the learned run).
//!
//! Everything here is a pure function of parsed event descriptions and a
//! model: the caller feeds the learned events ([`Explainer::learn`]) and the
//! forensic events ([`Explainer::forensic`]) and asks for a [`Report`].
//!
//! How events are compared: a coefficient is a hash of the event type, the
//! TASK_ID (and, under Profile K, the parent's), the COE digest and the CELL
//! digest (mapping.md M8). Each of these parts is computed separately for both
//! events, so a difference is only reported where it changes the coefficient:
//! fields a profile does not hash (`ts`, `pid`, `fsgid` and path devices under
//! Profile Q, every parameter of a generic event under Profile Q) never show up.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use tsem_ingest::{parse_c_integer, EventView, Member, Obj, ParseError, Parser, Record};

use tsem_model::profile::coe_and_cell as parts;
use tsem_model::{pseudonym_of, Coefficient, Digest, MapError, Mapper, Model, Profile, Pseudonyms};

/// What a finding says about an event or the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Only the file's content digest differs: a file that changes between
    /// runs, which a pseudonym covers.
    DigestChanged,
    /// The TASK_ID (or, under Profile K, the parent's) differs: the executable
    /// or its parent chain changed.
    TaskIdChanged,
    /// The COE differs: other credentials or capabilities.
    CoeChanged,
    /// Another CELL field differs (mode, flags, owner, address ...).
    CellChanged,
    /// No learned event of this type on this object: new behaviour.
    NeverSeen,
    /// The model lacks `pseudonym` lines the events call for.
    PseudonymMissing,
    /// The model has a pseudonym, but its points were learned without it.
    ModelStale,
    /// The model does not cover the learned run: learned from other data or
    /// overwritten by a later learn.
    ModelOverwritten,
    /// The event is a valid point of this model (the forensics came from another).
    InModel,
    /// Not in the model, and no learned events to compare it with.
    NoReference,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 10] = [
        Kind::DigestChanged,
        Kind::TaskIdChanged,
        Kind::CoeChanged,
        Kind::CellChanged,
        Kind::NeverSeen,
        Kind::PseudonymMissing,
        Kind::ModelStale,
        Kind::ModelOverwritten,
        Kind::InModel,
        Kind::NoReference,
    ];

    /// The name used in JSON output (`digest-changed`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::DigestChanged => "digest-changed",
            Kind::TaskIdChanged => "task-id-changed",
            Kind::CoeChanged => "coe-changed",
            Kind::CellChanged => "cell-changed",
            Kind::NeverSeen => "never-seen",
            Kind::PseudonymMissing => "pseudonym-missing",
            Kind::ModelStale => "model-stale",
            Kind::ModelOverwritten => "model-overwritten",
            Kind::InModel => "in-model",
            Kind::NoReference => "no-reference",
        }
    }

    /// The name in plain words (`digest changed`, ...).
    pub fn words(self) -> &'static str {
        match self {
            Kind::DigestChanged => "digest changed",
            Kind::TaskIdChanged => "task_id changed",
            Kind::CoeChanged => "COE changed",
            Kind::CellChanged => "CELL changed",
            Kind::NeverSeen => "never seen",
            Kind::PseudonymMissing => "pseudonym missing",
            Kind::ModelStale => "model stale",
            Kind::ModelOverwritten => "model overwritten",
            Kind::InModel => "in the model",
            Kind::NoReference => "nothing to compare with",
        }
    }
}

/// Why a line could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// The line is not a usable record.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The event cannot be mapped under the model's profile.
    #[error("{type_name}: {error}")]
    Map {
        /// `event.type`.
        type_name: String,
        /// Why.
        error: MapError,
    },
}

/// Which event a finding is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSummary {
    /// `event.type`.
    pub type_name: String,
    /// `event.process`.
    pub process: String,
    /// `event.pid`, in export records.
    pub pid: Option<String>,
    /// The pathname or socket address the event is about (empty when none).
    pub target: String,
}

/// One field whose value differs between the learned event and the forensic one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// `task_id`, `capeff`, `file.digest`, `file.inode.mode` ...
    pub field: String,
    /// The learned value (`None`: the field was absent).
    pub learned: Option<String>,
    /// The forensic value (`None`: the field is absent).
    pub now: Option<String>,
}

/// One explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The forensic event's line (`None` for a finding about the model).
    pub line: Option<u64>,
    /// What was found.
    pub kind: Kind,
    /// The event (`None` for a finding about the model).
    pub event: Option<EventSummary>,
    /// The line of the learned event it was compared with.
    pub learned_line: Option<u64>,
    /// Fields that differ, where they change the coefficient.
    pub differences: Vec<Difference>,
    /// What differs, in plain words.
    pub summary: String,
    /// What to do.
    pub advice: String,
    /// A command that does it, when there is one.
    pub command: Option<String>,
}

/// The names the suggested commands use for the files involved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The model file (default `MODEL`).
    pub model: Option<String>,
    /// The learned events (default `LEARNED_EVENTS`).
    pub learned: Option<String>,
    /// The forensics (default `FORENSICS`).
    pub forensics: Option<String>,
}

/// Everything explained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Findings about events (in forensic order), then about the model.
    pub findings: Vec<Finding>,
    /// Learned events read.
    pub learned_events: u64,
    /// Forensic events read.
    pub forensic_events: u64,
}

impl Report {
    /// Findings per kind, in [`Kind::ALL`] order, kinds without findings left out.
    pub fn counts(&self) -> Vec<(Kind, usize)> {
        Kind::ALL
            .iter()
            .map(|&k| (k, self.findings.iter().filter(|f| f.kind == k).count()))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// The report as text: one paragraph per finding (`SOURCE:LINE [kind]
    /// summary`, then `  -> advice: command`), then a count line.
    pub fn text(&self, source: &str) -> String {
        let mut out = String::new();
        for f in &self.findings {
            match f.line {
                Some(line) => {
                    let _ = write!(out, "{source}:{line} [{}] ", f.kind.words());
                }
                None => {
                    let _ = write!(out, "model [{}] ", f.kind.words());
                }
            }
            let _ = writeln!(out, "{}", f.summary);
            match &f.command {
                Some(c) => {
                    let _ = writeln!(out, "  -> {}: {c}", f.advice);
                }
                None => {
                    let _ = writeln!(out, "  -> {}", f.advice);
                }
            }
        }
        let explained: Vec<String> = self
            .counts()
            .into_iter()
            .map(|(k, n)| format!("{n} {}", k.words()))
            .collect();
        let _ = write!(
            out,
            "{} forensic event{} against {} learned event{}",
            self.forensic_events,
            plural(self.forensic_events),
            self.learned_events,
            plural(self.learned_events)
        );
        if explained.is_empty() {
            out.push_str(": nothing to explain.\n");
        } else {
            let _ = writeln!(out, ": {}.", explained.join(", "));
        }
        let untrusted = self
            .findings
            .iter()
            .any(|f| f.line.is_some() && f.kind != Kind::InModel);
        if untrusted {
            out.push_str(
                "Why one event matters: TSEM marks a task untrusted at its first event outside \
                 the model, and from then on denies every event of that task and of its \
                 children (EPERM under enforcement).\n",
            );
        }
        out
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// What an event is, for comparison: its parts as the profile hashes them,
/// and the fields behind each part.
#[derive(Clone, Debug)]
struct Facts {
    line: u64,
    type_name: String,
    process: String,
    pid: Option<String>,
    /// The pathname or socket address (empty when the event has none).
    target: String,
    /// `file.path.pathname`: what a pseudonym is matched against (mapping.md M11).
    file_path: Option<String>,
    /// File flags and inode mode, when the event has a file.
    file_flags: Option<u64>,
    file_mode: Option<u64>,
    /// `mmap_file.prot`.
    prot: Option<u64>,
    task_id: String,
    p_task_id: Option<String>,
    coe_fields: Vec<(String, String)>,
    cell_fields: Vec<(String, String)>,
    /// COE digest.
    coe: Digest,
    /// CELL digest with the model's pseudonyms.
    cell: Digest,
    /// CELL digest as if the file's own pathname were a pseudonym too
    /// (`None`: no file, or the model already covers it).
    cell_as_pseudonym: Option<Digest>,
    /// The coefficient under the model's mapping.
    coefficient: Coefficient,
    /// The coefficient without any pseudonym.
    bare: Coefficient,
    /// The coefficient as if the file's pathname were a pseudonym too.
    as_pseudonym: Option<Coefficient>,
}

impl Facts {
    fn summary(&self) -> EventSummary {
        EventSummary {
            type_name: self.type_name.clone(),
            process: self.process.clone(),
            pid: self.pid.clone(),
            target: self.target.clone(),
        }
    }

    /// `file_open /root/.bash_history by bash`.
    fn describe(&self) -> String {
        let process = if self.process.is_empty() {
            "an unnamed process"
        } else {
            &self.process
        };
        if self.target.is_empty() {
            format!("{} by {process}", self.type_name)
        } else {
            format!("{} {} by {process}", self.type_name, self.target)
        }
    }

    /// The file is a program or library: its content is what the model is
    /// there to check, so a pseudonym would be the wrong fix.
    fn executable(&self) -> bool {
        const FMODE_EXEC: u64 = 0x20;
        const PROT_EXEC: u64 = 4;
        self.file_mode.is_some_and(|m| m & 0o111 != 0)
            || self.file_flags.is_some_and(|f| f & FMODE_EXEC != 0)
            || self.prot.is_some_and(|p| p & PROT_EXEC != 0)
    }

    /// Opened for writing (`O_WRONLY` or `O_RDWR`).
    fn writes(&self) -> bool {
        self.file_flags.is_some_and(|f| f & 3 != 0)
    }
}

/// The parts of one event's coefficient that differ from another's.
#[derive(Debug, Default)]
struct Comparison {
    task: Vec<Difference>,
    coe: Vec<Difference>,
    cell: Vec<Difference>,
    /// The CELLs differ only in the file digest: equal once the pathname is a pseudonym.
    digest_only: bool,
}

impl Comparison {
    fn parts(&self) -> usize {
        usize::from(!self.task.is_empty())
            + usize::from(!self.coe.is_empty())
            + usize::from(!self.cell.is_empty())
    }

    fn fields(&self) -> usize {
        self.task.len() + self.coe.len() + self.cell.len()
    }

    fn all(&self) -> Vec<Difference> {
        self.task
            .iter()
            .chain(&self.coe)
            .chain(&self.cell)
            .cloned()
            .collect()
    }
}

/// A forensic event, its kind, and the learned event it was compared with.
type Analysed<'a> = (&'a Facts, Kind, Option<(&'a Facts, Comparison)>);

/// Collects learned and forensic events and explains the forensic ones.
pub struct Explainer<'m> {
    model: &'m Model,
    mapper: Mapper,
    bare: Mapper,
    /// Learned variants by (type, target), each distinct (bare coefficient, process) once.
    learned: HashMap<(String, String), Vec<Facts>>,
    seen: HashSet<(Coefficient, String)>,
    /// Per process: the event types it did in the learned run, with targets.
    by_process: HashMap<(String, String), HashSet<String>>,
    /// Distinct learned coefficients (model mapping) outside the model, and
    /// whether their bare coefficient is in it.
    uncovered: HashMap<Coefficient, bool>,
    learned_distinct: HashSet<Coefficient>,
    learned_events: u64,
    forensics: Vec<Facts>,
}

impl<'m> Explainer<'m> {
    /// An explainer for `model` (its profile and pseudonyms map every event).
    pub fn new(model: &'m Model) -> Self {
        Explainer {
            model,
            mapper: Mapper::new(model.profile(), model.pseudonyms().clone()),
            bare: Mapper::new(model.profile(), Pseudonyms::new()),
            learned: HashMap::new(),
            seen: HashSet::new(),
            by_process: HashMap::new(),
            uncovered: HashMap::new(),
            learned_distinct: HashSet::new(),
            learned_events: 0,
            forensics: Vec::new(),
        }
    }

    /// Takes one line of the learned run (an export record or a trajectory
    /// line). Aggregates, log notices and blank lines are skipped.
    pub fn learn(
        &mut self,
        parser: &mut Parser,
        line: u64,
        bytes: &[u8],
    ) -> Result<(), ExplainError> {
        let Some(facts) = self.facts(parser, line, bytes)? else {
            return Ok(());
        };
        self.learned_events += 1;
        if self.learned_distinct.insert(facts.coefficient) && !self.valid(&facts.coefficient) {
            let bare_in_model = self.valid(&facts.bare);
            self.uncovered.insert(facts.coefficient, bare_in_model);
        }
        self.by_process
            .entry((facts.process.clone(), facts.type_name.clone()))
            .or_default()
            .insert(facts.target.clone());
        if self.seen.insert((facts.bare, facts.process.clone())) {
            self.learned
                .entry((facts.type_name.clone(), facts.target.clone()))
                .or_default()
                .push(facts);
        }
        Ok(())
    }

    /// Takes one forensic event description. Aggregates, log notices and
    /// blank lines are skipped.
    pub fn forensic(
        &mut self,
        parser: &mut Parser,
        line: u64,
        bytes: &[u8],
    ) -> Result<(), ExplainError> {
        if let Some(facts) = self.facts(parser, line, bytes)? {
            self.forensics.push(facts);
        }
        Ok(())
    }

    fn valid(&self, c: &Coefficient) -> bool {
        self.model.point(c).is_some_and(|p| p.valid)
    }

    fn facts(
        &self,
        parser: &mut Parser,
        line: u64,
        bytes: &[u8],
    ) -> Result<Option<Facts>, ExplainError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        parser.parse(bytes, |record| match record {
            Record::Event(view) => self.facts_of(line, &view).map(Some),
            Record::Aggregate { .. } | Record::LogNotice { .. } => Ok(None),
        })?
    }

    fn facts_of(&self, line: u64, view: &EventView<'_>) -> Result<Facts, ExplainError> {
        let map_err = |error: MapError| ExplainError::Map {
            type_name: view.type_name.to_owned(),
            error,
        };
        let profile = self.model.profile();
        let pseudonyms = self.model.pseudonyms();
        let (coe, cell) = parts(profile, pseudonyms, view).map_err(map_err)?;
        let coefficient = self.mapper.coefficient(view).map_err(map_err)?;
        let bare = self.bare.coefficient(view).map_err(map_err)?;
        let file = view.cell.and_then(|c| obj(c, "file"));
        let file_path = file
            .and_then(|f| obj(f, "path"))
            .and_then(|p| string(p, "pathname"))
            .map(str::to_owned);
        let (mut cell_as_pseudonym, mut as_pseudonym) = (None, None);
        if let Some(path) = file_path.as_deref() {
            if !pseudonyms.covers(path.as_bytes()) {
                let mut more = pseudonyms.clone();
                more.insert(pseudonym_of(path.as_bytes()));
                cell_as_pseudonym = Some(parts(profile, &more, view).map_err(map_err)?.1);
                as_pseudonym = Some(
                    Mapper::new(profile, more)
                        .coefficient(view)
                        .map_err(map_err)?,
                );
            }
        }
        let mut coe_fields = Vec::new();
        view.coe.leaves("", &mut coe_fields);
        let mut cell_fields = Vec::new();
        if let Some(c) = view.cell {
            c.leaves("", &mut cell_fields);
        }
        let number = |o: Option<Obj<'_>>, key: &str| {
            o.and_then(|o| string(o, key))
                .and_then(|s| parse_c_integer(s.as_bytes()).ok())
                .map(|n| n.wrapping_u64())
        };
        Ok(Facts {
            line,
            type_name: view.type_name.to_owned(),
            process: view.process().unwrap_or_default().to_owned(),
            pid: view.pid().map(str::to_owned),
            target: Obj::event_target(view.cell),
            file_path,
            file_flags: number(file, "flags"),
            file_mode: number(file.and_then(|f| obj(f, "inode")), "mode"),
            prot: if view.type_name == "mmap_file" {
                number(view.cell, "prot")
            } else {
                None
            },
            task_id: view.task_id.to_ascii_lowercase(),
            p_task_id: view.p_task_id().map(str::to_ascii_lowercase),
            coe_fields,
            cell_fields,
            coe,
            cell,
            cell_as_pseudonym,
            coefficient,
            bare,
            as_pseudonym,
        })
    }

    /// Compares a learned event with a forensic one, part by part.
    fn compare(&self, learned: &Facts, now: &Facts) -> Comparison {
        let mut c = Comparison::default();
        if learned.task_id != now.task_id {
            c.task.push(Difference {
                field: "task_id".into(),
                learned: Some(learned.task_id.clone()),
                now: Some(now.task_id.clone()),
            });
        }
        if self.model.profile() == Profile::Kernel && learned.p_task_id != now.p_task_id {
            c.task.push(Difference {
                field: "p_task_id".into(),
                learned: learned.p_task_id.clone(),
                now: now.p_task_id.clone(),
            });
        }
        let quixote = self.model.profile() == Profile::Quixote;
        if learned.coe != now.coe {
            // Profile Q never hashes fsgid (mapping.md M7), so it cannot be the cause.
            c.coe = field_differences(&learned.coe_fields, &now.coe_fields, |f| {
                !(quixote && f == "fsgid")
            });
        }
        if learned.cell != now.cell {
            // Profile Q does not hash path devices (mapping.md M4.1).
            c.cell = field_differences(&learned.cell_fields, &now.cell_fields, |f| {
                !(quixote && (f.ends_with("dev.major") || f.ends_with("dev.minor")))
            });
            c.digest_only = now.cell_as_pseudonym.is_some()
                && now.cell_as_pseudonym == learned.cell_as_pseudonym;
            if c.cell.is_empty() {
                // The digests differ in a way the fields do not show (a
                // pseudonym in force for one side only): name the CELL itself.
                c.cell.push(Difference {
                    field: format!("{} CELL", now.type_name),
                    learned: Some(learned.cell.to_hex()),
                    now: Some(now.cell.to_hex()),
                });
            }
        }
        c
    }

    /// The learned event closest to `now`: same type and object, then the
    /// same process, then the same task, then the fewest differences.
    fn closest(&self, now: &Facts) -> Option<(&Facts, Comparison)> {
        let candidates = self
            .learned
            .get(&(now.type_name.clone(), now.target.clone()))?;
        candidates
            .iter()
            .map(|l| (l, self.compare(l, now)))
            .min_by_key(|(l, c)| {
                (
                    l.process != now.process,
                    l.task_id != now.task_id,
                    c.parts(),
                    c.fields(),
                    l.line,
                )
            })
    }

    /// Explains every forensic event, then the model.
    pub fn report(&self, ctx: &Context) -> Report {
        let have_learned = self.learned_events > 0;
        // First pass: the kind of each event, so that commands can name every
        // pseudonym the forensics call for.
        let analysed: Vec<Analysed<'_>> = self
            .forensics
            .iter()
            .map(|f| {
                let (kind, closest) = self.classify(f, have_learned);
                (f, kind, closest)
            })
            .collect();
        let mut pseudonym_paths: Vec<String> = Vec::new();
        let mut missing_lines: Vec<String> = Vec::new();
        for (f, kind, _) in &analysed {
            let Some(path) = &f.file_path else { continue };
            let list = match kind {
                Kind::DigestChanged if !f.executable() => &mut pseudonym_paths,
                Kind::PseudonymMissing => &mut missing_lines,
                _ => continue,
            };
            if !list.contains(path) {
                list.push(path.clone());
            }
        }
        let commands = Commands {
            ctx,
            model: self.model,
            pseudonym_paths: &pseudonym_paths,
        };
        let mut findings: Vec<Finding> = analysed
            .iter()
            .map(|(f, kind, closest)| self.event_finding(f, *kind, closest.as_ref(), &commands))
            .collect();
        findings.extend(self.model_findings(&pseudonym_paths, &missing_lines, &commands));
        Report {
            findings,
            learned_events: self.learned_events,
            forensic_events: self.forensics.len() as u64,
        }
    }

    fn classify<'a>(
        &'a self,
        f: &Facts,
        have_learned: bool,
    ) -> (Kind, Option<(&'a Facts, Comparison)>) {
        if self.valid(&f.coefficient) {
            return (Kind::InModel, None);
        }
        // In the model once its own pathname is a pseudonym: the model was
        // learned with that pseudonym, but its file does not list it.
        if f.as_pseudonym.is_some_and(|c| self.valid(&c)) {
            return (Kind::PseudonymMissing, None);
        }
        let covered = f
            .file_path
            .as_deref()
            .is_some_and(|p| self.model.pseudonyms().covers(p.as_bytes()));
        if !have_learned {
            let kind = if covered {
                Kind::ModelStale
            } else {
                Kind::NoReference
            };
            return (kind, None);
        }
        let Some((learned, c)) = self.closest(f) else {
            return (Kind::NeverSeen, None);
        };
        let kind = if !c.task.is_empty() {
            Kind::TaskIdChanged
        } else if !c.coe.is_empty() {
            Kind::CoeChanged
        } else if !c.cell.is_empty() && !c.digest_only {
            Kind::CellChanged
        } else if c.digest_only {
            Kind::DigestChanged
        } else if self.valid(&learned.bare) {
            // The very same event was learned, and the model has it only
            // without the pseudonyms it now lists.
            Kind::ModelStale
        } else {
            Kind::ModelOverwritten
        };
        (kind, Some((learned, c)))
    }

    fn event_finding(
        &self,
        f: &Facts,
        kind: Kind,
        closest: Option<&(&Facts, Comparison)>,
        cmd: &Commands<'_>,
    ) -> Finding {
        let what = f.describe();
        let differences = closest.map(|(_, c)| c.all()).unwrap_or_default();
        let path = f.file_path.clone().unwrap_or_else(|| f.target.clone());
        let (summary, advice, command) = match kind {
            Kind::InModel => (
                format!("{what}: this event is a valid point of the model; the forensics were recorded against another model"),
                "nothing to do for this model".to_owned(),
                None,
            ),
            Kind::PseudonymMissing => (
                format!(
                    "{what}: with a pseudonym for {path} this event is in the model: the model was learned with that pseudonym, but its file has no `pseudonym` line for it"
                ),
                "add the pseudonym to the model".to_owned(),
                Some(cmd.add_pseudonym_lines(std::slice::from_ref(&path))),
            ),
            Kind::NoReference => (
                format!("{what}: not in the model, and there are no learned events to compare it with"),
                "give the events the model was learned from with --learned (events file, archive or store)".to_owned(),
                None,
            ),
            Kind::NeverSeen => (
                format!("{what}: never seen: new behaviour; {}", self.never_seen_context(f)),
                "a pseudonym does not help here; review it, and if it is expected, accept it into the model".to_owned(),
                Some(cmd.rebuild(true)),
            ),
            Kind::ModelStale => {
                let summary = if closest.is_some() {
                    format!(
                        "{what}: the learned run has this event, equal under the model's pseudonyms, but the model has it only without them: its pseudonym lines were added after it was learned"
                    )
                } else {
                    format!(
                        "{what}: the model has a pseudonym for {path}, yet this event is outside it: if the pseudonym was added after learning, the learned points still carry the old digests"
                    )
                };
                (
                    summary,
                    "rebuild the model from the learned events with its pseudonyms".to_owned(),
                    Some(cmd.rebuild(false)),
                )
            }
            Kind::ModelOverwritten => (
                format!(
                    "{what}: the learned run has exactly this event, but the model lacks it: the model was overwritten by a later learn or learned from other data"
                ),
                "rebuild the model from the learned events".to_owned(),
                Some(cmd.rebuild(false)),
            ),
            Kind::DigestChanged => {
                let learned = closest.map(|(l, _)| *l);
                let before = learned
                    .and_then(|l| field(&l.cell_fields, "digest"))
                    .unwrap_or_default();
                let after = field(&f.cell_fields, "digest").unwrap_or_default();
                let mut summary = format!(
                    "{what}: learned with digest {}, now {}",
                    short(&before),
                    short(&after)
                );
                if f.executable() {
                    summary.push_str("; the program or library itself changed (an update?)");
                    (
                        summary,
                        "a pseudonym would stop checking this file's content; if the new content is trusted, accept it after review".to_owned(),
                        Some(cmd.rebuild(true)),
                    )
                } else {
                    summary.push_str("; the file's content changes between runs");
                    if self.written(f) {
                        let _ = write!(summary, " ({} writes it)", f.process);
                    }
                    (
                        summary,
                        "make it a pseudonym".to_owned(),
                        Some(format!("tsem-stream pseudonym {}", shell_quote(&path))),
                    )
                }
            }
            Kind::TaskIdChanged | Kind::CoeChanged | Kind::CellChanged => {
                let mut parts = Vec::new();
                if let Some((_, c)) = closest {
                    for d in &c.task {
                        let why = if d.field == "p_task_id" {
                            "the parent's executable or its parent chain changed"
                        } else {
                            "the executable or its parent chain changed"
                        };
                        parts.push(format!(
                            "{} differs: {why} (learned {}, now {})",
                            d.field,
                            short_opt(&d.learned),
                            short_opt(&d.now)
                        ));
                    }
                    for d in &c.coe {
                        parts.push(format!(
                            "{} differs: the task runs with other credentials or capabilities (learned {}, now {})",
                            d.field,
                            short_opt(&d.learned),
                            short_opt(&d.now)
                        ));
                    }
                    for d in &c.cell {
                        let why = if d.field.ends_with("digest") {
                            "the file's content changed"
                        } else {
                            "the object itself changed"
                        };
                        parts.push(format!(
                            "{} differs: {why} (learned {}, now {})",
                            d.field,
                            short_opt(&d.learned),
                            short_opt(&d.now)
                        ));
                    }
                }
                let advice = match kind {
                    Kind::TaskIdChanged => "if the program was updated on purpose, accept the new behaviour after review; otherwise find out what runs under this name",
                    Kind::CoeChanged => "was the task started differently (sudo, setuid, a capability kept or dropped)? If that is expected, accept it after review",
                    _ => "restore the object (permissions, owner, flags), or accept the change after review",
                };
                (
                    format!("{what}: {}", parts.join("; ")),
                    advice.to_owned(),
                    Some(cmd.rebuild(true)),
                )
            }
        };
        Finding {
            line: Some(f.line),
            kind,
            event: Some(f.summary()),
            learned_line: closest.map(|(l, _)| l.line),
            differences,
            summary,
            advice,
            command,
        }
    }

    /// True when the workload opens this file for writing (in the learned
    /// run or in the forensics).
    fn written(&self, f: &Facts) -> bool {
        f.writes()
            || self
                .forensics
                .iter()
                .any(|o| o.target == f.target && o.writes())
            || self
                .learned
                .get(&(f.type_name.clone(), f.target.clone()))
                .is_some_and(|v| v.iter().any(Facts::writes))
    }

    fn never_seen_context(&self, f: &Facts) -> String {
        let process = &f.process;
        let others = self
            .by_process
            .get(&(f.process.clone(), f.type_name.clone()))
            .map_or(0, |t| t.len());
        let process_known = self.by_process.keys().any(|(p, _)| p == process);
        let object = if f.file_path.is_some() {
            "file"
        } else {
            "object"
        };
        if !process_known {
            format!("{process} does not appear in the learned events")
        } else if others == 0 {
            format!("{process} never did {} in the learned events", f.type_name)
        } else if f.target.is_empty() {
            format!(
                "{process} did {} in the learned events, but never like this",
                f.type_name
            )
        } else {
            format!(
                "{process} did {} on {others} other {object}{} in the learned events, never on this one",
                f.type_name,
                plural(others as u64)
            )
        }
    }

    fn model_findings(
        &self,
        pseudonym_paths: &[String],
        missing_lines: &[String],
        cmd: &Commands<'_>,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        let model = cmd.model_name();
        if !pseudonym_paths.is_empty() {
            out.push(Finding {
                line: None,
                kind: Kind::PseudonymMissing,
                event: None,
                learned_line: None,
                differences: Vec::new(),
                summary: format!(
                    "{model} has no pseudonym for {}, whose content changes between runs; pseudonyms must be in force while learning, appending them to a learned model does not change its points",
                    pseudonym_paths.join(", ")
                ),
                advice: "rebuild the model with the pseudonym".to_owned(),
                command: Some(cmd.rebuild(false)),
            });
        }
        if !missing_lines.is_empty() {
            out.push(Finding {
                line: None,
                kind: Kind::PseudonymMissing,
                event: None,
                learned_line: None,
                differences: Vec::new(),
                summary: format!(
                    "{model} was learned with a pseudonym for {}, but the file lists no `pseudonym` line for it (a model written by a tool that leaves them out?)",
                    missing_lines.join(", ")
                ),
                advice: "add the pseudonym lines to the model".to_owned(),
                command: Some(cmd.add_pseudonym_lines(missing_lines)),
            });
        }
        let stale = self.uncovered.values().filter(|&&bare| bare).count();
        let foreign = self.uncovered.len() - stale;
        let distinct = self.learned_distinct.len();
        if stale > 0 {
            out.push(Finding {
                line: None,
                kind: Kind::ModelStale,
                event: None,
                learned_line: None,
                differences: Vec::new(),
                summary: format!(
                    "{stale} of {distinct} distinct learned events are outside {model} under its own pseudonyms but inside it without them: the pseudonym lines were added after the model was learned"
                ),
                advice: "rebuild the model from the learned events with its pseudonyms".to_owned(),
                command: Some(cmd.rebuild(false)),
            });
        }
        if foreign > 0 {
            out.push(Finding {
                line: None,
                kind: Kind::ModelOverwritten,
                event: None,
                learned_line: None,
                differences: Vec::new(),
                summary: format!(
                    "{foreign} of {distinct} distinct learned events are not in {model}: it was learned from other data, or overwritten by a later learn"
                ),
                advice: "rebuild the model from the learned events (and keep one model file per learned run)".to_owned(),
                command: Some(cmd.rebuild(false)),
            });
        }
        out
    }
}

/// Builds the suggested command lines.
struct Commands<'a> {
    ctx: &'a Context,
    model: &'a Model,
    pseudonym_paths: &'a [String],
}

impl Commands<'_> {
    fn model_name(&self) -> String {
        self.ctx.model.clone().unwrap_or_else(|| "MODEL".into())
    }

    /// `tsem-stream model rebuild --from LEARNED ... -o MODEL`, keeping the
    /// model's profile, aggregate, base and pseudonyms, adding the pseudonyms
    /// the forensics call for, and (`accept`) the forensics themselves.
    fn rebuild(&self, accept: bool) -> String {
        let model = shell_quote(&self.model_name());
        let learned = self.ctx.learned.as_deref().unwrap_or("LEARNED_EVENTS");
        let mut c = format!("tsem-stream model rebuild --from {}", shell_quote(learned));
        if self.model.profile() != Profile::default() {
            let _ = write!(c, " --profile {}", self.model.profile());
        }
        if let Some(a) = self.model.aggregate().filter(|a| *a != Digest::ZERO) {
            let _ = write!(c, " --aggregate {a}");
        }
        if self.model.base() != Digest::ZERO {
            let _ = write!(c, " --base {}", self.model.base());
        }
        if !self.model.pseudonyms().is_empty() {
            let _ = write!(c, " --pseudonyms {model}");
        }
        for p in self.pseudonym_paths {
            let _ = write!(c, " --pseudonym {}", shell_quote(p));
        }
        if accept {
            let forensics = self.ctx.forensics.as_deref().unwrap_or("FORENSICS");
            let _ = write!(c, " --add-forensics {}", shell_quote(forensics));
        }
        let _ = write!(c, " -o {model}");
        c
    }

    /// Adds `pseudonym` lines to a model without touching its points.
    fn add_pseudonym_lines(&self, paths: &[String]) -> String {
        let model = shell_quote(&self.model_name());
        let mut c = format!("tsem-stream learn -m {model}");
        if self.model.profile() != Profile::default() {
            let _ = write!(c, " --profile {}", self.model.profile());
        }
        for p in paths {
            let _ = write!(c, " --pseudonym {}", shell_quote(p));
        }
        let _ = write!(c, " -o {model} /dev/null");
        c
    }
}

fn obj<'a>(o: Obj<'a>, key: &str) -> Option<Obj<'a>> {
    match o.get(key) {
        Some(Member::Obj(inner)) => Some(inner),
        _ => None,
    }
}

fn string<'a>(o: Obj<'a>, key: &str) -> Option<&'a str> {
    match o.get(key) {
        Some(Member::Str(s)) => Some(s),
        _ => None,
    }
}

/// The value of the field whose dotted path ends with `.name` (or is `name`).
fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name || k.rsplit('.').next() == Some(name))
        .map(|(_, v)| v.clone())
}

/// Fields whose values differ between two flattened objects, `keep` deciding
/// which fields can matter.
pub(crate) fn field_differences(
    learned: &[(String, String)],
    now: &[(String, String)],
    keep: impl Fn(&str) -> bool,
) -> Vec<Difference> {
    let lookup = |fields: &[(String, String)], k: &str| {
        fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone())
    };
    let mut out = Vec::new();
    for (k, v) in learned {
        let other = lookup(now, k);
        if other.as_deref() != Some(v.as_str()) && keep(k) {
            out.push(Difference {
                field: k.clone(),
                learned: Some(v.clone()),
                now: other,
            });
        }
    }
    for (k, v) in now {
        if lookup(learned, k).is_none() && keep(k) {
            out.push(Difference {
                field: k.clone(),
                learned: None,
                now: Some(v.clone()),
            });
        }
    }
    out
}

/// A long hex value shortened to its first 8 digits and `…`; anything else as is.
fn short(value: &str) -> String {
    if value.len() > 16 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("{}…", &value[..8])
    } else {
        value.to_owned()
    }
}

fn short_opt(value: &Option<String>) -> String {
    value
        .as_deref()
        .map_or_else(|| "(absent)".to_owned(), short)
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:@%+=,-".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Explains `forensics` against `learned` for `model` in one call (each item
/// is a line number and the line's bytes). Lines that cannot be used are
/// returned with their number and the reason, and otherwise left out.
pub fn explain<'a>(
    model: &Model,
    learned: impl IntoIterator<Item = (u64, &'a [u8])>,
    forensics: impl IntoIterator<Item = (u64, &'a [u8])>,
    ctx: &Context,
) -> (Report, Vec<(u64, ExplainError)>) {
    let mut parser = Parser::default();
    let mut explainer = Explainer::new(model);
    let mut errors = Vec::new();
    for (n, line) in learned {
        if let Err(e) = explainer.learn(&mut parser, n, line) {
            errors.push((n, e));
        }
    }
    for (n, line) in forensics {
        if let Err(e) = explainer.forensic(&mut parser, n, line) {
            errors.push((n, e));
        }
    }
    (explainer.report(ctx), errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASH: &str = "a19fd658e8d728107045f0f9f6546e9bbe2de4aa19d24095053c93ad4df6792f";
    const PARENT: &str = "647110c3e238dca7ec813f0998fa58cd91c2a60d8e19f5bbe048f9566f1cb189";
    const OLD: &str = "948b402ade828c471fefce85e9ad4d51e3e6fe9402f5bbbbd4d9b2e09f375473";
    const NEW: &str = "1a2c000000000000000000000000000000000000000000000000000000000000";

    /// A file_open line of the document events' shape.
    fn open(
        process: &str,
        task: &str,
        capeff: &str,
        path: &str,
        mode: &str,
        flags: &str,
        digest: &str,
    ) -> String {
        format!(
            r#"{{"event": {{"context": "5", "number": "86", "process": "{process}", "type": "file_open", "ttd": "2572", "p_ttd": "2571", "task_id": "{task}", "p_task_id": "{PARENT}", "ts": "153958885"}}, "COE": {{"uid": "0", "euid": "0", "suid": "0", "gid": "0", "egid": "0", "sgid": "0", "fsuid": "0", "fsgid": "0", "capeff": "{capeff}"}}, "file_open": {{"file": {{"flags": "{flags}", "inode": {{"uid": "0", "gid": "0", "mode": "{mode}", "s_magic": "0xef53", "s_id": "sda3", "s_uuid": "e896110b42b24dbca89c7caa36961685"}}, "path": {{"dev": {{"major": "8", "minor": "3"}}, "type": "root", "pathname": "{path}"}}, "digest": "{digest}"}}}}}}"#
        )
    }

    fn history(digest: &str) -> String {
        open(
            "bash",
            BASH,
            "0x1fdffffffff",
            "/root/.bash_history",
            "0100600",
            "32768",
            digest,
        )
    }

    fn passwd() -> String {
        open(
            "bash",
            BASH,
            "0x1fdffffffff",
            "/etc/passwd",
            "0100644",
            "32768",
            OLD,
        )
    }

    fn learned_lines() -> Vec<String> {
        vec![
            passwd(),
            history(OLD),
            open(
                "bash",
                BASH,
                "0x1fdffffffff",
                "/root/.bash_history",
                "0100600",
                "33793",
                OLD,
            ),
        ]
    }

    /// The model `learn` writes for `lines`, with `pseudonyms` in force.
    fn learn(lines: &[String], pseudonyms: &[&str]) -> Model {
        let mut model = Model::new(Profile::Quixote);
        for p in pseudonyms {
            model.add_pseudonym(pseudonym_of(p.as_bytes()));
        }
        let mapper = Mapper::new(Profile::Quixote, model.pseudonyms().clone());
        let mut parser = Parser::default();
        for l in lines {
            let c = parser
                .parse(l.as_bytes(), |r| match r {
                    Record::Event(v) => mapper.coefficient(&v).unwrap(),
                    _ => panic!("not an event"),
                })
                .unwrap();
            model.update(c, l.as_bytes());
        }
        let mut sealed = Model::new(Profile::Quixote);
        tsem_model::modelfile::load(&tsem_model::modelfile::write(&model, false), &mut sealed)
            .unwrap();
        sealed
    }

    fn ctx() -> Context {
        Context {
            model: Some("bash.model".into()),
            learned: Some("learn.jsonl".into()),
            forensics: Some("bash.forensics".into()),
        }
    }

    fn run(model: &Model, learned: &[String], forensics: &[String]) -> Report {
        let (report, errors) = explain(
            model,
            learned
                .iter()
                .enumerate()
                .map(|(i, l)| (i as u64 + 1, l.as_bytes())),
            forensics
                .iter()
                .enumerate()
                .map(|(i, l)| (i as u64 + 1, l.as_bytes())),
            &ctx(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        report
    }

    fn only_event(report: &Report) -> &Finding {
        let events: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.line.is_some())
            .collect();
        assert_eq!(events.len(), 1, "{report:#?}");
        events[0]
    }

    #[test]
    fn digest_changed_asks_for_a_pseudonym_and_flags_the_model() {
        let learned = learned_lines();
        let model = learn(&learned, &[]);
        let report = run(&model, &learned, &[history(NEW)]);
        let f = only_event(&report);
        assert_eq!(f.kind, Kind::DigestChanged);
        assert_eq!(f.learned_line, Some(2), "the read open, not the append");
        assert_eq!(
            f.differences,
            vec![Difference {
                field: "file.digest".into(),
                learned: Some(OLD.into()),
                now: Some(NEW.into()),
            }]
        );
        assert!(f.summary.starts_with(
            "file_open /root/.bash_history by bash: learned with digest 948b402a…, now 1a2c0000…; the file's content changes between runs (bash writes it)"
        ), "{}", f.summary);
        assert_eq!(f.advice, "make it a pseudonym");
        assert_eq!(
            f.command.as_deref(),
            Some("tsem-stream pseudonym /root/.bash_history")
        );
        let m = report.findings.iter().find(|f| f.line.is_none()).unwrap();
        assert_eq!(m.kind, Kind::PseudonymMissing);
        assert_eq!(
            m.command.as_deref(),
            Some("tsem-stream model rebuild --from learn.jsonl --pseudonym /root/.bash_history -o bash.model")
        );
        let text = report.text("bash.forensics");
        assert!(
            text.contains(
                "bash.forensics:1 [digest changed] file_open /root/.bash_history by bash"
            ),
            "{text}"
        );
        assert!(
            text.contains("  -> make it a pseudonym: tsem-stream pseudonym /root/.bash_history\n"),
            "{text}"
        );
        assert!(text.contains("untrusted"), "{text}");
    }

    #[test]
    fn a_changed_library_is_not_made_a_pseudonym() {
        let lib = |d: &str| {
            open(
                "bash",
                BASH,
                "0x1fdffffffff",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "0100755",
                "32768",
                d,
            )
        };
        let learned = vec![lib(OLD)];
        let model = learn(&learned, &[]);
        let report = run(&model, &learned, &[lib(NEW)]);
        let f = only_event(&report);
        assert_eq!(f.kind, Kind::DigestChanged);
        assert!(
            f.summary.contains("the program or library itself changed"),
            "{}",
            f.summary
        );
        assert!(f
            .command
            .as_deref()
            .unwrap()
            .contains("--add-forensics bash.forensics"));
        assert!(report
            .findings
            .iter()
            .all(|f| f.kind != Kind::PseudonymMissing));
    }

    #[test]
    fn task_id_changed_names_the_executable() {
        let learned = learned_lines();
        let model = learn(&learned, &[]);
        let other = "5c1e".repeat(16);
        let now = open(
            "bash",
            &other,
            "0x1fdffffffff",
            "/etc/passwd",
            "0100644",
            "32768",
            OLD,
        );
        let report = run(&model, &learned, &[now]);
        let f = only_event(&report);
        assert_eq!(f.kind, Kind::TaskIdChanged);
        assert_eq!(f.differences.len(), 1);
        assert_eq!(f.differences[0].field, "task_id");
        assert!(f.summary.contains("task_id differs: the executable or its parent chain changed (learned a19fd658…, now 5c1e5c1e…)"), "{}", f.summary);
        assert!(f
            .command
            .as_deref()
            .unwrap()
            .starts_with("tsem-stream model rebuild --from learn.jsonl"));
    }

    #[test]
    fn coe_changed_names_capeff_and_ignores_what_profile_q_does_not_hash() {
        let learned = learned_lines();
        let model = learn(&learned, &[]);
        let now = open(
            "bash",
            BASH,
            "0x1ffffffffff",
            "/etc/passwd",
            "0100644",
            "32768",
            OLD,
        )
        .replace(r#""fsgid": "0""#, r#""fsgid": "7""#)
        .replace(r#""ts": "153958885""#, r#""ts": "1""#);
        let report = run(&model, &learned, &[now]);
        let f = only_event(&report);
        assert_eq!(f.kind, Kind::CoeChanged);
        let fields: Vec<&str> = f.differences.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            ["capeff"],
            "fsgid and ts do not enter a Profile Q coefficient"
        );
        assert!(f.summary.contains("capeff differs"), "{}", f.summary);
    }

    #[test]
    fn other_cell_fields_are_named() {
        let learned = learned_lines();
        let model = learn(&learned, &[]);
        let now = open(
            "bash",
            BASH,
            "0x1fdffffffff",
            "/etc/passwd",
            "0100666",
            "32768",
            OLD,
        )
        .replace(r#""minor": "3""#, r#""minor": "9""#);
        let report = run(&model, &learned, &[now]);
        let f = only_event(&report);
        assert_eq!(f.kind, Kind::CellChanged);
        let fields: Vec<&str> = f.differences.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            ["file.inode.mode"],
            "path.dev is not hashed under Profile Q"
        );
        assert!(
            f.summary.contains(
                "file.inode.mode differs: the object itself changed (learned 0100644, now 0100666)"
            ),
            "{}",
            f.summary
        );

        let flags = open(
            "bash",
            BASH,
            "0x1fdffffffff",
            "/etc/passwd",
            "0100644",
            "33793",
            OLD,
        );
        let report = run(&model, &learned, &[flags]);
        assert_eq!(only_event(&report).kind, Kind::CellChanged);
        assert_eq!(only_event(&report).differences[0].field, "file.flags");
    }

    #[test]
    fn never_seen_is_new_behaviour() {
        let learned = learned_lines();
        let model = learn(&learned, &[]);
        let alias = open(
            "bash",
            BASH,
            "0x1fdffffffff",
            "/etc/locale.alias",
            "0100644",
            "32768",
            OLD,
        );
        let report = run(&model, &learned, &[alias]);
        let f = only_event(&report);
        assert_eq!(f.kind, Kind::NeverSeen);
        assert!(f.summary.contains("never seen: new behaviour; bash did file_open on 2 other files in the learned events, never on this one"), "{}", f.summary);
        assert!(f.advice.contains("a pseudonym does not help"));
        assert_eq!(
            f.command.as_deref(),
            Some("tsem-stream model rebuild --from learn.jsonl --add-forensics bash.forensics -o bash.model")
        );
        let stranger = open(
            "cron",
            BASH,
            "0x1fdffffffff",
            "/etc/crontab",
            "0100644",
            "32768",
            OLD,
        );
        let report = run(&model, &learned, &[stranger]);
        assert!(only_event(&report)
            .summary
            .contains("cron does not appear in the learned events"));
    }

    #[test]
    fn accept_commands_carry_the_pseudonyms_the_forensics_call_for() {
        let learned = learned_lines();
        let model = learn(&learned, &[]);
        let alias = open(
            "bash",
            BASH,
            "0x1fdffffffff",
            "/etc/locale.alias",
            "0100644",
            "32768",
            OLD,
        );
        let report = run(&model, &learned, &[history(NEW), alias]);
        let never = report
            .findings
            .iter()
            .find(|f| f.kind == Kind::NeverSeen)
            .unwrap();
        assert_eq!(
            never.command.as_deref(),
            Some("tsem-stream model rebuild --from learn.jsonl --pseudonym /root/.bash_history --add-forensics bash.forensics -o bash.model")
        );
    }

    #[test]
    fn a_model_learned_with_a_pseudonym_it_does_not_list() {
        let learned = learned_lines();
        let mut model = learn(&learned, &["/root/.bash_history"]);
        // Written by a tool that drops pseudonym lines (Quixote's `-o`).
        let text = tsem_model::modelfile::write(&model, false)
            .lines()
            .filter(|l| !l.starts_with("pseudonym"))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        model = Model::new(Profile::Quixote);
        tsem_model::modelfile::load(&text, &mut model).unwrap();
        // Without the learned events too: the check needs only the model.
        let report = run(&model, &[], &[history(NEW)]);
        let f = only_event(&report);
        assert_eq!(f.kind, Kind::PseudonymMissing);
        assert_eq!(
            f.command.as_deref(),
            Some("tsem-stream learn -m bash.model --pseudonym /root/.bash_history -o bash.model /dev/null")
        );
        assert!(report
            .findings
            .iter()
            .any(|f| f.line.is_none() && f.kind == Kind::PseudonymMissing));
    }

    #[test]
    fn a_pseudonym_added_after_learning_leaves_the_model_stale() {
        let learned = learned_lines();
        let learned_model = learn(&learned, &[]);
        let text = tsem_model::modelfile::write(&learned_model, false).replace(
            "seal\n",
            &format!("pseudonym {}\nseal\n", pseudonym_of(b"/root/.bash_history")),
        );
        let mut model = Model::new(Profile::Quixote);
        tsem_model::modelfile::load(&text, &mut model).unwrap();
        let report = run(&model, &learned, &[history(NEW)]);
        let f = only_event(&report);
        assert_eq!(f.kind, Kind::ModelStale);
        assert!(
            f.summary
                .contains("pseudonym lines were added after it was learned"),
            "{}",
            f.summary
        );
        assert_eq!(
            f.command.as_deref(),
            Some("tsem-stream model rebuild --from learn.jsonl --pseudonyms bash.model -o bash.model")
        );
        let m = report.findings.iter().find(|f| f.line.is_none()).unwrap();
        assert_eq!(m.kind, Kind::ModelStale);
        assert!(
            m.summary.starts_with("2 of 3 distinct learned events"),
            "{}",
            m.summary
        );
        // Without the learned events the pseudonym is still the clue.
        let report = run(&model, &[], &[history(NEW)]);
        assert_eq!(only_event(&report).kind, Kind::ModelStale);
    }

    #[test]
    fn a_model_overwritten_by_another_learn() {
        let learned = learned_lines();
        // A later learn of another run replaced the model.
        let other = vec![history(NEW), passwd()];
        let model = learn(&other, &[]);
        let forensic = open(
            "bash",
            BASH,
            "0x1fdffffffff",
            "/root/.bash_history",
            "0100600",
            "33793",
            OLD,
        );
        let report = run(&model, &learned, &[forensic]);
        let f = only_event(&report);
        assert_eq!(f.kind, Kind::ModelOverwritten);
        assert_eq!(f.learned_line, Some(3));
        let m = report.findings.iter().find(|f| f.line.is_none()).unwrap();
        assert_eq!(m.kind, Kind::ModelOverwritten);
        assert!(
            m.summary
                .starts_with("2 of 3 distinct learned events are not in bash.model"),
            "{}",
            m.summary
        );
    }

    #[test]
    fn events_in_the_model_and_events_without_reference() {
        let learned = learned_lines();
        let model = learn(&learned, &[]);
        let report = run(&model, &[], &[passwd()]);
        assert_eq!(only_event(&report).kind, Kind::InModel);
        assert!(!report.text("f").contains("untrusted"));
        let report = run(&model, &[], &[history(NEW)]);
        assert_eq!(only_event(&report).kind, Kind::NoReference);
    }

    #[test]
    fn generic_events_differ_only_where_profile_q_hashes() {
        let capable = |task: &str, cap: &str| {
            format!(
                r#"{{"event": {{"process": "bash", "type": "capable", "task_id": "{task}"}}, "COE": {{"uid": "0", "euid": "0", "suid": "0", "gid": "0", "egid": "0", "sgid": "0", "fsuid": "0", "fsgid": "0", "capeff": "0x1fdffffffff"}}, "capable": {{"cap": "{cap}", "opts": "0"}}}}"#
            )
        };
        let learned = vec![capable(BASH, "8")];
        let model = learn(&learned, &[]);
        let other = "77".repeat(32);
        let report = run(&model, &learned, &[capable(&other, "21")]);
        let f = only_event(&report);
        assert_eq!(f.kind, Kind::TaskIdChanged);
        let fields: Vec<&str> = f.differences.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["task_id"], "the cap is not hashed under Profile Q");
        assert_eq!(f.event.as_ref().unwrap().target, "");
        assert!(f.summary.starts_with("capable by bash: task_id differs"));
    }

    #[test]
    fn profile_k_names_the_parent_task_and_fsgid() {
        let learned = vec![passwd()];
        let mut model = Model::new(Profile::Kernel);
        let mapper = Mapper::new(Profile::Kernel, Pseudonyms::new());
        let mut parser = Parser::default();
        let c = parser
            .parse(learned[0].as_bytes(), |r| match r {
                Record::Event(v) => mapper.coefficient(&v).unwrap(),
                _ => panic!("not an event"),
            })
            .unwrap();
        model.load_point(c).unwrap();
        model.seal();
        let now = passwd()
            .replace(
                &format!(r#""p_task_id": "{PARENT}""#),
                &format!(r#""p_task_id": "{}""#, "99".repeat(32)),
            )
            .replace(r#""fsgid": "0""#, r#""fsgid": "7""#);
        let report = run(&model, &learned, &[now]);
        let f = only_event(&report);
        assert_eq!(f.kind, Kind::TaskIdChanged);
        let fields: Vec<&str> = f.differences.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["p_task_id", "fsgid"], "Profile K hashes both");
        assert!(
            f.summary
                .contains("p_task_id differs: the parent's executable or its parent chain changed"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let model = Model::new(Profile::Quixote);
        let lines: Vec<&[u8]> = vec![
            b"{",
            b"",
            br#"{"export": {"type": "aggregate"}, "aggregate": {"value": "00"}}"#,
        ];
        let (report, errors) = explain(
            &model,
            std::iter::empty(),
            lines
                .into_iter()
                .enumerate()
                .map(|(i, l)| (i as u64 + 1, l)),
            &Context::default(),
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 1);
        assert_eq!(report.forensic_events, 0);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/root/.bash_history"), "/root/.bash_history");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
