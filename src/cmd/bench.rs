//! `tsem-stream bench`: a reproducible load run on the user's own host.
//!
//! 1. Throughput: a generated corpus (real event lines as templates, new task
//!    identities mixed in) is modeled from a memory-mapped file for each worker
//!    count; the median of three runs is reported.
//! 2. Latency: the kernel simulator offers synchronous events at each rate and
//!    measures the round trip to the verdict (hdrhistogram percentiles).
//!
//! Writes `report.json`, `report.md`, `throughput.svg` and `latency.svg`.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use plotters::prelude::*;
use serde_json::{json, Value};
use tsem_ingest::MappedFile;
use tsem_ingest::DEFAULT_MAX_RECORD_LEN;
use tsem_model::NoObserver;
use tsem_model::{Mapper, Model, Profile, Pseudonyms};
use tsem_pipeline::{ControlProtocol, ModelSink, Outputs, PipelineOptions, VerdictWriter};
use tsem_sim::corpus::{generate, CorpusSpec};
use tsem_sim::{self as sim, SimOptions};

/// The conformance corpus mix, used as templates.
const TEMPLATES: &[u8] = include_bytes!("../../examples/conformance-mix.jsonl");

/// Options of `bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Events in the generated corpus (throughput part).
    #[arg(long, default_value_t = 500_000)]
    pub events: u64,
    /// Worker counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub workers: Vec<usize>,
    /// Offered rates (synchronous events per second) for the latency part.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    pub rate: Vec<f64>,
    /// Seconds of load at each rate.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Share of generated events with a new task identity (model growth).
    #[arg(long, default_value_t = 0.02)]
    pub new_fraction: f64,
    /// Where the report goes.
    #[arg(long, default_value = "bench-report")]
    pub out: PathBuf,
}

fn throughput(corpus: &Path, workers: usize) -> anyhow::Result<f64> {
    let mut rates = Vec::new();
    for _ in 0..3 {
        let source = Box::new(MappedFile::open(corpus, DEFAULT_MAX_RECORD_LEN)?);
        let mut model = Model::new(Profile::Quixote);
        model.keep_descriptions(false);
        let mut sink = ModelSink::new(model);
        let mapper = Arc::new(Mapper::new(Profile::Quixote, Pseudonyms::new()));
        let options = PipelineOptions {
            workers,
            queue_depth: 4 * workers,
            ..PipelineOptions::default()
        };
        let stats = tsem_pipeline::run(
            source,
            mapper,
            &mut sink,
            Outputs::default(),
            &options,
            &mut NoObserver,
        )?;
        rates.push(stats.rate());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[1])
}

fn latency(dir: &Path, events_file: &Path, rate: f64) -> anyhow::Result<Value> {
    let root = dir.join(format!("tsem-{rate}"));
    let mut opts = SimOptions::new(&root, events_file);
    opts.rate = Some(rate);
    let sim_thread = std::thread::spawn(move || sim::run(&opts));
    let export = root.join("external_tma/1");
    let control = root.join("control");
    let start = Instant::now();
    while !(export.exists() && control.exists()) {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "the simulator did not start"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let verdicts = Arc::new(VerdictWriter::open(&control, ControlProtocol::Tnum)?);
    let source = super::export_source(&export, Duration::from_micros(30), None)?;
    let mut sink = ModelSink::new(Model::new(Profile::Quixote));
    let mapper = Arc::new(Mapper::new(Profile::Quixote, Pseudonyms::new()));
    let outputs = Outputs {
        verdicts: Some(verdicts),
        ..Outputs::default()
    };
    tsem_pipeline::run(
        source,
        mapper,
        &mut sink,
        outputs,
        &PipelineOptions::default(),
        &mut NoObserver,
    )?;
    let report = sim_thread
        .join()
        .map_err(|_| anyhow::anyhow!("simulator thread panicked"))??;
    Ok(serde_json::to_value(report)?)
}

fn plot_throughput(path: &Path, points: &[(usize, f64)]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_w = points.iter().map(|p| p.0).max().unwrap_or(1) as f64;
    let max_r = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("tsem-stream throughput", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_w + 1.0, 0.0..max_r)?;
    chart
        .configure_mesh()
        .x_desc("workers")
        .y_desc("events/s")
        .draw()?;
    let series: Vec<(f64, f64)> = points.iter().map(|&(w, r)| (w as f64, r)).collect();
    chart.draw_series(LineSeries::new(series.clone(), &BLUE))?;
    chart.draw_series(series.into_iter().map(|p| Circle::new(p, 4, BLUE.filled())))?;
    root.present()?;
    Ok(())
}

fn plot_latency(path: &Path, rows: &[(f64, [f64; 4])]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_rate = rows.iter().map(|r| r.0).fold(1.0, f64::max) * 1.1;
    let max_us = rows.iter().flat_map(|r| r.1).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("sync round trip through the simulator", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_rate, 0.0..max_us)?;
    chart
        .configure_mesh()
        .x_desc("offered events/s")
        .y_desc("µs")
        .draw()?;
    for (i, (name, color)) in [("p50", BLUE), ("p90", GREEN), ("p99", RED), ("p999", BLACK)]
        .into_iter()
        .enumerate()
    {
        let series: Vec<(f64, f64)> = rows.iter().map(|r| (r.0, r.1[i])).collect();
        chart
            .draw_series(LineSeries::new(series, color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let scratch = tempfile::tempdir_in(&args.out)?;
    let corpus = scratch.path().join("corpus.jsonl");
    let spec = CorpusSpec {
        events: args.events,
        new_fraction: args.new_fraction,
        seed: 1,
    };
    {
        let mut w = BufWriter::new(File::create(&corpus)?);
        generate(TEMPLATES, &spec, &mut w)?;
        std::io::Write::flush(&mut w)?;
    }
    let mut tp = Vec::new();
    for &w in &args.workers {
        let r = throughput(&corpus, w.max(1))?;
        eprintln!("throughput: {w} worker(s): {r:.0} events/s");
        tp.push((w.max(1), r));
    }
    let mut lat = Vec::new();
    let mut lat_json = Vec::new();
    for &rate in &args.rate {
        let n = ((rate * args.seconds) as u64).clamp(100, 2_000_000);
        let file = scratch.path().join(format!("latency-{rate}.jsonl"));
        let mut w = BufWriter::new(File::create(&file)?);
        generate(
            TEMPLATES,
            &CorpusSpec {
                events: n,
                ..spec.clone()
            },
            &mut w,
        )?;
        std::io::Write::flush(&mut w)?;
        drop(w);
        let report = latency(scratch.path(), &file, rate)?;
        let p = |k: &str| report[k].as_f64().unwrap_or(0.0);
        eprintln!(
            "latency at {rate} events/s: p50 {} µs, p99 {} µs, achieved {:.0}/s, missing {}",
            p("p50_us"),
            p("p99_us"),
            p("achieved_rate"),
            report["missing"]
        );
        lat.push((rate, [p("p50_us"), p("p90_us"), p("p99_us"), p("p999_us")]));
        lat_json.push(json!({ "offered_rate": rate, "simulator": report }));
    }
    let report = json!({
        "host": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) },
        "corpus": { "events": args.events, "new_fraction": args.new_fraction, "templates": "conformance mix" },
        "throughput": tp.iter().map(|(w, r)| json!({"workers": w, "events_per_s": r})).collect::<Vec<_>>(),
        "latency": lat_json,
    });
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let mut md = String::from(
        "# tsem-stream bench\n\n## Throughput (median of 3)\n\n| workers | events/s |\n|---|---|\n",
    );
    for (w, r) in &tp {
        md.push_str(&format!("| {w} | {r:.0} |\n"));
    }
    md.push_str("\n## Synchronous round trip through the simulator (µs)\n\n| offered/s | p50 | p90 | p99 | p999 | max | missing |\n|---|---|---|---|---|---|---|\n");
    for j in &lat_json {
        let s = &j["simulator"];
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            j["offered_rate"],
            s["p50_us"],
            s["p90_us"],
            s["p99_us"],
            s["p999_us"],
            s["max_us"],
            s["missing"]
        ));
    }
    std::fs::write(args.out.join("report.md"), md)?;
    plot_throughput(&args.out.join("throughput.svg"), &tp)?;
    plot_latency(&args.out.join("latency.svg"), &lat)?;
    eprintln!("report written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// `tsem-stream generate`: a corpus on stdout.
pub fn generate_command(
    events: u64,
    new_fraction: f64,
    seed: u64,
    templates: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let owned;
    let templates = match templates {
        Some(p) => {
            owned = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            &owned[..]
        }
        None => TEMPLATES,
    };
    let spec = CorpusSpec {
        events,
        new_fraction,
        seed,
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    match generate(templates, &spec, &mut out).and_then(|_| std::io::Write::flush(&mut out)) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => r.map(|_| ExitCode::SUCCESS).map_err(Into::into),
    }
}
