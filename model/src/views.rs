//! The console views of mapping.md M13 (`quixote-console -T/-F/-S/-M` and their
//! `-s`/`-c`/`-p`/`-u` modifiers), rendered from a model.

use std::io::{self, Write};

use crate::modelfile;
use crate::state::Model;

/// One of the views of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Descriptions of the trajectory (valid new points), one per line.
    Trajectory,
    /// Valid coefficients in insertion order.
    Coefficients,
    /// Counts of the valid points.
    Counts,
    /// Descriptions of forensics events.
    Forensics,
    /// Forensics (invalid) coefficients.
    ForensicsCoefficients,
    /// Counts of the forensics points.
    ForensicsCounts,
    /// The state value.
    State,
    /// The measurement value.
    Measurement,
    /// The model file (`-M`); `update` adds the forensics points (`-M -u`).
    Model {
        /// Include forensics points as updates.
        update: bool,
    },
}

impl View {
    /// Parses a view name of the command line.
    pub fn from_name(name: &str, update: bool) -> Option<View> {
        Some(match name {
            "trajectory" => View::Trajectory,
            "coefficients" => View::Coefficients,
            "counts" => View::Counts,
            "forensics" => View::Forensics,
            "forensics-coefficients" => View::ForensicsCoefficients,
            "forensics-counts" => View::ForensicsCounts,
            "state" => View::State,
            "measurement" => View::Measurement,
            "model" => View::Model { update },
            _ => return None,
        })
    }

    /// The header line `quixote-console` prints before a list on a terminal.
    pub fn terminal_header(self, model: &Model) -> Option<String> {
        let valid = model.points().iter().filter(|p| p.valid).count();
        self.header_for(valid as u64, (model.points().len() - valid) as u64)
    }

    /// The same header from point counts (e.g. reported by a remote model).
    pub fn header_for(self, valid: u64, invalid: u64) -> Option<String> {
        match self {
            View::Trajectory => Some(format!("Trajectory size: {valid}")),
            View::Coefficients | View::Counts => Some(format!("List size: {valid}")),
            View::Forensics => Some(format!("Forensics size: {invalid}")),
            View::ForensicsCoefficients | View::ForensicsCounts => {
                Some(format!("List size: {invalid}"))
            }
            View::State | View::Measurement | View::Model { .. } => None,
        }
    }
}

/// Writes `view` of `model`; `prefix` puts `state ` before coefficient lines (`-p`).
pub fn render(model: &Model, view: View, prefix: bool, out: &mut impl Write) -> io::Result<()> {
    let pre = if prefix { "state " } else { "" };
    let points = model.points();
    match view {
        View::Trajectory => {
            for line in model.trajectory() {
                out.write_all(line)?;
                out.write_all(b"\n")?;
            }
        }
        View::Forensics => {
            for line in model.forensics() {
                out.write_all(line)?;
                out.write_all(b"\n")?;
            }
        }
        View::Coefficients | View::ForensicsCoefficients => {
            let valid = view == View::Coefficients;
            for p in points.iter().filter(|p| p.valid == valid) {
                writeln!(out, "{pre}{}", p.coefficient)?;
            }
        }
        View::Counts | View::ForensicsCounts => {
            let valid = view == View::Counts;
            for p in points.iter().filter(|p| p.valid == valid) {
                writeln!(out, "{}", p.count)?;
            }
        }
        View::State => writeln!(out, "{}", model.state())?,
        View::Measurement => writeln!(out, "{}", model.measurement())?,
        View::Model { update } => out.write_all(modelfile::write(model, update).as_bytes())?,
    }
    Ok(())
}
