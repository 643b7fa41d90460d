//! Encoding rows for the follower, rows/s on one core: the two forms the
//! sink sends inserts in, from the same received tuples (W1's plain-table
//! shape: a Conjur variable id, a version, an 8-byte value as bytea text).
//!
//! - `copy_text`: a run of plain inserts as `COPY … FROM STDIN` text rows
//!   (`sink::copy_in::encode_copy_row`, escaping included), into one buffer.
//! - `insert_params`: the same rows as multi-row INSERT parameters
//!   (`sink::value::encode_row`), then each value written into a Bind
//!   message's buffer as tokio-postgres does (`ToSql::to_sql`).
//!
//! The follower's cost per row differs far more than these (a COPY saves it
//! parsing, planning and executor setup of a 768-parameter statement); this
//! bench keeps pgsieve's share of the new path in view.

#![allow(missing_docs)] // `criterion_group!` generates an undocumented function.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgsieve::sink::copy_in::encode_copy_row;
use pgsieve::sink::value::{WireValue, encode_row};
use pgsieve_protocol::{TupleBuilder, TupleData};
use postgres_types::{ToSql, Type};

/// Rows per measured run: one COPY's worth.
const ROWS: usize = 4096;

fn tuples() -> Vec<TupleData> {
    (0..ROWS)
        .map(|i| {
            TupleBuilder::new()
                .text(format!(
                    "acme:variable:shared/app-{}/var-{}",
                    i % 10,
                    i % 50
                ))
                .int(i as i64 + 2)
                .text("\\x0102030405060708")
                .finish()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let tuples = tuples();
    let mut group = c.benchmark_group("apply_encode");
    group.throughput(Throughput::Elements(ROWS as u64));
    let mut params: Vec<WireValue> = Vec::with_capacity(ROWS * 3);
    let mut out = BytesMut::with_capacity(ROWS * 64);
    group.bench_function("copy_text", |b| {
        b.iter(|| {
            params.clear();
            out.clear();
            for t in &tuples {
                let start = params.len();
                encode_row(t, &mut params);
                encode_copy_row(&params[start..], &mut out);
            }
            black_box(out.len())
        })
    });
    group.bench_function("insert_params", |b| {
        b.iter(|| {
            params.clear();
            out.clear();
            for t in &tuples {
                encode_row(t, &mut params);
            }
            for value in &params {
                let _ = black_box(value.to_sql(&Type::TEXT, &mut out));
            }
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
