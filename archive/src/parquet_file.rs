//! Parquet export of records: typed columns for analysis tools, with the raw
//! line kept beside them.
//!
//! Numbers are unsigned integers (`INTEGER(64,false)` / `INTEGER(32,false)`),
//! digests fixed 32-byte binaries, names dictionary-encoded strings; pages
//! are zstd-compressed. A field that is absent, or does not hold a number or a
//! 64-character digest, is null; a line that does not parse has only `seq`
//! and `raw`.

use std::fs::File;
use std::sync::Arc;

use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, FixedLenByteArray, FixedLenByteArrayType};
use parquet::data_type::{Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;
use tsem_ingest::{parse_c_integer, Obj, Parser, Record};
use tsem_ingest::{Fetch, RecordSource};

use crate::ArchiveError;

/// The schema of exported files.
pub const SCHEMA: &str = "
message tsem_record {
  REQUIRED INT64 seq (INTEGER(64,false));
  OPTIONAL BYTE_ARRAY export_type (STRING);
  OPTIONAL BYTE_ARRAY type (STRING);
  OPTIONAL BYTE_ARRAY process (STRING);
  OPTIONAL INT64 pid (INTEGER(64,false));
  OPTIONAL INT64 tnum (INTEGER(64,false));
  OPTIONAL INT64 context (INTEGER(64,false));
  OPTIONAL INT64 number (INTEGER(64,false));
  OPTIONAL INT64 ttd (INTEGER(64,false));
  OPTIONAL INT64 p_ttd (INTEGER(64,false));
  OPTIONAL FIXED_LEN_BYTE_ARRAY (32) task_id;
  OPTIONAL FIXED_LEN_BYTE_ARRAY (32) p_task_id;
  OPTIONAL INT64 ts (INTEGER(64,false));
  OPTIONAL INT32 uid (INTEGER(32,false));
  OPTIONAL INT32 euid (INTEGER(32,false));
  OPTIONAL INT32 suid (INTEGER(32,false));
  OPTIONAL INT32 gid (INTEGER(32,false));
  OPTIONAL INT32 egid (INTEGER(32,false));
  OPTIONAL INT32 sgid (INTEGER(32,false));
  OPTIONAL INT32 fsuid (INTEGER(32,false));
  OPTIONAL INT32 fsgid (INTEGER(32,false));
  OPTIONAL INT64 capeff (INTEGER(64,false));
  OPTIONAL BYTE_ARRAY pathname (STRING);
  OPTIONAL FIXED_LEN_BYTE_ARRAY (32) digest;
  REQUIRED BYTE_ARRAY raw;
}";

/// Rows per row group.
const ROW_GROUP: usize = 64 * 1024;

/// The header numbers, in schema order after `process`.
const HEADER_U64: [&str; 6] = ["pid", "tnum", "context", "number", "ttd", "p_ttd"];
/// The COE credentials, in schema order.
const COE_U32: [&str; 8] = [
    "uid", "euid", "suid", "gid", "egid", "sgid", "fsuid", "fsgid",
];

/// An optional column: values of the present rows and a definition level per row.
struct Optional<T> {
    values: Vec<T>,
    defs: Vec<i16>,
}

impl<T> Default for Optional<T> {
    fn default() -> Self {
        Optional {
            values: Vec::new(),
            defs: Vec::new(),
        }
    }
}

impl<T> Optional<T> {
    fn push(&mut self, value: Option<T>) {
        match value {
            Some(v) => {
                self.values.push(v);
                self.defs.push(1);
            }
            None => self.defs.push(0),
        }
    }

    fn clear(&mut self) {
        self.values.clear();
        self.defs.clear();
    }
}

/// One row group being collected.
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    export_type: Optional<ByteArray>,
    kind: Optional<ByteArray>,
    process: Optional<ByteArray>,
    header: [Optional<i64>; 6],
    task_id: Optional<FixedLenByteArray>,
    p_task_id: Optional<FixedLenByteArray>,
    ts: Optional<i64>,
    coe: [Optional<i32>; 8],
    capeff: Optional<i64>,
    pathname: Optional<ByteArray>,
    digest: Optional<FixedLenByteArray>,
    raw: Vec<ByteArray>,
}

/// The typed fields of one record.
#[derive(Default)]
struct Row {
    export_type: Option<&'static str>,
    kind: Option<Vec<u8>>,
    process: Option<Vec<u8>>,
    header: [Option<u64>; 6],
    task_id: Option<[u8; 32]>,
    p_task_id: Option<[u8; 32]>,
    ts: Option<u64>,
    coe: [Option<u32>; 8],
    capeff: Option<u64>,
    pathname: Option<Vec<u8>>,
    digest: Option<[u8; 32]>,
}

fn number(text: Option<&str>) -> Option<u64> {
    let n = parse_c_integer(text?.as_bytes()).ok()?;
    (n.complete && !n.negative).then_some(n.magnitude)
}

fn digest(text: Option<&str>) -> Option<[u8; 32]> {
    tsem_ingest::hex::decode_array(text?.as_bytes()).ok()
}

fn string<'a>(obj: Option<Obj<'a>>, key: &'static str) -> Option<&'a str> {
    obj?.str(key).ok().flatten()
}

fn row_of(parser: &mut Parser, line: &[u8]) -> Row {
    let parsed = parser.parse(line, |record| match record {
        Record::Aggregate { .. } => Row {
            export_type: Some("aggregate"),
            kind: Some(b"aggregate".to_vec()),
            ..Row::default()
        },
        Record::LogNotice { process, event, .. } => Row {
            export_type: Some("log"),
            kind: Some(event.as_bytes().to_vec()),
            process: Some(process.as_bytes().to_vec()),
            ..Row::default()
        },
        Record::Event(v) => {
            let h = Some(v.header);
            let file = v.cell.and_then(|c| c.obj("file").ok().flatten());
            let path = file.and_then(|f| f.obj("path").ok().flatten());
            Row {
                export_type: v.export.map(|k| k.name()),
                kind: Some(v.type_name.as_bytes().to_vec()),
                process: v.process().map(|p| p.as_bytes().to_vec()),
                header: HEADER_U64.map(|k| number(string(h, k))),
                task_id: digest(Some(v.task_id)),
                p_task_id: digest(v.p_task_id()),
                ts: number(string(h, "ts")),
                coe: COE_U32
                    .map(|k| number(string(Some(v.coe), k)).and_then(|n| u32::try_from(n).ok())),
                capeff: number(string(Some(v.coe), "capeff")),
                pathname: string(path, "pathname").map(|p| p.as_bytes().to_vec()),
                digest: digest(string(file, "digest")),
            }
        }
    });
    parsed.unwrap_or_default()
}

fn bytes(v: Vec<u8>) -> ByteArray {
    ByteArray::from(v)
}

fn fixed(d: [u8; 32]) -> FixedLenByteArray {
    FixedLenByteArray::from(d.to_vec())
}

impl Columns {
    fn push(&mut self, seq: u64, line: &[u8], row: Row) {
        // Unsigned values are stored as their two's complement bit pattern,
        // as the INTEGER(64,false) logical type prescribes.
        self.seq.push(seq as i64);
        self.export_type
            .push(row.export_type.map(|t| bytes(t.as_bytes().to_vec())));
        self.kind.push(row.kind.map(bytes));
        self.process.push(row.process.map(bytes));
        for (col, v) in self.header.iter_mut().zip(row.header) {
            col.push(v.map(|n| n as i64));
        }
        self.task_id.push(row.task_id.map(fixed));
        self.p_task_id.push(row.p_task_id.map(fixed));
        self.ts.push(row.ts.map(|n| n as i64));
        for (col, v) in self.coe.iter_mut().zip(row.coe) {
            col.push(v.map(|n| n as i32));
        }
        self.capeff.push(row.capeff.map(|n| n as i64));
        self.pathname.push(row.pathname.map(bytes));
        self.digest.push(row.digest.map(fixed));
        self.raw.push(bytes(line.to_vec()));
    }

    fn len(&self) -> usize {
        self.seq.len()
    }

    fn clear(&mut self) {
        self.seq.clear();
        self.export_type.clear();
        self.kind.clear();
        self.process.clear();
        self.header.iter_mut().for_each(Optional::clear);
        self.task_id.clear();
        self.p_task_id.clear();
        self.ts.clear();
        self.coe.iter_mut().for_each(Optional::clear);
        self.capeff.clear();
        self.pathname.clear();
        self.digest.clear();
        self.raw.clear();
    }

    fn write(&self, file: &mut SerializedFileWriter<File>) -> parquet::errors::Result<()> {
        let mut group = file.next_row_group()?;
        let mut n = 0usize;
        while let Some(mut col) = group.next_column()? {
            // Columns come in schema order.
            match n {
                0 => {
                    col.typed::<Int64Type>()
                        .write_batch(&self.seq, None, None)?;
                }
                1..=3 => {
                    let c = [&self.export_type, &self.kind, &self.process][n - 1];
                    col.typed::<ByteArrayType>()
                        .write_batch(&c.values, Some(&c.defs), None)?;
                }
                4..=9 => {
                    let c = &self.header[n - 4];
                    col.typed::<Int64Type>()
                        .write_batch(&c.values, Some(&c.defs), None)?;
                }
                10 | 11 | 23 => {
                    let c = match n {
                        10 => &self.task_id,
                        11 => &self.p_task_id,
                        _ => &self.digest,
                    };
                    col.typed::<FixedLenByteArrayType>().write_batch(
                        &c.values,
                        Some(&c.defs),
                        None,
                    )?;
                }
                12 | 21 => {
                    let c = if n == 12 { &self.ts } else { &self.capeff };
                    col.typed::<Int64Type>()
                        .write_batch(&c.values, Some(&c.defs), None)?;
                }
                13..=20 => {
                    let c = &self.coe[n - 13];
                    col.typed::<Int32Type>()
                        .write_batch(&c.values, Some(&c.defs), None)?;
                }
                22 => {
                    let c = &self.pathname;
                    col.typed::<ByteArrayType>()
                        .write_batch(&c.values, Some(&c.defs), None)?;
                }
                _ => {
                    col.typed::<ByteArrayType>()
                        .write_batch(&self.raw, None, None)?;
                }
            }
            col.close()?;
            n += 1;
        }
        group.close()?;
        Ok(())
    }
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Rows (records).
    pub rows: u64,
    /// Row groups.
    pub row_groups: usize,
    /// Records that did not parse (only `seq` and `raw` are set).
    pub unparsed: u64,
}

fn pq(e: parquet::errors::ParquetError) -> ArchiveError {
    ArchiveError::Parquet(e.to_string())
}

/// Writes every record of `source` (its line numbers become `seq`) into a
/// Parquet file.
pub fn export_parquet(
    source: &mut dyn RecordSource,
    out: File,
) -> Result<ExportStats, ArchiveError> {
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(pq)?);
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(pq)?))
        .set_created_by(format!("tsem-stream {}", env!("CARGO_PKG_VERSION")));
    // Unique per row: a dictionary would only cost time.
    for col in ["seq", "ts", "raw"] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(col), false);
    }
    let mut file = SerializedFileWriter::new(out, schema, Arc::new(props.build())).map_err(pq)?;
    let mut parser = Parser::new(usize::MAX);
    let mut cols = Columns::default();
    let mut stats = ExportStats::default();
    let name = source.name().to_owned();
    loop {
        match source.fetch(true).map_err(|e| ArchiveError::io(&name, e))? {
            Fetch::Record { number, bytes } => {
                let row = row_of(&mut parser, bytes);
                if row.kind.is_none() {
                    stats.unparsed += 1;
                }
                cols.push(number, bytes, row);
                stats.rows += 1;
            }
            Fetch::Oversized { .. } | Fetch::Idle => {}
            Fetch::End => break,
        }
        if cols.len() >= ROW_GROUP {
            cols.write(&mut file).map_err(pq)?;
            cols.clear();
            stats.row_groups += 1;
        }
    }
    if cols.len() > 0 || stats.row_groups == 0 {
        cols.write(&mut file).map_err(pq)?;
        stats.row_groups += 1;
    }
    let out = file.into_inner().map_err(pq)?;
    out.sync_all().map_err(|e| ArchiveError::io(&name, e))?;
    Ok(stats)
}

/// Reads all of `file` back as rows (tests and checks).
pub fn read_rows(file: File) -> Result<Vec<parquet::record::Row>, ArchiveError> {
    use parquet::file::reader::SerializedFileReader;
    let reader = SerializedFileReader::new(file).map_err(pq)?;
    reader
        .into_iter()
        .map(|r| r.map_err(pq))
        .collect::<Result<Vec<_>, _>>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::record::RowAccessor;
    use tsem_ingest::MemorySource;

    const LINES: &str = concat!(
        r#"{"export": {"type": "event"}, "event": {"pid": "42", "tnum": "7", "context": "3", "number": "5", "process": "bash", "type": "file_open", "ttd": "10", "p_ttd": "9", "task_id": "647110c3e238dca7ec813f0998fa58cd91c2a60d8e19f5bbe048f9566f1cb189", "p_task_id": "0000000000000000000000000000000000000000000000000000000000000001", "ts": "1000"}, "COE": {"uid": "1000", "euid": "0", "suid": "0", "gid": "4294967295", "egid": "0", "sgid": "0", "fsuid": "0", "fsgid": "0", "capeff": "0xffffffffffffffff"}, "file_open": {"file": {"flags": "32768", "path": {"type": "root", "pathname": "/etc/pass\"wd"}, "digest": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}}"#,
        "\n",
        r#"{"export": {"type": "aggregate"}, "aggregate": {"value": "00"}}"#,
        "\n",
        "not json\n"
    );

    #[test]
    fn typed_columns_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let mut src = MemorySource::new(LINES.as_bytes().to_vec(), 1 << 20, "mem");
        let stats = export_parquet(&mut src, File::create(&path).unwrap()).unwrap();
        assert_eq!((stats.rows, stats.row_groups, stats.unparsed), (3, 1, 1));
        let rows = read_rows(File::open(&path).unwrap()).unwrap();
        assert_eq!(rows.len(), 3);
        let r = &rows[0];
        assert_eq!(r.get_ulong(0).unwrap(), 1);
        assert_eq!(r.get_string(1).unwrap(), "event");
        assert_eq!(r.get_string(2).unwrap(), "file_open");
        assert_eq!(r.get_string(3).unwrap(), "bash");
        assert_eq!(r.get_ulong(4).unwrap(), 42);
        assert_eq!(r.get_ulong(12).unwrap(), 1000);
        assert_eq!(r.get_uint(13).unwrap(), 1000);
        assert_eq!(r.get_uint(16).unwrap(), u32::MAX);
        assert_eq!(r.get_ulong(21).unwrap(), u64::MAX);
        assert_eq!(r.get_string(22).unwrap(), "/etc/pass\"wd");
        assert_eq!(r.get_bytes(23).unwrap().data()[..2], [0xe3, 0xb0]);
        assert_eq!(r.get_bytes(10).unwrap().data().len(), 32);
        assert_eq!(
            r.get_bytes(24).unwrap().data(),
            LINES.lines().next().unwrap().as_bytes()
        );
        assert_eq!(rows[1].get_string(2).unwrap(), "aggregate");
        assert_eq!(rows[2].get_ulong(0).unwrap(), 3);
        assert!(rows[2].get_string(2).is_err());
        assert_eq!(rows[2].get_bytes(24).unwrap().data(), b"not json");
    }
}
