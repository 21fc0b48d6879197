//! `tsem-stream console`: the views of a running workload's model through
//! its management socket, with the flags and output of `quixote-console`
//! v1.8 (mapping.md M13); or of a model store, offline.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use tsem_model::views::{render, View};
use tsem_process::mgmt::{self, Client, MgmtError, DEFAULT_MGMT_DIR};
use tsem_store::model_from_snapshot;
use tsem_store::StoreSnapshot;

/// Options of `console`.
#[derive(Args, Clone, Debug)]
pub struct ConsoleArgs {
    /// The workload (its socket is MGMT_DIR/NAME). Without a view: list the
    /// running workloads.
    #[arg(short = 'w', long = "workload", value_name = "NAME")]
    pub workload: Option<String>,
    /// The trajectory: one event description per line (-s coefficients, -c counts).
    #[arg(short = 'T')]
    pub trajectory: bool,
    /// The forensics: events outside the sealed model (-s coefficients, -c counts).
    #[arg(short = 'F')]
    pub forensics: bool,
    /// The state value.
    #[arg(short = 'S')]
    pub state: bool,
    /// The model (-u: with the forensics points as updates).
    #[arg(short = 'M')]
    pub model: bool,
    /// The measurement value.
    #[arg(long)]
    pub measurement: bool,
    /// Seal the running model: from now on new behaviour is forensics.
    #[arg(long, conflicts_with = "store")]
    pub seal: bool,
    /// With -T or -F: the coefficients.
    #[arg(short = 's', conflicts_with = "counts")]
    pub coefficients: bool,
    /// With -T or -F: the counts.
    #[arg(short = 'c')]
    pub counts: bool,
    /// Prefix coefficient lines with `state ` (model file syntax).
    #[arg(short = 'p')]
    pub prefix: bool,
    /// With -M: add the forensics points.
    #[arg(short = 'u')]
    pub update: bool,
    /// Directory of the management sockets.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MGMT_DIR)]
    pub mgmt_dir: PathBuf,
    /// Show a view of a model store instead of a running workload.
    #[arg(long, value_name = "DIR", conflicts_with = "workload")]
    pub store: Option<PathBuf>,
}

/// What the flags ask for.
enum Mode {
    /// List the workloads.
    List,
    /// Seal a running model.
    Seal,
    /// Show a view (its `show` name).
    View(&'static str),
}

fn mode(args: &ConsoleArgs) -> anyhow::Result<Mode> {
    let picked: Vec<&str> = [
        ("-T", args.trajectory),
        ("-F", args.forensics),
        ("-S", args.state),
        ("-M", args.model),
        ("--measurement", args.measurement),
        ("--seal", args.seal),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(flag, _)| *flag)
    .collect();
    if picked.len() > 1 {
        bail!(
            "choose one of -T, -F, -S, -M, --measurement, --seal (not {})",
            picked.join(" and ")
        );
    }
    if (args.coefficients || args.counts) && !(args.trajectory || args.forensics) {
        bail!("-s and -c go with -T or -F");
    }
    if args.update && !args.model {
        bail!("-u goes with -M");
    }
    let list = |coefficients, counts, plain| {
        if args.coefficients {
            coefficients
        } else if args.counts {
            counts
        } else {
            plain
        }
    };
    Ok(match picked.first().copied() {
        None => Mode::List,
        Some("-T") => Mode::View(list("coefficients", "counts", "trajectory")),
        Some("-F") => Mode::View(list(
            "forensics-coefficients",
            "forensics-counts",
            "forensics",
        )),
        Some("-S") => Mode::View("state"),
        Some("-M") => Mode::View("model"),
        Some("--measurement") => Mode::View("measurement"),
        _ => Mode::Seal,
    })
}

/// Writes `header` (on a terminal) and `body`; a closed stdout is not an error.
fn print(header: Option<String>, body: &[u8]) -> anyhow::Result<ExitCode> {
    let mut out = BufWriter::new(io::stdout().lock());
    let written = (|| {
        if let Some(h) = header {
            writeln!(out, "{h}")?;
        }
        out.write_all(body)?;
        out.flush()
    })();
    match written {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => r.map(|()| ExitCode::SUCCESS).map_err(Into::into),
    }
}

/// Connects to a workload, with messages that say what is wrong.
fn connect(dir: &Path, name: &str) -> anyhow::Result<Client> {
    let path = mgmt::socket_path(dir, name)?;
    match Client::connect(&path) {
        Ok(c) => Ok(c),
        Err(MgmtError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            bail!(
                "no workload {name} is running (no socket {})",
                path.display()
            )
        }
        Err(MgmtError::Io { source, .. }) if source.kind() == io::ErrorKind::ConnectionRefused => {
            bail!(
                "workload {name} does not answer (stale socket {})",
                path.display()
            )
        }
        Err(e) => Err(e.into()),
    }
}

fn list(dir: &Path) -> anyhow::Result<ExitCode> {
    let names = mgmt::list_workloads(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut text = String::from("Workloads:\n");
    for n in names {
        text.push('\t');
        text.push_str(&n);
        text.push('\n');
    }
    print(None, text.as_bytes())
}

/// `tsem-stream console`.
pub fn run(args: &ConsoleArgs) -> anyhow::Result<ExitCode> {
    let mode = mode(args)?;
    let terminal = io::stdout().is_terminal();
    if let Some(dir) = &args.store {
        let Mode::View(name) = mode else {
            bail!("with --store, choose a view: -T, -F, -S, -M or --measurement");
        };
        let view = View::from_name(name, args.update).context("unknown view")?;
        let snapshot =
            StoreSnapshot::open(dir).with_context(|| format!("store {}", dir.display()))?;
        let model = model_from_snapshot(&snapshot);
        let mut body = Vec::new();
        render(&model, view, args.prefix, &mut body)?;
        let header = view.terminal_header(&model).filter(|_| terminal);
        return print(header, &body);
    }
    let name = || {
        args.workload
            .as_deref()
            .context("which workload? give -w NAME (`tsem-stream console` lists the running ones)")
    };
    let view_name = match mode {
        Mode::List => return list(&args.mgmt_dir),
        Mode::Seal => {
            let name = name()?;
            connect(&args.mgmt_dir, name)?
                .seal()
                .with_context(|| format!("workload {name}"))?;
            return Ok(ExitCode::SUCCESS);
        }
        Mode::View(v) => v,
    };
    let name = name()?;
    let view = View::from_name(view_name, args.update).context("unknown view")?;
    let mut client = connect(&args.mgmt_dir, name)?;
    let ctx = || format!("workload {name}");
    // The sizes only when a header is printed: one request less otherwise.
    let header = if terminal && mgmt::terminal_header(view, Default::default()).is_some() {
        mgmt::terminal_header(view, client.sizes().with_context(ctx)?)
    } else {
        None
    };
    let body = client
        .view(view_name, args.prefix, args.update)
        .with_context(ctx)?;
    print(header, &body)
}
