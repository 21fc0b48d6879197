//! Property tests: hostile bytes never panic the parser or the mappers, and
//! every failure is an error with a message.

use proptest::prelude::*;
use tsem_ingest::{Parser, Record};
use tsem_model::{Mapper, Profile, Pseudonyms};

const SAMPLE: &str = r#"{"event": {"context": "3", "number": "5", "process": "bash", "type": "file_open", "ttd": "10", "p_ttd": "9", "task_id": "647110c3e238dca7ec813f0998fa58cd91c2a60d8e19f5bbe048f9566f1cb189", "p_task_id": "647110c3e238dca7ec813f0998fa58cd91c2a60d8e19f5bbe048f9566f1cb189", "ts": "1000"}, "COE": {"uid": "0", "euid": "0", "suid": "0", "gid": "0", "egid": "0", "sgid": "0", "fsuid": "0", "fsgid": "0", "capeff": "0x1ffffffffff"}, "file_open": {"file": {"flags": "32800", "inode": {"uid": "0", "gid": "0", "mode": "0100755", "s_magic": "0xef53", "s_id": "sda3", "s_uuid": "e896110b42b24dbca89c7caa36961685"}, "path": {"dev": {"major": "8", "minor": "3"}, "type": "root", "pathname": "/usr/bin/bash"}, "digest": "59474588a312b6b6e73e5a42a59bf71e62b55416b6c9d5e4a6e1c630c2a9ecd4"}}}"#;

/// Parses and maps under both profiles; returns the error texts.
fn exercise(parser: &mut Parser, line: &[u8]) -> Vec<String> {
    let mut errors = Vec::new();
    for profile in [Profile::Quixote, Profile::Kernel] {
        let mapper = Mapper::new(profile, Pseudonyms::new());
        match parser.parse(line, |r| match r {
            Record::Event(v) => mapper
                .coefficient(&v)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}

fn check(line: &[u8]) {
    let mut parser = Parser::default();
    for e in exercise(&mut parser, line) {
        assert!(!e.is_empty());
    }
    // The parser stays usable after any input.
    assert!(exercise(&mut parser, SAMPLE.as_bytes()).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn truncated_lines_never_panic(cut in 0usize..SAMPLE.len()) {
        check(&SAMPLE.as_bytes()[..cut]);
    }

    #[test]
    fn mutated_lines_never_panic(pos in 0usize..SAMPLE.len(), byte in any::<u8>()) {
        let mut line = SAMPLE.as_bytes().to_vec();
        line[pos] = byte;
        check(&line);
    }

    #[test]
    fn any_number_text_never_panics(n in "[-+ 0-9xXa-fA-F]{0,40}") {
        check(SAMPLE.replace("\"32800\"", &format!("\"{n}\"")).as_bytes());
        check(SAMPLE.replace("\"0x1ffffffffff\"", &format!("\"{n}\"")).as_bytes());
    }

    #[test]
    fn any_string_value_never_panics(s in "\\PC{0,300}") {
        let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
        check(SAMPLE.replace("/usr/bin/bash", &escaped).as_bytes());
        check(SAMPLE.replace("sda3", &escaped).as_bytes());
    }
}

#[test]
fn huge_numbers_are_clear_errors() {
    let line = SAMPLE.replace("\"32800\"", "\"99999999999999999999999999\"");
    let errors = exercise(&mut Parser::default(), line.as_bytes());
    assert_eq!(errors.len(), 2);
    assert!(errors[0].contains("flags"), "{}", errors[0]);
}

#[test]
fn deep_nesting_is_a_clear_error() {
    let line = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let errors = exercise(&mut Parser::default(), line.as_bytes());
    assert_eq!(errors.len(), 2);
    let line = format!(
        "{{\"a\": {}1{}}}",
        "{\"b\": ".repeat(5000),
        "}".repeat(5000)
    );
    assert_eq!(exercise(&mut Parser::default(), line.as_bytes()).len(), 2);
}

#[test]
fn lines_over_64_kib_parse_or_fail_cleanly() {
    let long_path = format!("/{}", "a".repeat(70_000));
    let line = SAMPLE.replace("/usr/bin/bash", &long_path);
    assert!(exercise(&mut Parser::default(), line.as_bytes()).is_empty());
    let mut small = Parser::new(65_536);
    let errors = exercise(&mut small, line.as_bytes());
    assert!(errors[0].contains("exceeds the limit"), "{}", errors[0]);
}

#[test]
fn invalid_utf8_is_a_clear_error() {
    let line = SAMPLE
        .replace("/usr/bin/bash", "/usr/bin/\u{1}")
        .into_bytes();
    let mut bad = line.clone();
    let pos = line.iter().position(|&b| b == 1).unwrap();
    bad[pos] = 0xff;
    let errors = exercise(&mut Parser::default(), &bad);
    assert_eq!(errors.len(), 2);
    assert!(errors[0].starts_with("invalid JSON"), "{}", errors[0]);
}
