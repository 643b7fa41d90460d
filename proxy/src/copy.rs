//! The filtered initial copy (ARCHITECTURE.md, "Session start and gaps").
//!
//! Every published table is copied from the slot's exported snapshot with
//! `COPY … TO STDOUT` into `COPY … FROM STDIN` on the follower, inside one
//! follower transaction that first empties the tables and last records the
//! slot's consistent point as origin progress — so a crash anywhere during
//! the copy leaves the follower's origin at `0/0` and the copy starts over.
//! `secrets` rows go through the same decision as the stream.

use std::io::IsTerminal;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt, pin_mut};
use pgsieve_filters::Model;
use pgsieve_protocol::{Lsn, PgTimestamp};
use tokio_postgres::Client;

use crate::sink::catalog::{SchemaMismatch, check_columns, table_columns};
use crate::sink::origin::XACT_SETUP_SQL;
use crate::sink::statements::{qualified_name, quote_ident};

/// Why the initial copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A leader or follower statement failed.
    #[error("initial copy of {table} to follower {follower}: {source}")]
    Sql {
        /// Follower name.
        follower: String,
        /// Table (or step).
        table: String,
        /// The database error.
        source: tokio_postgres::Error,
    },
    /// A follower table cannot take the leader's rows.
    #[error("initial copy to follower {follower}: {source}")]
    Schema {
        /// Follower name.
        follower: String,
        /// The mismatch (boxed: it is large and rare).
        source: Box<SchemaMismatch>,
    },
    /// The publication lists no tables.
    #[error("publication {0:?} lists no tables on the leader (run `pgsieve setup`)")]
    EmptyPublication(String),
}

/// A table the publication lists.
#[derive(Debug, Clone)]
pub struct PublishedTable {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
}

impl PublishedTable {
    /// Quoted qualified name.
    pub fn qualified(&self) -> String {
        qualified_name(&self.schema, &self.name)
    }
}

/// Tables of `publication`, in name order.
pub async fn published_tables(
    leader: &Client,
    publication: &str,
) -> Result<Vec<PublishedTable>, tokio_postgres::Error> {
    let rows = leader
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables \
             WHERE pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PublishedTable {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect())
}

/// Rows and bytes copied per table.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    /// (table, rows, bytes) in copy order.
    pub tables: Vec<(String, u64, u64)>,
    /// `secrets` rows left out by the filter.
    pub secrets_dropped: u64,
}

/// Copies every published table into `follower` (an apply session bound to
/// the origin), reading through `leader`, which must already be inside a
/// transaction on the slot's snapshot. `set_bit` selects the follower's
/// replica set in `model` (`None`: copy every secret).
#[allow(clippy::too_many_arguments)]
pub async fn copy_tables(
    leader: &Client,
    follower: &Client,
    follower_name: &str,
    tables: &[PublishedTable],
    model: &Model,
    set_bit: Option<usize>,
    consistent_point: Lsn,
) -> Result<CopyReport, CopyError> {
    let sql_err = |table: &str| {
        let follower = follower_name.to_owned();
        let table = table.to_owned();
        move |source| CopyError::Sql {
            follower,
            table,
            source,
        }
    };
    let names: Vec<String> = tables.iter().map(PublishedTable::qualified).collect();
    follower
        .batch_execute(&format!("BEGIN; TRUNCATE {}", names.join(", ")))
        .await
        .map_err(sql_err("(truncate)"))?;
    let mut report = CopyReport::default();
    let terminal = std::io::stderr().is_terminal();
    for table in tables {
        let qualified = table.qualified();
        let started = Instant::now();
        let leader_columns = table_columns(leader, &qualified)
            .await
            .map_err(sql_err(&qualified))?;
        let follower_columns = table_columns(follower, &qualified)
            .await
            .map_err(sql_err(&qualified))?;
        check_columns(&qualified, &leader_columns, &follower_columns).map_err(|source| {
            CopyError::Schema {
                follower: follower_name.to_owned(),
                source: Box::new(source),
            }
        })?;
        let columns: Vec<String> = leader_columns.into_iter().map(|c| c.name).collect();
        let filtered = table.name == "secrets" && set_bit.is_some();
        // resource_id first, so the filter reads the first field of each line.
        let mut ordered = columns.clone();
        if filtered {
            ordered.retain(|c| c != "resource_id");
            ordered.insert(0, "resource_id".to_owned());
        }
        let list = ordered
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let out = leader
            .copy_out(&format!("COPY {qualified} ({list}) TO STDOUT"))
            .await
            .map_err(sql_err(&qualified))?;
        let sink = follower
            .copy_in(&format!("COPY {qualified} ({list}) FROM STDIN"))
            .await
            .map_err(sql_err(&qualified))?;
        pin_mut!(out);
        pin_mut!(sink);
        let bar = terminal.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(format!("{follower_name}: copying {qualified}"));
            bar
        });
        let (mut rows, mut bytes) = (0u64, 0u64);
        let mut partial = BytesMut::new();
        while let Some(chunk) = out.next().await {
            let chunk = chunk.map_err(sql_err(&qualified))?;
            let chunk = if filtered {
                let (kept, dropped) = filter_lines(&mut partial, &chunk, |id| {
                    set_bit.is_none_or(|b| model.decide(id).contains(b))
                });
                report.secrets_dropped += dropped;
                kept
            } else {
                chunk
            };
            rows += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            bytes += chunk.len() as u64;
            if let Some(bar) = &bar {
                bar.set_message(format!(
                    "{follower_name}: copying {qualified}: {rows} rows, {bytes} bytes"
                ));
                bar.tick();
            }
            if !chunk.is_empty() {
                sink.send(chunk).await.map_err(sql_err(&qualified))?;
            }
        }
        sink.as_mut().finish().await.map_err(sql_err(&qualified))?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        tracing::info!(
            follower = follower_name,
            table = %qualified,
            rows,
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Copied table."
        );
        report.tables.push((qualified, rows, bytes));
    }
    let lsn = consistent_point.to_string();
    let now = PgTimestamp::now().0;
    follower
        .execute(XACT_SETUP_SQL, &[&lsn, &now])
        .await
        .map_err(sql_err("(origin)"))?;
    follower
        .batch_execute("COMMIT")
        .await
        .map_err(sql_err("(commit)"))?;
    Ok(report)
}

/// Keeps the complete COPY text lines of `partial` + `chunk` whose first
/// field passes `keep`; an unfinished last line stays in `partial`.
fn filter_lines(
    partial: &mut BytesMut,
    chunk: &Bytes,
    mut keep: impl FnMut(&[u8]) -> bool,
) -> (Bytes, u64) {
    partial.extend_from_slice(chunk);
    let Some(last_newline) = partial.iter().rposition(|&b| b == b'\n') else {
        return (Bytes::new(), 0);
    };
    let complete = partial.split_to(last_newline + 1).freeze();
    let mut kept = BytesMut::with_capacity(complete.len());
    let mut dropped = 0;
    for line in complete.split_inclusive(|&b| b == b'\n') {
        let field = line
            .split(|&b| b == b'\t' || b == b'\n')
            .next()
            .unwrap_or_default();
        let id = unescape_copy_field(field);
        if keep(&id) {
            kept.extend_from_slice(line);
        } else {
            dropped += 1;
        }
    }
    (kept.freeze(), dropped)
}

/// Undoes COPY text escaping of one field.
fn unescape_copy_field(field: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !field.contains(&b'\\') {
        return std::borrow::Cow::Borrowed(field);
    }
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter().copied();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'b') => out.push(8),
            Some(b'f') => out.push(12),
            Some(b'v') => out.push(11),
            Some(other) => out.push(other),
            None => {}
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_whole_lines_across_chunks() {
        let mut partial = BytesMut::new();
        let keep = |id: &[u8]| id.starts_with(b"a:variable:keep");
        let (kept, dropped) = filter_lines(
            &mut partial,
            &Bytes::from_static(
                b"a:variable:keep/1\t1\t\\\\x01\n a:variable:drop\t1\tx\na:variable:ke",
            ),
            keep,
        );
        assert_eq!(&kept[..], b"a:variable:keep/1\t1\t\\\\x01\n");
        assert_eq!(dropped, 1);
        let (kept, dropped) =
            filter_lines(&mut partial, &Bytes::from_static(b"ep/2\t2\tz\n"), keep);
        assert_eq!(&kept[..], b"a:variable:keep/2\t2\tz\n");
        assert_eq!(dropped, 0);
        assert!(partial.is_empty());
    }

    #[test]
    fn unescapes_fields() {
        assert_eq!(&*unescape_copy_field(b"a\\tb\\\\c"), b"a\tb\\c");
    }
}
