//! Meridian's hash shard map and PostgreSQL 15's `PARTITION BY HASH` agree
//! on every key: for each row of a hash-partitioned table, the partition
//! PostgreSQL chose (`tableoid`) has the remainder `router::hash` computes.
//!
//! Keys are read back in PostgreSQL's binary send format (`int8send`,
//! `uuid_send`, ...) and as text, so the same run checks that
//! `KeyValue::from_param` reads both formats as PostgreSQL writes them.
//! Random keys come from a fixed seed: a failure names keys that reproduce.
//! Talks to PostgreSQL directly; no Meridian node is started.

use anyhow::Context;
use harness::{ClusterSpec, PgCluster};
use router::hash::hash_remainder;
use router::key::{KeyType, KeyValue, Literal};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

/// A key column type: how to declare it, how to read it back in binary,
/// and which Meridian key type it is.
#[derive(Clone, Copy)]
struct Column {
    sql_type: &'static str,
    send: &'static str,
    key_type: KeyType,
}

const INT8: Column = Column { sql_type: "int8", send: "int8send", key_type: KeyType::Int };
const INT4: Column = Column { sql_type: "int4", send: "int4send", key_type: KeyType::Int };
const INT2: Column = Column { sql_type: "int2", send: "int2send", key_type: KeyType::Int };
const TEXT: Column = Column { sql_type: "text", send: "textsend", key_type: KeyType::Text };
const UUID: Column = Column { sql_type: "uuid", send: "uuid_send", key_type: KeyType::Uuid };

/// SplitMix64: small, seeded, and enough for test keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `table` partitioned by hash on `k` (plus `src`, the text a key was
/// inserted as), with partitions `<table>_r<remainder>`.
async fn create_table(client: &Client, table: &str, column: Column, collate: &str, modulus: u64) -> anyhow::Result<()> {
    let mut sql =
        format!("CREATE TABLE {table} (k {} {collate} NOT NULL, src text) PARTITION BY HASH (k);\n", column.sql_type);
    for r in 0..modulus {
        sql.push_str(&format!(
            "CREATE TABLE {table}_r{r} PARTITION OF {table} FOR VALUES WITH (MODULUS {modulus}, REMAINDER {r});\n"
        ));
    }
    client.batch_execute(&sql).await.with_context(|| format!("creating {table}"))
}

/// Insert `keys`, converted by PostgreSQL from `array_type`, and keep each
/// key's input text in `src`.
async fn insert(
    client: &Client,
    table: &str,
    array_type: &str,
    keys: &(dyn ToSql + Sync),
    expected: usize,
) -> anyhow::Result<()> {
    let sql = format!("INSERT INTO {table} (k, src) SELECT v, v::text FROM unnest($1::{array_type}) v");
    let n = client.execute(&sql, &[keys]).await.with_context(|| format!("inserting into {table}"))?;
    anyhow::ensure!(n as usize == expected, "{table}: inserted {n} rows, expected {expected}");
    Ok(())
}

/// Read every row of `table` back and check that PostgreSQL's partition has
/// the remainder Meridian computes for its key. Keys are read in binary and
/// in text format and must agree; for text-format input (`src`) the key
/// must also be what `KeyValue::from_literal` makes of that input.
async fn check_table(client: &Client, table: &str, column: Column, modulus: u64, rows: usize) -> anyhow::Result<()> {
    let sql = format!("SELECT {}(k), k::text, src, tableoid::regclass::text FROM {table}", column.send);
    let found = client.query(&sql, &[]).await.with_context(|| format!("reading {table}"))?;
    anyhow::ensure!(found.len() == rows, "{table}: {} rows, expected {rows}", found.len());
    let mut mismatches = Vec::new();
    for row in &found {
        let binary: Vec<u8> = row.get(0);
        let text: String = row.get(1);
        let src: String = row.get(2);
        let partition: String = row.get(3);
        let key = KeyValue::from_param(&binary, true, column.key_type)
            .with_context(|| format!("{table}: binary key {binary:?}"))?;
        let from_text = KeyValue::from_param(text.as_bytes(), false, column.key_type)
            .with_context(|| format!("{table}: text key {text:?}"))?;
        anyhow::ensure!(key == from_text, "{table}: binary {key:?} but text {from_text:?}");
        let from_src = KeyValue::from_literal(&Literal::String(src.clone()), column.key_type)
            .with_context(|| format!("{table}: input {src:?}"))?;
        anyhow::ensure!(key == from_src, "{table}: PostgreSQL read {src:?} as {key:?}, Meridian as {from_src:?}");
        let theirs: u64 = partition
            .rsplit_once("_r")
            .and_then(|(_, r)| r.parse().ok())
            .with_context(|| format!("{table}: partition name {partition:?}"))?;
        let ours = hash_remainder(&key, modulus);
        if ours != theirs {
            mismatches.push(format!("{key:?}: PostgreSQL remainder {theirs}, Meridian {ours}"));
        }
    }
    anyhow::ensure!(
        mismatches.is_empty(),
        "{table}: {} of {rows} keys in another partition than Meridian computes, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    Ok(())
}

/// Boundaries, small values, values whose int8 halves fold onto each other,
/// and random values over the whole range.
fn int8_keys(rng: &mut Rng) -> Vec<i64> {
    let mut keys = vec![i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1, 0, 1, -1];
    for shift in 0..63 {
        let p = 1i64 << shift;
        keys.extend([p, p - 1, -p, -p - 1]);
    }
    keys.extend(-1000..=1000);
    keys.extend([(1 << 32) + 1, (1 << 32) | 0xFFFF, -(1 << 32) - 2, i64::from(i32::MAX) + 1, i64::from(i32::MIN) - 1]);
    keys.extend((0..8000).map(|_| rng.next() as i64));
    keys.extend((0..1000).map(|_| (rng.next() as i64) >> rng.below(64)));
    keys
}

fn int4_keys(rng: &mut Rng) -> Vec<i32> {
    let mut keys = vec![i32::MIN, i32::MIN + 1, i32::MAX, i32::MAX - 1, 0, 1, -1];
    keys.extend(-1000..=1000);
    keys.extend((0..8000).map(|_| rng.next() as i32));
    keys
}

/// Short and empty strings, every tail length of lookup3's 12-byte blocks,
/// multi-byte UTF-8, long strings, and random mixes.
fn text_keys(rng: &mut Rng) -> Vec<String> {
    const PIECES: &[&str] = &[
        "a",
        "b",
        "z",
        "A",
        "Z",
        "0",
        "9",
        " ",
        "-",
        "_",
        "'",
        "\"",
        "\\",
        "\t",
        "\n",
        "é",
        "ß",
        "ø",
        "Ω",
        "ж",
        "ש",
        "ع",
        "क",
        "日",
        "本",
        "語",
        "한",
        "✓",
        "€",
        "🦀",
        "👍🏽",
        "e\u{301}",
        "\u{feff}",
        "\u{10ffff}",
    ];
    let mut keys: Vec<String> = vec![String::new(), " ".into(), "  ".into(), "NULL".into(), "null".into()];
    keys.extend((0x20u8..0x7F).map(|c| char::from(c).to_string()));
    keys.extend((1..=200).map(|n| "x".repeat(n)));
    keys.extend((1..=60).map(|n| "é".repeat(n)));
    keys.extend((0..2000).map(|n| n.to_string()));
    keys.extend((0..500).map(|n| format!("user-{n:05}@example.com")));
    for n in [1000, 1023, 1024, 4095, 4096, 10_000, 100_000] {
        keys.push("long ".repeat(n / 5 + 1)[..n].to_owned());
    }
    for _ in 0..7500 {
        let len = if rng.below(20) == 0 { rng.below(3000) } else { rng.below(40) };
        keys.push((0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect());
    }
    keys
}

/// Random uuids, written in every form PostgreSQL reads.
fn uuid_inputs(rng: &mut Rng) -> Vec<String> {
    let mut bytes = vec![[0u8; 16], [0xFF; 16], [0x80; 16], [0x7F; 16]];
    bytes.extend((0..3000).map(|_| {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&rng.next().to_be_bytes());
        b[8..].copy_from_slice(&rng.next().to_be_bytes());
        b
    }));
    bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let canonical = KeyValue::Uuid(*b).to_string();
            match i % 4 {
                0 => canonical,
                1 => canonical.to_uppercase().replace('-', ""),
                2 => format!("{{{canonical}}}"),
                _ => {
                    let hex = canonical.replace('-', "");
                    let groups: Vec<&str> = (0..8).map(|g| &hex[4 * g..4 * g + 4]).collect();
                    groups.join("-")
                }
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_partitions_agree_with_postgres() -> anyhow::Result<()> {
    integration_tests::init_tracing();
    let cluster = PgCluster::start(ClusterSpec::default()).await.context("starting PostgreSQL")?;
    let client = cluster.primary().connect().await?;
    let mut rng = Rng(0x4D45_5249_4449_414E);

    let int8 = int8_keys(&mut rng);
    for modulus in [7, 4] {
        let table = format!("h_int8_m{modulus}");
        create_table(&client, &table, INT8, "", modulus).await?;
        insert(&client, &table, "int8[]", &int8, int8.len()).await?;
        check_table(&client, &table, INT8, modulus, int8.len()).await?;
    }

    let int4 = int4_keys(&mut rng);
    create_table(&client, "h_int4_m7", INT4, "", 7).await?;
    insert(&client, "h_int4_m7", "int4[]", &int4, int4.len()).await?;
    check_table(&client, "h_int4_m7", INT4, 7, int4.len()).await?;

    // Every int2 value.
    let int2: Vec<i16> = (i16::MIN..=i16::MAX).collect();
    create_table(&client, "h_int2_m6", INT2, "", 6).await?;
    insert(&client, "h_int2_m6", "int2[]", &int2, int2.len()).await?;
    check_table(&client, "h_int2_m6", INT2, 6, int2.len()).await?;

    let text = text_keys(&mut rng);
    assert!(text.len() >= 10_000, "{} text keys", text.len());
    create_table(&client, "h_text_m7", TEXT, "", 7).await?;
    insert(&client, "h_text_m7", "text[]", &text, text.len()).await?;
    check_table(&client, "h_text_m7", TEXT, 7, text.len()).await?;

    // A deterministic collation other than C hashes the same bytes. The
    // harness's databases use the C locale, so take an ICU one when the
    // server has ICU.
    let icu = client.query_opt("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'", &[]).await?;
    if icu.is_some() {
        create_table(&client, "h_text_icu_m5", TEXT, "COLLATE \"und-x-icu\"", 5).await?;
        insert(&client, "h_text_icu_m5", "text[]", &text, text.len()).await?;
        check_table(&client, "h_text_icu_m5", TEXT, 5, text.len()).await?;
    } else {
        eprintln!("PostgreSQL has no ICU collations; the ICU text table was not checked");
    }

    let uuids = uuid_inputs(&mut rng);
    create_table(&client, "h_uuid_m7", UUID, "", 7).await?;
    // Cast from text so `src` keeps the form the uuid was written in.
    let sql = "INSERT INTO h_uuid_m7 (k, src) SELECT v::uuid, v FROM unnest($1::text[]) v";
    let n = client.execute(sql, &[&uuids]).await.context("inserting uuids")?;
    assert_eq!(n as usize, uuids.len());
    check_table(&client, "h_uuid_m7", UUID, 7, uuids.len()).await?;
    Ok(())
}
