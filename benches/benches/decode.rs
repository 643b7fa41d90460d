//! Decode throughput of the hot path: CopyData payload → XLogData →
//! pgoutput message → every column value, on a synthetic Conjur stream made
//! with `pgsieve_protocol::encode`.
//!
//! Workloads:
//! - `secrets_insert`: one `secrets` Insert per frame (resource_id like
//!   `acct:variable:prod/app-17/db-password`, version, ~60-byte value as
//!   bytea text `\x…`, expires_at NULL). Target: ≥ 20 M messages/s on one core.
//! - `mixed`: rotations (Begin, Insert new version, Delete an old version,
//!   Commit) and policy loads (Begin, Relation, inserts into roles,
//!   resources, role_memberships, permissions, secrets, Commit).
//!
//! Each workload is measured twice: as messages/s (`Throughput::Elements`)
//! and as bytes/s of CopyData payload (`Throughput::Bytes`). Wall-clock
//! numbers swing with the load of a shared machine; compare runs on an idle one.

#![allow(missing_docs)] // `criterion_group!` generates an undocumented function.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pgsieve_protocol::pgoutput::walk;
use pgsieve_protocol::{
    Begin, Commit, Delete, Insert, LogicalMessage, Lsn, OldTuple, PgOutputDecoder, PgTimestamp,
    Relation, RelationColumn, ReplicaIdentity, ReplicationMessage, TupleBuilder,
};

const SECRETS: u32 = 16_400;
const ROLES: u32 = 16_410;
const RESOURCES: u32 = 16_420;
const ROLE_MEMBERSHIPS: u32 = 16_430;
const PERMISSIONS: u32 = 16_440;

const TEXT: u32 = 25;
const INT4: u32 = 23;
const BYTEA: u32 = 17;
const BOOL: u32 = 16;
const TIMESTAMP: u32 = 1114;

/// A deterministic pseudo-random source (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn relation(oid: u32, name: &str, columns: &[(&str, u32, bool)]) -> LogicalMessage {
    LogicalMessage::Relation(Relation {
        xid: None,
        oid,
        namespace: "public".into(),
        name: name.into(),
        replica_identity: ReplicaIdentity::Default,
        columns: columns
            .iter()
            .map(|&(name, type_oid, is_key)| RelationColumn {
                is_key,
                name: name.into(),
                type_oid,
                type_modifier: -1,
            })
            .collect(),
    })
}

fn relations() -> Vec<LogicalMessage> {
    vec![
        relation(
            SECRETS,
            "secrets",
            &[
                ("resource_id", TEXT, true),
                ("version", INT4, true),
                ("value", BYTEA, false),
                ("expires_at", TIMESTAMP, false),
            ],
        ),
        relation(
            ROLES,
            "roles",
            &[
                ("role_id", TEXT, true),
                ("created_at", TIMESTAMP, false),
                ("policy_id", TEXT, false),
            ],
        ),
        relation(
            RESOURCES,
            "resources",
            &[
                ("resource_id", TEXT, true),
                ("owner_id", TEXT, false),
                ("created_at", TIMESTAMP, false),
                ("policy_id", TEXT, false),
            ],
        ),
        relation(
            ROLE_MEMBERSHIPS,
            "role_memberships",
            &[
                ("role_id", TEXT, true),
                ("member_id", TEXT, true),
                ("admin_option", BOOL, false),
                ("ownership", BOOL, true),
                ("policy_id", TEXT, false),
            ],
        ),
        relation(
            PERMISSIONS,
            "permissions",
            &[
                ("privilege", TEXT, true),
                ("resource_id", TEXT, true),
                ("role_id", TEXT, true),
                ("policy_id", TEXT, false),
            ],
        ),
    ]
}

/// `\x` + hex of a ~60-byte encrypted value ('G' ‖ tag ‖ IV ‖ ciphertext).
fn secret_value(rng: &mut Rng) -> String {
    let mut value = String::from("\\x47");
    for _ in 0..59 {
        value.push_str(&format!("{:02x}", rng.next() as u8));
    }
    value
}

fn variable_id(rng: &mut Rng) -> String {
    format!("acct:variable:prod/app-{}/db-password", rng.next() % 500)
}

fn secrets_insert(rng: &mut Rng, version: i64) -> LogicalMessage {
    let row = TupleBuilder::new()
        .text(variable_id(rng))
        .int(version)
        .text(secret_value(rng))
        .null()
        .finish();
    LogicalMessage::Insert(Insert {
        xid: None,
        rel_id: SECRETS,
        new: row,
    })
}

const NOW: &str = "2026-11-24 10:15:42.123456";

fn insert(rel_id: u32, columns: &[Option<&str>]) -> LogicalMessage {
    let mut row = TupleBuilder::new();
    for column in columns {
        match column {
            Some(text) => row.text(text),
            None => row.null(),
        };
    }
    LogicalMessage::Insert(Insert {
        xid: None,
        rel_id,
        new: row.finish(),
    })
}

/// A rotation: new version in, a version past the limit out.
fn rotation(rng: &mut Rng, xid: u32, lsn: &mut Lsn) -> Vec<LogicalMessage> {
    let version = (rng.next() % 40) as i64 + 21;
    let begin_lsn = *lsn;
    *lsn = lsn.advanced_by(400);
    let old_key = TupleBuilder::new()
        .text(variable_id(rng))
        .int(version - 20)
        .null()
        .null()
        .finish();
    vec![
        LogicalMessage::Begin(Begin {
            final_lsn: *lsn,
            commit_time: PgTimestamp(i64::from(xid)),
            xid,
        }),
        secrets_insert(rng, version),
        LogicalMessage::Delete(Delete {
            xid: None,
            rel_id: SECRETS,
            old: OldTuple::Key(old_key),
        }),
        LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: *lsn,
            end_lsn: lsn.advanced_by(48).max(begin_lsn),
            commit_time: PgTimestamp(i64::from(xid)),
        }),
    ]
}

/// A policy load adding one application: host, layer, variables, grants.
/// (Relation messages are sent once per session, at the start of `mixed`.)
fn policy_load(rng: &mut Rng, xid: u32, lsn: &mut Lsn) -> Vec<LogicalMessage> {
    let app = rng.next() % 500;
    let policy = format!("acct:policy:prod/app-{app}");
    let layer = format!("acct:layer:prod/app-{app}");
    let host = format!("acct:host:prod/app-{app}/web-{}", rng.next() % 10);
    let admin = "acct:user:admin".to_owned();
    *lsn = lsn.advanced_by(4_000);
    let mut out = vec![LogicalMessage::Begin(Begin {
        final_lsn: *lsn,
        commit_time: PgTimestamp(i64::from(xid)),
        xid,
    })];
    for role in [&layer, &host] {
        out.push(insert(ROLES, &[Some(role), Some(NOW), Some(&policy)]));
        out.push(insert(
            RESOURCES,
            &[Some(role), Some(&admin), Some(NOW), Some(&policy)],
        ));
        out.push(insert(
            ROLE_MEMBERSHIPS,
            &[
                Some(role),
                Some(&admin),
                Some("f"),
                Some("t"),
                Some(&policy),
            ],
        ));
    }
    out.push(insert(
        ROLE_MEMBERSHIPS,
        &[
            Some(&layer),
            Some(&host),
            Some("f"),
            Some("f"),
            Some(&policy),
        ],
    ));
    for name in ["db-password", "db-username", "api-key"] {
        let variable = format!("acct:variable:prod/app-{app}/{name}");
        out.push(insert(
            RESOURCES,
            &[Some(&variable), Some(&admin), Some(NOW), Some(&policy)],
        ));
        for privilege in ["read", "execute"] {
            out.push(insert(
                PERMISSIONS,
                &[
                    Some(privilege),
                    Some(&variable),
                    Some(&layer),
                    Some(&policy),
                ],
            ));
        }
        out.push(secrets_insert(rng, 1));
    }
    out.push(LogicalMessage::Commit(Commit {
        flags: 0,
        commit_lsn: *lsn,
        end_lsn: lsn.advanced_by(48),
        commit_time: PgTimestamp(i64::from(xid)),
    }));
    out
}

/// Frames (CopyData payloads) cut from one buffer, as the source does.
fn to_frames(messages: &[LogicalMessage]) -> (Vec<Bytes>, u64) {
    let mut wire = BytesMut::new();
    let mut lengths = Vec::with_capacity(messages.len());
    for m in messages {
        let frame = m.to_xlog_data(Lsn(0x1_0000_0000), Lsn(0x1_0000_1000), PgTimestamp(1));
        lengths.push(frame.len());
        wire.extend_from_slice(&frame);
    }
    let total = wire.len() as u64;
    let frames = lengths
        .into_iter()
        .map(|len| wire.split_to(len).freeze())
        .collect();
    (frames, total)
}

fn secrets_inserts(n: usize) -> Vec<LogicalMessage> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|i| secrets_insert(&mut rng, i as i64 % 20 + 1))
        .collect()
}

fn mixed(n_txns: u32) -> Vec<LogicalMessage> {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut lsn = Lsn(0x1_0000_0000);
    let mut out = Vec::new();
    out.extend(relations());
    for xid in 1000..1000 + n_txns {
        if xid % 20 == 0 {
            out.extend(policy_load(&mut rng, xid, &mut lsn));
        } else {
            out.extend(rotation(&mut rng, xid, &mut lsn));
        }
    }
    out
}

/// The measured loop: frame → pgoutput → every column. Frames are owned
/// and consumed, as the source hands them over.
fn decode_all(frames: Vec<Bytes>) -> usize {
    let mut decoder = PgOutputDecoder::new();
    let mut columns = 0usize;
    for frame in frames {
        if let Ok(ReplicationMessage::XLogData(x)) = ReplicationMessage::parse(frame) {
            if let Ok(summary) = walk(&mut decoder, x.data) {
                columns += summary.value_bytes + summary.columns;
            }
        }
    }
    columns
}

fn workloads() -> Vec<(&'static str, Vec<Bytes>, u64)> {
    [
        ("secrets_insert", secrets_inserts(10_000)),
        ("mixed", mixed(2_000)),
    ]
    .into_iter()
    .map(|(name, messages)| {
        let (frames, bytes) = to_frames(&messages);
        // Every frame must decode: a bench of error paths would flatter us.
        let mut decoder = PgOutputDecoder::new();
        for frame in &frames {
            let ReplicationMessage::XLogData(x) =
                ReplicationMessage::parse(frame.clone()).expect("frame decodes")
            else {
                panic!("not XLogData")
            };
            decoder.decode(x.data).expect("pgoutput decodes");
        }
        eprintln!(
            "decode/{name}: {} messages, {} bytes, {:.1} bytes/message",
            frames.len(),
            bytes,
            bytes as f64 / frames.len() as f64
        );
        (name, frames, bytes)
    })
    .collect()
}

fn bench(c: &mut Criterion) {
    for (name, frames, bytes) in workloads() {
        let mut group = c.benchmark_group(format!("decode/{name}"));
        // Cloning the frame list (one reference-count increment per frame)
        // is setup, outside the timing.
        let run = |b: &mut criterion::Bencher<'_>| {
            b.iter_batched(
                || frames.clone(),
                |frames| decode_all(black_box(frames)),
                BatchSize::LargeInput,
            )
        };
        group.throughput(Throughput::Elements(frames.len() as u64));
        group.bench_function("messages", run);
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function("bytes", run);
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
