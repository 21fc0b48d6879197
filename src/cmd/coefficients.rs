//! `tsem-stream coefficients`: one coefficient per event line.

use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;

use tsem_ingest::{Parser, Record};
use tsem_model::{Mapper, Profile};

use super::{display_name, load_pseudonyms, open_lines};
use crate::cli::OnError;

/// Runs the command; returns the exit status (1 when a line was bad).
pub fn run(
    profile: Profile,
    pseudonyms: Option<&Path>,
    prefix: bool,
    on_error: OnError,
    input: &Path,
) -> anyhow::Result<ExitCode> {
    let mapper = Mapper::new(profile, load_pseudonyms(pseudonyms)?);
    let name = display_name(input);
    let mut source = open_lines(input)?;
    let mut parser = Parser::default();
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut bad = 0u64;
    let mut unknown = 0u64;
    let mut io_error = None;
    tsem_ingest::for_each_record(&mut *source, |n, line| {
        let result = match line {
            Err(over) => Err(format!("record of {} bytes exceeds the limit", over.0)),
            Ok(l) if l.iter().all(u8::is_ascii_whitespace) => return ControlFlow::Continue(()),
            Ok(l) => parser
                .parse(l, |record| match record {
                    Record::Event(view) => {
                        if view.event_type.is_none() {
                            unknown += 1;
                        }
                        mapper
                            .coefficient(&view)
                            .map(Some)
                            .map_err(|e| format!("{}: {e}", view.type_name))
                    }
                    // The platform's measurement, not an event: nothing to print.
                    Record::Aggregate { .. } => Ok(None),
                    Record::LogNotice { .. } => {
                        Err("log record without an event description".to_owned())
                    }
                })
                .map_err(|e| e.to_string())
                .and_then(|r| r),
        };
        let written = match result {
            Ok(None) => Ok(()),
            Ok(Some(c)) => {
                let mut hex = [0u8; 64];
                c.write_hex(&mut hex);
                let p: &[u8] = if prefix { b"state " } else { b"" };
                out.write_all(p)
                    .and_then(|()| out.write_all(&hex))
                    .and_then(|()| out.write_all(b"\n"))
            }
            Err(msg) => {
                bad += 1;
                // Flush what came before so stdout and stderr stay in order.
                let flushed = out.flush();
                eprintln!("{name}:{n}: {msg}");
                if on_error == OnError::Stop {
                    return ControlFlow::Break(());
                }
                flushed.and_then(|()| out.write_all(b"-\n"))
            }
        };
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                io_error = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = io_error {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(e.into());
    }
    out.flush()?;
    if unknown > 0 {
        eprintln!("{name}: {unknown} event(s) with names outside the TSEM table were mapped with the generic rule");
    }
    Ok(if bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
