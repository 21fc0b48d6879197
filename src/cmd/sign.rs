//! `tsem-stream sign`: signed models that Quixote's checker accepts (spec §6.3).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tsem_model::signature;

use super::modeling::write_file_atomically;

/// `sign -G -k KEY` generates a key; `sign -k KEY -m MODEL` prints the signed model.
pub fn run(generate: bool, key: &Path, model: Option<&Path>) -> anyhow::Result<ExitCode> {
    if generate {
        let pem = signature::generate_private_key_pem()?;
        write_file_atomically(key, &pem)?;
        return Ok(ExitCode::SUCCESS);
    }
    let model = model.context("sign needs -m MODEL (or -G to generate a key)")?;
    let pem =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let private = signature::private_key_from_pem(&pem)?;
    let text = std::fs::read_to_string(model)
        .with_context(|| format!("cannot read {}", model.display()))?;
    anyhow::ensure!(
        !text
            .lines()
            .any(|l| l.starts_with("key ") || l.starts_with("signature ")),
        "{} is already signed",
        model.display()
    );
    print!("{}", signature::sign_model(&text, &private)?);
    Ok(ExitCode::SUCCESS)
}
