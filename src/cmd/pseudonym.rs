//! `tsem-stream pseudonym`: pseudonym values for pathnames (like Quixote's generate-pseudonym).

use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tsem_ingest::{Member, Parser, Record};
use tsem_model::pseudonym_of;

use super::{display_name, open_lines};

/// Runs the command.
pub fn run(
    file: Option<&Path>,
    events: Option<&Path>,
    paths: &[String],
) -> anyhow::Result<ExitCode> {
    let mut out = BufWriter::new(io::stdout().lock());
    let mut emit = |path: &[u8]| writeln!(out, "pseudonym {}", pseudonym_of(path));
    for p in paths {
        emit(p.as_bytes())?;
    }
    if let Some(file) = file {
        let text =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        for line in text.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                emit(line)?;
            }
        }
    }
    let mut status = ExitCode::SUCCESS;
    if let Some(events) = events {
        let name = display_name(events);
        let mut parser = Parser::default();
        let mut failure = None;
        tsem_ingest::for_each_record(&mut *open_lines(events)?, |n, line| {
            let Ok(line) = line else {
                eprintln!("{name}:{n}: record exceeds the length limit");
                status = ExitCode::from(1);
                return ControlFlow::Continue(());
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                return ControlFlow::Continue(());
            }
            let parsed = parser.parse(line, |r| match r {
                Record::Event(view) => pathname(&view).map(|p| p.map(|p| emit(p.as_bytes()))),
                _ => Ok(None),
            });
            match parsed {
                Ok(Ok(Some(Err(e)))) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
                Ok(Ok(_)) => ControlFlow::Continue(()),
                Ok(Err(msg)) | Err(tsem_ingest::ParseError::Json(msg)) => {
                    eprintln!("{name}:{n}: {msg}");
                    status = ExitCode::from(1);
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    eprintln!("{name}:{n}: {e}");
                    status = ExitCode::from(1);
                    ControlFlow::Continue(())
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e.into());
        }
    }
    out.flush()?;
    Ok(status)
}

/// `<type>.file.path.pathname` of an event, if it has one (unescaped, with the
/// empty-string rule of the mapping).
fn pathname<'a>(view: &tsem_ingest::EventView<'a>) -> Result<Option<&'a str>, String> {
    let Some(cell) = view.cell else {
        return Ok(None);
    };
    let Some(Member::Obj(file)) = cell.get("file") else {
        return Ok(None);
    };
    let Some(Member::Obj(path)) = file.get("path") else {
        return Ok(None);
    };
    match path.get("pathname") {
        Some(Member::Str("")) => Ok(Some("\"")),
        Some(Member::Str(s)) => Ok(Some(s)),
        _ => Err("file.path.pathname is missing".to_owned()),
    }
}
