//! The event parser and both mapping profiles on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsem_ingest::{Parser, Record};
use tsem_model::{Mapper, Profile, Pseudonyms};

fuzz_target!(|data: &[u8]| {
    let mut parser = Parser::default();
    for profile in [Profile::Quixote, Profile::Kernel] {
        let mapper = Mapper::new(profile, Pseudonyms::new());
        let _ = parser.parse(data, |r| {
            if let Record::Event(v) = r {
                let _ = mapper.coefficient(&v);
            }
        });
    }
});
