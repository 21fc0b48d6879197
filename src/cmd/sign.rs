//! `tsem-stream sign`: signed models that Quixote's checker accepts (mapping.md M12.3).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tsem_durable::trusted::MAX_KEY_FILE;
use tsem_model::signature;

use super::modeling::{read_model_file, write_file_atomically};

/// Options of `sign`.
#[derive(Args, Clone, Debug)]
pub struct SignArgs {
    /// Generate a 2048-bit RSA key into KEY.
    #[arg(short = 'G', long = "generate")]
    pub generate: bool,
    /// Private key file (PEM).
    #[arg(short = 'k', long = "key", value_name = "KEY")]
    pub key: PathBuf,
    /// Model to sign.
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// With -G: replace a key file that exists (a private key is never
    /// overwritten by mistake).
    #[arg(long)]
    pub force: bool,
}

/// `sign -G -k KEY` generates a key; `sign -k KEY -m MODEL` prints the signed model.
pub fn run(args: &SignArgs) -> anyhow::Result<ExitCode> {
    let key = &args.key;
    if args.generate {
        if !args.force && std::fs::symlink_metadata(key).is_ok() {
            anyhow::bail!(
                "{} exists: refusing to replace a key (give --force to replace it)",
                key.display()
            );
        }
        let pem = signature::generate_private_key_pem()?;
        write_file_atomically(key, &pem)?;
        return Ok(ExitCode::SUCCESS);
    }
    let model = args
        .model
        .as_deref()
        .context("sign needs -m MODEL (or -G to generate a key)")?;
    let pem = String::from_utf8(tsem_durable::read_trusted_file(key, MAX_KEY_FILE)?)
        .with_context(|| format!("{}: not a PEM key", key.display()))?;
    let private = signature::private_key_from_pem(&pem)?;
    let text = read_model_file(model)?;
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
