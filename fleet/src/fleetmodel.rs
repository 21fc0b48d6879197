//! Fleet-wide models: which security state coefficients a service has in
//! common across hosts. Every record of every host is mapped to its
//! coefficient; a coefficient seen on at least K hosts belongs to the fleet
//! model, the others are per-host outliers (behaviour only some hosts show,
//! worth a look before the model is enforced everywhere).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tsem_ingest::{Parser, Record};
use tsem_model::{modelfile, Coefficient, Mapper, Model, Profile, Pseudonyms};

/// Per coefficient: the hosts that showed it, with the stream sequence of
/// its first record on each (so an outlier can be looked up in the stream).
#[derive(Default)]
struct Seen {
    hosts: Vec<(u32, u64)>,
}

/// Per host: what was counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostCounts {
    /// Records read.
    pub records: u64,
    /// Events mapped.
    pub events: u64,
    /// Records that could not be parsed or mapped (skipped).
    pub errors: u64,
    /// Distinct coefficients.
    pub coefficients: u64,
}

/// One per-host outlier: a coefficient seen on fewer than K hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outlier {
    /// The coefficient.
    pub coefficient: String,
    /// On how many hosts it was seen.
    pub hosts: usize,
    /// Stream sequence of its first record on this host.
    pub seq: u64,
}

/// Builds a fleet model from records of many hosts.
pub struct FleetModel {
    profile: Profile,
    pseudonyms: Pseudonyms,
    mapper: Mapper,
    parser: Parser,
    hosts: Vec<String>,
    host_index: HashMap<String, u32>,
    counts: Vec<HostCounts>,
    seen: HashMap<Coefficient, Seen>,
    first_error: Option<String>,
}

/// The result: the model's points and the outliers.
#[derive(Clone, Debug, Serialize)]
pub struct FleetResult {
    /// The K used.
    pub min_hosts: usize,
    /// Coefficients kept (seen on at least K hosts), sorted.
    #[serde(skip)]
    pub kept: Vec<Coefficient>,
    /// Number kept.
    pub points: usize,
    /// Distinct coefficients in all.
    pub coefficients: usize,
    /// Per host: counts.
    pub hosts: BTreeMap<String, HostCounts>,
    /// Per host: its outliers, sorted by coefficient.
    pub outliers: BTreeMap<String, Vec<Outlier>>,
}

impl FleetModel {
    /// An empty fleet model under `profile` with `pseudonyms`.
    pub fn new(profile: Profile, pseudonyms: Pseudonyms) -> FleetModel {
        FleetModel {
            mapper: Mapper::new(profile, pseudonyms.clone()),
            profile,
            pseudonyms,
            parser: Parser::new(tsem_ingest::DEFAULT_MAX_RECORD_LEN),
            hosts: Vec::new(),
            host_index: HashMap::new(),
            counts: Vec::new(),
            seen: HashMap::new(),
            first_error: None,
        }
    }

    /// The first record that could not be mapped, with its host and sequence.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// Adds one record of `host` (stream sequence `seq`). Aggregate records,
    /// log notices and blank lines carry no coefficient; bad records are counted.
    pub fn add(&mut self, host: &str, seq: u64, record: &[u8]) {
        let h = match self.host_index.get(host) {
            Some(&h) => h,
            None => {
                let h = self.hosts.len() as u32;
                self.hosts.push(host.to_owned());
                self.host_index.insert(host.to_owned(), h);
                self.counts.push(HostCounts::default());
                h
            }
        };
        let counts = &mut self.counts[h as usize];
        counts.records += 1;
        if record.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let mapper = &self.mapper;
        let mapped = self.parser.parse(record, |r| match r {
            Record::Event(view) => Some(mapper.coefficient(&view).map_err(|e| e.to_string())),
            _ => None,
        });
        let coefficient = match mapped {
            Ok(Some(Ok(c))) => c,
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                counts.errors += 1;
                self.first_error
                    .get_or_insert_with(|| format!("{host} seq {seq}: {e}"));
                return;
            }
            Err(e) => {
                counts.errors += 1;
                self.first_error
                    .get_or_insert_with(|| format!("{host} seq {seq}: {e}"));
                return;
            }
        };
        counts.events += 1;
        let seen = self.seen.entry(coefficient).or_default();
        if !seen.hosts.iter().any(|&(x, _)| x == h) {
            seen.hosts.push((h, seq));
            counts.coefficients += 1;
        }
    }

    /// The coefficients seen on at least `min_hosts` hosts, and per host the others.
    pub fn result(&self, min_hosts: usize) -> FleetResult {
        let mut kept = Vec::new();
        let mut outliers: BTreeMap<String, Vec<Outlier>> = BTreeMap::new();
        for (c, seen) in &self.seen {
            if seen.hosts.len() >= min_hosts {
                kept.push(*c);
                continue;
            }
            for &(h, seq) in &seen.hosts {
                outliers
                    .entry(self.hosts[h as usize].clone())
                    .or_default()
                    .push(Outlier {
                        coefficient: c.to_hex(),
                        hosts: seen.hosts.len(),
                        seq,
                    });
            }
        }
        // Sorted, so that the model does not depend on how the hosts' streams interleaved.
        kept.sort_unstable_by_key(|c| c.0);
        for list in outliers.values_mut() {
            list.sort_unstable_by(|a, b| a.coefficient.cmp(&b.coefficient));
        }
        let hosts = self
            .hosts
            .iter()
            .cloned()
            .zip(self.counts.iter().cloned())
            .collect();
        FleetResult {
            min_hosts,
            points: kept.len(),
            coefficients: self.seen.len(),
            kept,
            hosts,
            outliers,
        }
    }

    /// The model file of `result`: the kept coefficients as valid points of a
    /// sealed model, with this model's profile and pseudonyms.
    pub fn model_text(&self, result: &FleetResult) -> String {
        let mut model = Model::new(self.profile);
        for p in self.pseudonyms.iter() {
            model.add_pseudonym(*p);
        }
        for c in &result.kept {
            // A new model is not sealed, so loading cannot fail.
            let _ = model.load_point(*c);
        }
        modelfile::write(&model, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four event lines of the bundled example with distinct coefficients.
    fn four_distinct() -> Vec<Vec<u8>> {
        let all = include_str!("../../examples/real-kernel-export.jsonl");
        let mapper = Mapper::new(Profile::Quixote, Pseudonyms::new());
        let mut parser = Parser::new(1 << 20);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for l in all.lines() {
            let c = parser.parse(l.as_bytes(), |r| match r {
                Record::Event(v) => mapper.coefficient(&v).ok(),
                _ => None,
            });
            if let Ok(Some(c)) = c {
                if seen.insert(c) {
                    out.push(l.as_bytes().to_vec());
                }
            }
            if out.len() == 4 {
                break;
            }
        }
        assert_eq!(out.len(), 4);
        out
    }

    #[test]
    fn keeps_coefficients_of_k_hosts_and_lists_the_others() {
        let mut f = FleetModel::new(Profile::Quixote, Pseudonyms::new());
        // a and b on three hosts, c on two, d on one.
        let lines = four_distinct();
        let (a, b, c, d) = (&lines[0], &lines[1], &lines[2], &lines[3]);
        for (host, records) in [
            ("h1", vec![a, b, c, d, a]),
            ("h2", vec![a, b, c]),
            ("h3", vec![b, a]),
        ] {
            for (i, r) in records.into_iter().enumerate() {
                f.add(host, i as u64 + 1, r);
            }
        }
        f.add("h3", 9, b"not json");
        assert!(f.first_error().is_some_and(|e| e.starts_with("h3 seq 9")));
        let r2 = f.result(2);
        let r3 = f.result(3);
        let r1 = f.result(1);
        assert_eq!(r1.points, r1.coefficients);
        assert!(r3.points <= r2.points && r2.points <= r1.points);
        assert_eq!((r1.points, r2.points, r3.points), (4, 3, 2));
        assert_eq!(r2.outliers["h1"].len(), 1);
        assert_eq!(r2.outliers["h1"][0].seq, 4);
        assert!(!r2.outliers.contains_key("h2"));
        assert_eq!(r3.outliers["h2"].len(), 1);
        assert_eq!(r2.hosts["h1"].records, 5);
        assert_eq!(r2.hosts["h3"].errors, 1);
        let text = f.model_text(&r2);
        assert_eq!(text.matches("\nstate ").count(), r2.points);
        assert!(text.ends_with("seal\nend\n"));
        let mut reloaded = Model::new(Profile::Quixote);
        modelfile::load(&text, &mut reloaded).unwrap();
        assert_eq!(reloaded.points().len(), r2.points);
    }
}
