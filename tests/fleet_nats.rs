//! Fleet streaming through a real NATS server: three simulated hosts
//! publish a third of the conformance corpus each; a central replay, a
//! fleet archive and a fleet model see the whole corpus.

mod common;
mod fleet_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use fleet_common::*;
use serde_json::Value;

const CORPUS_STATE: &str = "d4196e89625fa29e068cb2c5cf51da65b4efc9b87f8cf209b725f2fe41cf5f51";
const CORPUS_MEASUREMENT: &str = "2b72eefc576a9d7184d777c7d692823d43b76190c0f8e36d4cd2dba828e20c84";

fn json_of(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what}: {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// One test's corner of the server: its own stream and subject prefix.
struct Fleet {
    server: String,
    url: String,
    prefix: String,
    stream: String,
    tmp: tempfile::TempDir,
}

impl Fleet {
    fn new(server: String) -> Fleet {
        let prefix = unique("t");
        let stream = prefix.to_uppercase();
        Fleet {
            url: format!("{server}?stream={stream}&prefix={prefix}"),
            server,
            prefix,
            stream,
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `run --input PART --publish … --host HOST` with its own buffer.
    fn publish_args(&self, part: &Path, host: &str) -> Vec<String> {
        [
            "run",
            "--input",
            part.to_str().unwrap(),
            "--publish",
            &self.url,
            "--host",
            host,
            "--publish-buffer",
            self.path(&format!("buffer-{host}")).to_str().unwrap(),
            "--summary",
            "json",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn publish(&self, part: &Path, host: &str) -> Value {
        let args = self.publish_args(part, host);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        json_of(&run(&args), &format!("publish {host}"))
    }

    fn events_subject(&self) -> String {
        format!("{}.*.*.events", self.prefix)
    }
}

fn publish_report(summary: &Value) -> &Value {
    &summary["publish"][0]
}

#[test]
fn three_hosts_publishing_at_once_give_the_corpus_state_centrally() {
    let Some(server) = nats_url("three_hosts_publishing_at_once") else {
        return;
    };
    let fleet = Fleet::new(server);
    let parts = corpus_parts(fleet.tmp.path());
    // Three hosts at the same time: their records interleave in the stream.
    let children: Vec<_> = parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            bin()
                .args(fleet.publish_args(part, &format!("h{}", i + 1)))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut published = 0;
    for (i, c) in children.into_iter().enumerate() {
        let s = json_of(&c.wait_with_output().unwrap(), &format!("h{}", i + 1));
        let p = publish_report(&s);
        assert_eq!(p["dropped"], 0, "{p}");
        assert_eq!(p["pending"], 0, "{p}");
        assert_eq!(
            p["subject"],
            format!("{}.h{}.local.events", fleet.prefix, i + 1)
        );
        // 1000 records and the final summary on the forensics subject.
        assert_eq!(p["published"], 1001, "{p}");
        eprintln!("h{}: {:.0} messages/s", i + 1, p["rate"].as_f64().unwrap());
        published += 1001;
    }
    assert_eq!(stream_messages(&fleet.server, &fleet.stream), published);

    // The central replay: in stream order, the state and the points of the
    // whole corpus (the measurement depends on the interleaving).
    let subject = fleet.events_subject();
    let central = json_of(
        &run(&[
            "replay",
            &fleet.url,
            "--subject",
            &subject,
            "--until-idle",
            "1",
            "--summary",
            "json",
        ]),
        "central replay",
    );
    assert_eq!(central["events"], 3000);
    assert_eq!(central["points"], 2212);
    assert_eq!(central["state"], CORPUS_STATE);
    assert_eq!(central["errors"], 0);

    // The same through `fleet replay` with two workers.
    let again = json_of(
        &run(&[
            "fleet",
            "replay",
            &fleet.url,
            "--until-idle",
            "1",
            "--workers",
            "2",
            "--summary",
            "json",
        ]),
        "fleet replay",
    );
    assert_eq!(again["state"], CORPUS_STATE);
    assert_eq!(again["measurement"], central["measurement"]);
}

#[test]
fn hosts_publishing_in_turn_give_the_corpus_measurement_and_restarts_add_nothing() {
    let Some(server) = nats_url("hosts_publishing_in_turn") else {
        return;
    };
    let fleet = Fleet::new(server);
    let parts = corpus_parts(fleet.tmp.path());
    for (i, part) in parts.iter().enumerate() {
        let p = fleet.publish(part, &format!("h{}", i + 1));
        assert_eq!(publish_report(&p)["duplicates"], 0);
    }
    assert_eq!(stream_messages(&fleet.server, &fleet.stream), 3003);
    // Publishing h2's part again (a restart): the same ids, nothing stored twice.
    let again = fleet.publish(&parts[1], "h2");
    let report = publish_report(&again);
    assert_eq!(report["published"], 1001, "{report}");
    assert_eq!(report["duplicates"], 1001, "{report}");
    assert_eq!(stream_messages(&fleet.server, &fleet.stream), 3003);

    // In stream order = the original order: the measurement too.
    let subject = fleet.events_subject();
    let replay = |durable: &str| {
        json_of(
            &run(&[
                "replay",
                &fleet.url,
                "--subject",
                &subject,
                "--durable",
                durable,
                "--until-idle",
                "1",
                "--summary",
                "json",
            ]),
            "replay",
        )
    };
    let central = replay("central");
    assert_eq!(central["events"], 3000);
    assert_eq!(central["points"], 2212);
    assert_eq!(central["state"], CORPUS_STATE);
    assert_eq!(central["measurement"], CORPUS_MEASUREMENT);
    // The durable consumer acknowledged everything it applied: nothing is left.
    let after = replay("central");
    assert_eq!(after["events"], 0, "{after}");
    // Another consumer starts from the beginning.
    assert_eq!(replay("other")["measurement"], CORPUS_MEASUREMENT);

    // One host's stream alone is that host's part.
    let h2 = json_of(
        &run(&[
            "replay",
            &fleet.url,
            "--subject",
            &format!("{}.h2.local.events", fleet.prefix),
            "--until-idle",
            "1",
            "--summary",
            "json",
        ]),
        "replay h2",
    );
    let learned = json_of(
        &run(&[
            "learn",
            "--summary",
            "json",
            "-o",
            fleet.path("m2").to_str().unwrap(),
            parts[1].to_str().unwrap(),
        ]),
        "learn part 2",
    );
    assert_eq!(h2["measurement"], learned["measurement"]);
}

#[test]
fn the_fleet_is_archived_once_and_replays_from_the_archive() {
    let Some(server) = nats_url("the_fleet_is_archived_once") else {
        return;
    };
    let fleet = Fleet::new(server);
    let parts = corpus_parts(fleet.tmp.path());
    for (i, part) in parts.iter().enumerate() {
        fleet.publish(part, &format!("h{}", i + 1));
    }
    let archive = fleet.path("central-archive");
    let a = archive.to_str().unwrap();
    let subject = fleet.events_subject();
    let write = || {
        let out = run(&[
            "archive",
            "write",
            a,
            &fleet.url,
            "--subject",
            &subject,
            "--until-idle",
            "1",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(write().contains("archived 3000 records (seq 1..3000)"));
    // The durable consumer goes on after what is archived: nothing twice.
    assert!(!write().contains("archived"));
    let verify = run(&["archive", "verify", a]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let replayed = json_of(&run(&["replay", "--summary", "json", a]), "replay archive");
    assert_eq!(replayed["events"], 3000);
    assert_eq!(replayed["state"], CORPUS_STATE);
    assert_eq!(replayed["measurement"], CORPUS_MEASUREMENT);
}

/// The coefficients of a part, with `tsem-stream coefficients`.
fn coefficients(part: &Path) -> BTreeSet<String> {
    let out = run(&["coefficients", part.to_str().unwrap()]);
    assert!(out.status.success());
    stdout_lines(&out).into_iter().collect()
}

#[test]
fn the_fleet_model_keeps_the_coefficients_of_at_least_k_hosts() {
    let Some(server) = nats_url("the_fleet_model") else {
        return;
    };
    let fleet = Fleet::new(server);
    let parts = corpus_parts(fleet.tmp.path());
    let mut per_host = BTreeMap::new();
    for (i, part) in parts.iter().enumerate() {
        let host = format!("h{}", i + 1);
        fleet.publish(part, &host);
        per_host.insert(host, coefficients(part));
    }
    let mut hosts_of: BTreeMap<&String, usize> = BTreeMap::new();
    for set in per_host.values() {
        for c in set {
            *hosts_of.entry(c).or_default() += 1;
        }
    }
    for k in [2usize, 3] {
        let model = fleet.path(&format!("fleet-{k}.model"));
        let outliers = fleet.path(&format!("outliers-{k}.jsonl"));
        let summary = json_of(
            &run(&[
                "fleet",
                "model",
                "--from",
                &fleet.url,
                "--min-hosts",
                &k.to_string(),
                "--until-idle",
                "1",
                "-o",
                model.to_str().unwrap(),
                "--outliers",
                outliers.to_str().unwrap(),
                "--summary",
                "json",
            ]),
            "fleet model",
        );
        let expected: BTreeSet<String> = hosts_of
            .iter()
            .filter(|(_, &n)| n >= k)
            .map(|(c, _)| (*c).clone())
            .collect();
        let got: BTreeSet<String> = lines(&model)
            .into_iter()
            .filter_map(|l| l.strip_prefix("state ").map(str::to_owned))
            .collect();
        assert_eq!(got, expected, "K={k}");
        assert!(!expected.is_empty());
        assert_eq!(summary["points"], expected.len());
        assert_eq!(summary["records"], 3000);
        // Per host: its coefficients seen on fewer than K hosts.
        for (host, set) in &per_host {
            let want = set.iter().filter(|c| hosts_of[c] < k).count();
            assert_eq!(
                summary["outliers"][host].as_array().map_or(0, Vec::len),
                want,
                "{host} K={k}"
            );
        }
        let listed = lines(&outliers).len();
        let total: usize = per_host
            .values()
            .map(|s| s.iter().filter(|c| hosts_of[c] < k).count())
            .sum();
        assert_eq!(listed, total);
    }
    // The model is a sealed model the enforcer takes: every part's events
    // seen on at least 2 hosts are trusted.
    let model = fleet.path("fleet-2.model");
    let out = run(&[
        "enforce",
        "-m",
        model.to_str().unwrap(),
        "--summary",
        "json",
        parts[0].to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "outliers of h1 are violations");
}

#[test]
fn bad_addresses_and_options_are_refused_before_running() {
    let tmp = tempfile::tempdir().unwrap();
    let ev = conformance("events.jsonl");
    for (args, why) in [
        (
            vec!["--publish", "nats://127.0.0.1:4222?max_agee=1d"],
            "unknown option",
        ),
        (vec!["--publish", "http://127.0.0.1"], "unknown scheme"),
        (
            vec!["--publish", "nats://127.0.0.1", "--host", "a.b"],
            "--host",
        ),
        (
            vec!["--publish", "nats://127.0.0.1", "--topic", "t"],
            "--topic",
        ),
        (vec!["--host", "h1"], "go with --publish"),
    ] {
        let buffer = tmp.path().join("b");
        let mut all = vec![
            "run",
            "--input",
            ev.to_str().unwrap(),
            "--publish-buffer",
            buffer.to_str().unwrap(),
        ];
        if args == ["--host", "h1"] {
            all.truncate(3);
        }
        all.extend(args.iter().copied());
        let out = run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let out = run(&["fleet", "replay", "nats://127.0.0.1:1", "--until-idle", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// The messages of one subject, in stream order.
fn messages_of(url: &str, subject: &str) -> Vec<(String, Value)> {
    let tsem_fleet::Server::Nats(target) = tsem_fleet::Target::parse(url).unwrap().server else {
        panic!("not nats")
    };
    let mut source = tsem_fleet::NatsSource::open(
        &target,
        &tsem_fleet::SourceOptions {
            subject: subject.to_owned(),
            durable: None,
            until_idle: Some(std::time::Duration::from_secs(1)),
            ack: false,
        },
    )
    .unwrap();
    let mut out = Vec::new();
    while let tsem_fleet::nats::Next::Message(m) = source.next_message(true).unwrap() {
        out.push((
            m.subject.to_owned(),
            serde_json::from_slice(m.payload).unwrap(),
        ));
    }
    out
}

#[test]
fn forensics_and_verdict_summaries_go_to_the_forensics_subject() {
    let Some(server) = nats_url("forensics_and_verdict_summaries") else {
        return;
    };
    let fleet = Fleet::new(server);
    let parts = corpus_parts(fleet.tmp.path());
    let model = fleet.path("part1.model");
    let learned = run(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        parts[0].to_str().unwrap(),
    ]);
    assert!(learned.status.success());
    // Part 2 against the model of part 1, sealed: what is new is forensics.
    let mut args = fleet.publish_args(&parts[1], "h2");
    args.extend(["-m", model.to_str().unwrap(), "-e"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    // Violations of an enforced model: exit status 3, summary all the same.
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    let violations = s["violations"].as_u64().unwrap();
    assert!(violations > 0);
    let forensics = format!("{}.h2.local.forensics", fleet.prefix);
    let messages = messages_of(&fleet.url, &forensics);
    let reported: Vec<&Value> = messages
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m["kind"] == "forensics")
        .collect();
    assert_eq!(reported.len() as u64, violations);
    let first = reported[0];
    assert_eq!(first["host"], "h2");
    assert_eq!(first["namespace"], "local");
    assert_eq!(first["coefficient"].as_str().map(str::len), Some(64));
    let seq = first["seq"].as_u64().unwrap() as usize;
    assert_eq!(first["record"], lines(&parts[1])[seq - 1]);
    let last = &messages.last().unwrap().1;
    assert_eq!(last["kind"], "summary");
    assert_eq!(last["final"], true);
    assert_eq!(last["events"], 1000);
    assert_eq!(last["violations"], violations);
    assert_eq!(last["state"], s["state"]);
    // The records themselves went to the events subject as usual.
    assert_eq!(publish_report(&s)["published"], 1001 + violations);
}
