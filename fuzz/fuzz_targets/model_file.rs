//! The model file loader (grammar, digests, key and signature lines) on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsem_model::{modelfile, Model, Profile};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut model = Model::new(Profile::Quixote);
        let _ = modelfile::load(text, &mut model);
        let _ = modelfile::declared_profile(text);
    }
});
