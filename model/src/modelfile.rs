//! Model files in the Quixote grammar (mapping.md M12): loading (with
//! signature verification) and writing self-contained models.

use std::fmt::Write as _;

use crate::digest::Digest;
use crate::profile::Profile;
use crate::signature::{self, SignatureError};
use crate::state::{Model, ModelError};

/// Why a model file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelFileError {
    /// A line is not part of the grammar or has a bad value.
    #[error("line {line}: {problem}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// The model was made under another mapping profile.
    #[error("model was written for profile {found}, not {expected}: leave --profile out (a model keeps its own), or give --profile {found}")]
    ProfileMismatch {
        /// Profile named by the model's `# profile` comment.
        found: String,
        /// Profile in force.
        expected: Profile,
    },
    /// The signature check failed.
    #[error("line {line}: {error}")]
    Signature {
        /// Line of the `signature` (or `key`) directive.
        line: usize,
        /// The failure.
        error: SignatureError,
    },
    /// The model has a `key` but no `signature`.
    #[error("model has a key line but no signature")]
    Unsigned,
    /// No `end` line.
    #[error("model has no end line")]
    NoEnd,
}

/// What loading a model file found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// True when a `key` + `signature` pair verified.
    pub signed: bool,
    /// Number of `state` lines.
    pub states: usize,
    /// Number of `pseudonym` lines.
    pub pseudonyms: usize,
    /// True when the model had a `seal` line.
    pub sealed: bool,
    /// The key whose signature verified (when `signed`).
    pub signer: Option<rsa::RsaPublicKey>,
}

/// The comment that records the mapping profile in models we write.
const PROFILE_COMMENT: &str = "# profile ";

/// The profile a model file declares with its `# profile` comment (Quixote's
/// own models have none: they are Profile Q).
pub fn declared_profile(text: &str) -> Result<Profile, ModelFileError> {
    for (i, line) in text.lines().enumerate() {
        if let Some(name) = line.strip_prefix(PROFILE_COMMENT) {
            return Profile::from_name(name.trim()).ok_or_else(|| ModelFileError::Line {
                line: i + 1,
                problem: format!("unknown profile {name:?}"),
            });
        }
    }
    Ok(Profile::Quixote)
}

/// Loads a model file into `model` (mapping.md M12.1): lines are applied in order,
/// a `signature` line must verify over every line before it (each + NUL) with
/// the key of the first line, and `end` must close the model.
pub fn load(text: &str, model: &mut Model) -> Result<LoadReport, ModelFileError> {
    let declared = declared_profile(text)?;
    if declared != model.profile() {
        return Err(ModelFileError::ProfileMismatch {
            found: declared.name().to_owned(),
            expected: model.profile(),
        });
    }
    let mut report = LoadReport::default();
    let mut key = None;
    let mut ended = false;
    let mut signed_upto = None;
    let all: Vec<&str> = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    // The signed data is each line followed by a NUL: a line holding a NUL
    // would sign exactly like two lines (a comment could swallow the point
    // after it, the signature still good). No directive has a control
    // character, so none is accepted anywhere, before anything is verified.
    for (i, line) in all.iter().enumerate() {
        if let Some(c) = line.bytes().find(|&b| b < 0x20 || b == 0x7f) {
            return Err(ModelFileError::Line {
                line: i + 1,
                problem: format!("control character 0x{c:02x} (model lines are text)"),
            });
        }
    }
    for (i, line) in all.iter().enumerate() {
        let n = i + 1;
        let bad = |problem: String| ModelFileError::Line { line: n, problem };
        if signed_upto.is_some() {
            if line.is_empty() {
                continue;
            }
            return Err(bad("nothing may follow the signature".into()));
        }
        let (word, value) = line.split_once(' ').unwrap_or((line, ""));
        let digest = || -> Result<Digest, ModelFileError> {
            value
                .trim()
                .parse::<Digest>()
                .map_err(|e| bad(e.to_string()))
        };
        if ended && word != "signature" && !line.is_empty() {
            return Err(bad("only a signature may follow end".into()));
        }
        match word {
            _ if line.starts_with('#') => {}
            "" if line.is_empty() => {}
            "key" => {
                if i != 0 {
                    return Err(bad(
                        "the key must be the first line (it starts the signed data)".into(),
                    ));
                }
                key = Some(
                    signature::public_key_from_line_value(value)
                        .map_err(|error| ModelFileError::Signature { line: n, error })?,
                );
            }
            "signature" => {
                let Some(k) = &key else {
                    return Err(bad("signature without a key line".into()));
                };
                let data = signature::signed_data(all[..i].iter().copied());
                signature::verify(k, &data, value)
                    .map_err(|error| ModelFileError::Signature { line: n, error })?;
                report.signed = true;
                report.signer = Some(k.clone());
                signed_upto = Some(i);
            }
            "base" => model.set_base(digest()?),
            "aggregate" => {
                model.set_aggregate(digest()?);
            }
            "state" => {
                model
                    .load_point(digest()?)
                    .map_err(|e: ModelError| bad(e.to_string()))?;
                report.states += 1;
            }
            "pseudonym" => {
                model.add_pseudonym(digest()?);
                report.pseudonyms += 1;
            }
            "seal" if value.is_empty() => {
                model.seal();
                report.sealed = true;
            }
            "end" if value.is_empty() => ended = true,
            _ => return Err(bad(format!("not a model directive: {line:?}"))),
        }
    }
    if !ended {
        return Err(ModelFileError::NoEnd);
    }
    if key.is_some() && !report.signed {
        return Err(ModelFileError::Unsigned);
    }
    Ok(report)
}

/// Writes a self-contained model: the profile comment, the base (when not
/// zero), the raw aggregate, the pseudonyms, the valid points in insertion
/// order, then `seal` and `end`. With `include_forensics`, the forensics points
/// follow the valid ones after a `# N forensic updates` comment, like
/// `quixote-console -M -u`.
pub fn write(model: &Model, include_forensics: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{PROFILE_COMMENT}{}", model.profile());
    if model.base() != Digest::ZERO {
        let _ = writeln!(out, "base {}", model.base());
    }
    let _ = writeln!(
        out,
        "aggregate {}",
        model.aggregate().unwrap_or(Digest::ZERO)
    );
    for p in model.pseudonyms().iter() {
        let _ = writeln!(out, "pseudonym {p}");
    }
    for p in model.points().iter().filter(|p| p.valid) {
        let _ = writeln!(out, "state {}", p.coefficient);
    }
    if include_forensics {
        let forensics: Vec<_> = model.points().iter().filter(|p| !p.valid).collect();
        let _ = writeln!(out, "# {} forensic updates", forensics.len());
        for p in forensics {
            let _ = writeln!(out, "state {}", p.coefficient);
        }
    }
    out.push_str("seal\nend\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGG: &str = "de2b9c37eb1ceefa4bcbc6d8412920693d3272f30eb5ba98d51d2f898d620289";
    const BASE1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const V5: &str = "be625ed6bb24968652a7e61c9966b3588879dd9d69f3b3d728fefde57c60331b";
    const V4: &str = "b8ab1634ba11dac1abda72216a31151d2fd531796856c2857b662f3d5127d15d";
    const PRCTL: &str = "5b15658b02fd26e7b679b125fc93bb9feb64a2c47614d6ae34f58d3dee95da65";

    fn d(s: &str) -> Digest {
        s.parse().unwrap()
    }

    #[test]
    fn sealed_model_with_base_reproduces_spec_v16() {
        let text = format!("base {BASE1}\naggregate {AGG}\nstate {V5}\nstate {V4}\nseal\nend\n");
        let mut m = Model::new(Profile::Quixote);
        let report = load(&text, &mut m).unwrap();
        assert!(report.sealed && !report.signed);
        assert!(
            !m.set_aggregate(d(AGG)),
            "a sealed model ignores the kernel's aggregate"
        );
        assert_eq!(
            m.host_aggregate().unwrap().to_hex(),
            "f27249ada93f17283ed8a165120dd4c5dede54489e966c0e5edd1a8edf4f3968"
        );
        assert!(!m.update(d(V5), b"v5").violation);
        assert!(m.update(d(PRCTL), b"prctl").violation);
        assert!(m.update(d(PRCTL), b"prctl").violation);
        assert_eq!(
            m.measurement().to_hex(),
            "f0acdc6aa8e2e6785c037fc452896f30a81a6eca4b762e3945768f1759dd888b"
        );
        assert_eq!(
            m.state().to_hex(),
            "6440d2fc63864b375b424e78bfa03ec76a66fa627b259c0e048e1567cc152af2"
        );
        let counts: Vec<(u64, bool)> = m.points().iter().map(|p| (p.count, p.valid)).collect();
        assert_eq!(counts, vec![(1, true), (0, true), (2, false)]);
        let updated = write(&m, true);
        assert!(updated.contains(&format!("# 1 forensic updates\nstate {PRCTL}\nseal\nend\n")));
    }

    #[test]
    fn written_models_reload_and_rewrite_identically() {
        let mut m = Model::new(Profile::Kernel);
        m.set_base(d(BASE1));
        m.set_aggregate(d(AGG));
        m.add_pseudonym(d(V4));
        m.update(d(V5), b"x");
        m.update(d(PRCTL), b"y");
        let text = write(&m, false);
        let mut again = Model::new(Profile::Kernel);
        load(&text, &mut again).unwrap();
        assert_eq!(write(&again, false), text);
        assert!(again.is_sealed());
    }

    #[test]
    fn loading_under_another_profile_is_an_error() {
        let text = write(&Model::new(Profile::Kernel), false);
        let err = load(&text, &mut Model::new(Profile::Quixote)).unwrap_err();
        assert!(
            matches!(err, ModelFileError::ProfileMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let mut m = Model::new(Profile::Quixote);
        let err = load("aggregate 00\nend\n", &mut m).unwrap_err();
        assert!(matches!(err, ModelFileError::Line { line: 1, .. }), "{err}");
        let err = load("bogus\nend\n", &mut Model::new(Profile::Quixote)).unwrap_err();
        assert!(err.to_string().contains("not a model directive"));
        assert_eq!(
            load("seal\n", &mut Model::new(Profile::Quixote)),
            Err(ModelFileError::NoEnd)
        );
        let err = load(
            &format!("seal\nstate {V5}\nend\n"),
            &mut Model::new(Profile::Quixote),
        )
        .unwrap_err();
        assert!(err.to_string().contains("sealed"), "{err}");
    }

    #[test]
    fn a_nul_cannot_join_two_signed_lines() {
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let model = format!("aggregate {AGG}\n# reviewed\nstate {V5}\nseal\nend\n");
        let signed = signature::sign_model(&model, &key).unwrap();
        assert_eq!(
            load(&signed, &mut Model::new(Profile::Quixote))
                .unwrap()
                .states,
            1
        );
        // The comment swallows the point: same signed bytes, one point less.
        let joined = signed.replace("# reviewed\n", "# reviewed\0");
        assert_eq!(
            load(&joined, &mut Model::new(Profile::Quixote)),
            Err(ModelFileError::Line {
                line: 3,
                problem: "control character 0x00 (model lines are text)".into()
            })
        );
        let tab = model.replace("# reviewed", "#\treviewed");
        assert!(load(&tab, &mut Model::new(Profile::Quixote)).is_err());
    }

    #[test]
    fn signatures_good_bad_and_tampered() {
        // A small key keeps the test fast; the format does not depend on its size.
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let model = format!("aggregate {AGG}\nstate {V5}\nseal\nend\n");
        let signed = signature::sign_model(&model, &key).unwrap();
        let report = load(&signed, &mut Model::new(Profile::Quixote)).unwrap();
        assert!(report.signed);

        let tampered = signed.replace(V5, V4);
        let err = load(&tampered, &mut Model::new(Profile::Quixote)).unwrap_err();
        assert!(
            matches!(
                err,
                ModelFileError::Signature {
                    error: SignatureError::Mismatch,
                    ..
                }
            ),
            "{err}"
        );

        let other = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let resigned = signature::sign_model(&model, &other).unwrap();
        let foreign_sig = resigned.lines().last().unwrap();
        let mut lines: Vec<&str> = signed.lines().collect();
        *lines.last_mut().unwrap() = foreign_sig;
        let bad = lines.join("\n") + "\n";
        assert!(load(&bad, &mut Model::new(Profile::Quixote)).is_err());

        let unsigned: String = signed
            .lines()
            .filter(|l| !l.starts_with("signature"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            load(&unsigned, &mut Model::new(Profile::Quixote)),
            Err(ModelFileError::Unsigned)
        );
    }
}
