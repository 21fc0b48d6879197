//! A generator of large, realistic event corpora for benchmarks and load
//! tests: real event lines as templates, with new task identities mixed in so
//! that the model keeps growing at a chosen rate. Deterministic for a seed.

use std::io::{self, Write};

/// How to generate.
#[derive(Clone, Debug)]
pub struct CorpusSpec {
    /// Number of event lines.
    pub events: u64,
    /// Share of lines that get a brand-new task identity (so a new coefficient).
    pub new_fraction: f64,
    /// Seed of the pseudo-random sequence.
    pub seed: u64,
}

impl Default for CorpusSpec {
    fn default() -> Self {
        CorpusSpec {
            events: 1_000_000,
            new_fraction: 0.02,
            seed: 1,
        }
    }
}

/// SplitMix64: small, fast and good enough to pick templates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / ((1u64 << 53) as f64)) < p
    }
}

const TASK_KEY: &[u8] = b"\"task_id\": \"";

/// Writes `spec.events` lines built from `templates` (event lines; lines
/// without a 64-hex `task_id` are used unchanged).
pub fn generate(templates: &[u8], spec: &CorpusSpec, out: &mut impl Write) -> io::Result<u64> {
    let lines: Vec<&[u8]> = templates
        .split(|&b| b == b'\n')
        .filter(|l| l.windows(TASK_KEY.len()).any(|w| w == TASK_KEY))
        .collect();
    if lines.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no event lines to use as templates",
        ));
    }
    let mut rng = Rng(spec.seed);
    // Variants emitted so far: (template, generated task or 0 for the
    // template's own). A repeat picks one of them again, so the number of
    // distinct events is about templates + events * new_fraction.
    let mut variants: Vec<(u32, u64)> = Vec::new();
    let mut tasks: u64 = 0;
    let mut written = 0;
    let mut hex = [0u8; 64];
    for _ in 0..spec.events {
        let (template, task) = if rng.chance(spec.new_fraction) {
            tasks += 1;
            (rng.below(lines.len() as u64) as u32, tasks)
        } else if !variants.is_empty() && rng.chance(0.5) {
            variants[rng.below(variants.len() as u64) as usize]
        } else {
            (rng.below(lines.len() as u64) as u32, 0)
        };
        if task > 0 && variants.len() < 1 << 22 {
            variants.push((template, task));
        }
        let line = lines[template as usize];
        match (task, find_task_id(line)) {
            (t, Some(at)) if t > 0 => {
                let digest = tsem_model::Digest::of(&[&spec.seed.to_le_bytes(), &t.to_le_bytes()]);
                digest.write_hex(&mut hex);
                out.write_all(&line[..at])?;
                out.write_all(&hex)?;
                out.write_all(&line[at + 64..])?;
            }
            _ => out.write_all(line)?,
        }
        out.write_all(b"\n")?;
        written += 1;
    }
    Ok(written)
}

/// Offset of the 64 hex digits of the first `"task_id": "…"`.
fn find_task_id(line: &[u8]) -> Option<usize> {
    let at = line.windows(TASK_KEY.len()).position(|w| w == TASK_KEY)? + TASK_KEY.len();
    let digits = line.get(at..at + 64)?;
    (digits.iter().all(u8::is_ascii_hexdigit) && line.get(at + 64) == Some(&b'"')).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"{"event": {"process": "x", "type": "syslog", "task_id": "647110c3e238dca7ec813f0998fa58cd91c2a60d8e19f5bbe048f9566f1cb189"}, "COE": {}, "syslog": {}}"#;

    #[test]
    fn generation_is_deterministic_and_sized() {
        let spec = CorpusSpec {
            events: 1000,
            new_fraction: 0.1,
            seed: 7,
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(generate(T.as_bytes(), &spec, &mut a).unwrap(), 1000);
        generate(T.as_bytes(), &spec, &mut b).unwrap();
        assert_eq!(a, b);
        let lines: Vec<&[u8]> = a.split(|&c| c == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1000);
        let distinct: std::collections::HashSet<&[u8]> = lines.iter().copied().collect();
        assert!(
            distinct.len() > 50 && distinct.len() < 200,
            "{}",
            distinct.len()
        );
        assert!(lines.iter().all(|l| l.len() == T.len()));
    }

    #[test]
    fn templates_without_events_are_an_error() {
        assert!(generate(b"nothing\n", &CorpusSpec::default(), &mut Vec::new()).is_err());
    }
}
