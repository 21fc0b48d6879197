//! `archive export --parquet`: the file reads back (with the parquet crate)
//! with one row per record and the values of the records.

mod common;

use common::*;
use serde_json::Value;
use tsem_archive::parquet::file::reader::{FileReader, SerializedFileReader};
use tsem_archive::parquet::record::RowAccessor;

fn hex32(text: &str) -> Vec<u8> {
    (0..32)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn num(v: &Value) -> u64 {
    let s = v.as_str().unwrap();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap(),
    }
}

#[test]
fn the_parquet_export_reads_back_with_every_record_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    let events = conformance("events.jsonl");
    let o = run(&[
        "archive",
        "write",
        dir.to_str().unwrap(),
        events.to_str().unwrap(),
        "--segment-size",
        "256K",
    ]);
    assert!(o.status.success());
    let out = tmp.path().join("events.parquet");
    let o = run(&[
        "archive",
        "export",
        dir.to_str().unwrap(),
        "--parquet",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let reader = SerializedFileReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    let meta = reader.metadata().file_metadata();
    assert_eq!(meta.num_rows(), 3000);
    let schema = meta.schema_descr();
    let names: Vec<String> = (0..schema.num_columns())
        .map(|i| schema.column(i).name().to_owned())
        .collect();
    let col = |name: &str| {
        names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    // Strings are dictionary-encoded.
    let rg = reader.metadata().row_group(0);
    let enc = rg.column(col("process")).encodings().collect::<Vec<_>>();
    assert!(
        enc.iter().any(|e| format!("{e:?}").contains("DICTIONARY")),
        "{enc:?}"
    );

    let lines = lines(&events);
    let rows: Vec<_> = reader.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), lines.len());
    let (mut paths, mut digests, mut exports) = (0, 0, 0);
    for (i, (row, line)) in rows.iter().zip(&lines).enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        let e = &v["event"];
        assert_eq!(row.get_ulong(col("seq")).unwrap(), i as u64 + 1);
        assert_eq!(
            row.get_string(col("type")).unwrap(),
            e["type"].as_str().unwrap()
        );
        assert_eq!(
            row.get_string(col("process")).unwrap(),
            e["process"].as_str().unwrap()
        );
        assert_eq!(row.get_ulong(col("ts")).unwrap(), num(&e["ts"]));
        assert_eq!(row.get_ulong(col("ttd")).unwrap(), num(&e["ttd"]));
        assert_eq!(row.get_ulong(col("number")).unwrap(), num(&e["number"]));
        assert_eq!(
            row.get_bytes(col("task_id")).unwrap().data(),
            hex32(e["task_id"].as_str().unwrap())
        );
        assert_eq!(
            row.get_bytes(col("p_task_id")).unwrap().data(),
            hex32(e["p_task_id"].as_str().unwrap())
        );
        for c in [
            "uid", "euid", "suid", "gid", "egid", "sgid", "fsuid", "fsgid",
        ] {
            assert_eq!(
                u64::from(row.get_uint(col(c)).unwrap()),
                num(&v["COE"][c]),
                "line {} {c}",
                i + 1
            );
        }
        assert_eq!(
            row.get_ulong(col("capeff")).unwrap(),
            num(&v["COE"]["capeff"])
        );
        match v["export"]["type"].as_str() {
            Some(t) => {
                exports += 1;
                assert_eq!(row.get_string(col("export_type")).unwrap(), t);
                assert_eq!(row.get_ulong(col("pid")).unwrap(), num(&e["pid"]));
                assert_eq!(row.get_ulong(col("tnum")).unwrap(), num(&e["tnum"]));
            }
            None => {
                assert!(row.get_string(col("export_type")).is_err());
                assert!(row.get_ulong(col("pid")).is_err());
            }
        }
        let file = &v[e["type"].as_str().unwrap()]["file"];
        match file["path"]["pathname"].as_str() {
            Some(p) => {
                paths += 1;
                assert_eq!(
                    row.get_string(col("pathname")).unwrap(),
                    p,
                    "line {}",
                    i + 1
                );
            }
            None => assert!(row.get_string(col("pathname")).is_err()),
        }
        match file["digest"].as_str() {
            Some(d) => {
                digests += 1;
                assert_eq!(row.get_bytes(col("digest")).unwrap().data(), hex32(d));
            }
            None => assert!(row.get_bytes(col("digest")).is_err()),
        }
        assert_eq!(row.get_bytes(col("raw")).unwrap().data(), line.as_bytes());
    }
    assert!(
        paths > 1000 && digests > 1000 && exports > 200,
        "{paths} {digests} {exports}"
    );
}
