/*!
Writing one batch of differences to the follower: the extra rows deleted,
then the different rows updated and the missing rows inserted from the
leader's values at the snapshot (read by key, as text, and parsed by the
follower's own column types). Statements are prepared once per table and
pipelined; nothing but the differences is written.

The follower session runs with `session_replication_role = replica`, so
foreign keys are not checked statement by statement; the transaction ends
with every table equal to the leader's snapshot, where they hold.
*/

use std::collections::HashMap;

use futures_util::future::try_join_all;
use pgsieve_filters::Model;
use tokio_postgres::{Client, Row, Statement};

use super::compare::{DiffKind, Difference, Key, Side, key_columns};
use super::plan::TablePlan;
use crate::sink::value::WireValue;

/// Prepared statements of one table.
pub struct Writer<'c> {
    plan: &'c TablePlan,
    leader: &'c Client,
    follower: &'c Client,
    insert: Statement,
    update: Option<Statement>,
    delete: Statement,
    fetch: Statement,
}

/// Why a batch could not be written.
#[derive(Debug)]
pub enum WriteError {
    /// A statement failed.
    Sql(Side, tokio_postgres::Error),
    /// A leader row to be written is outside the follower's replica set
    /// (a bug: such keys never leave the merge).
    OutOfSet(String),
    /// A key found by the merge has no leader row any more (the leader
    /// session is not at one snapshot).
    Vanished(Key),
}

fn wire(text: Option<&str>) -> WireValue {
    match text {
        Some(t) => WireValue::text(bytes::Bytes::copy_from_slice(t.as_bytes())),
        None => WireValue::NULL,
    }
}

impl<'c> Writer<'c> {
    /// Prepares the statements of `plan` on both servers.
    pub async fn prepare(
        plan: &'c TablePlan,
        leader: &'c Client,
        follower: &'c Client,
    ) -> Result<Writer<'c>, WriteError> {
        let f = |e| WriteError::Sql(Side::Follower, e);
        let insert = follower.prepare(&plan.insert_sql()).await.map_err(f)?;
        let update = match plan.update_sql() {
            Some(sql) => Some(follower.prepare(&sql).await.map_err(f)?),
            None => None,
        };
        let delete = follower.prepare(&plan.delete_sql()).await.map_err(f)?;
        let fetch = leader
            .prepare(&plan.fetch_sql())
            .await
            .map_err(|e| WriteError::Sql(Side::Leader, e))?;
        Ok(Writer {
            plan,
            leader,
            follower,
            insert,
            update,
            delete,
            fetch,
        })
    }

    /// Writes `differences`; returns the follower rows changed.
    pub async fn write(
        &self,
        differences: &[Difference],
        model: &Model,
        set_bit: Option<usize>,
    ) -> Result<u64, WriteError> {
        let plan = self.plan;
        let f = |e| WriteError::Sql(Side::Follower, e);
        let mut changed = 0;

        let extra = differences.iter().filter(|d| d.kind == DiffKind::Extra);
        let deletes = extra.map(|d| {
            let params: Vec<WireValue> = d.key.iter().map(|k| wire(k.as_deref())).collect();
            self.follower.execute_raw(&self.delete, params)
        });
        changed += try_join_all(deletes).await.map_err(f)?.iter().sum::<u64>();

        // Leader rows for the rest, by key (or row hash).
        let wanted: Vec<&Difference> = differences
            .iter()
            .filter(|d| d.kind != DiffKind::Extra)
            .collect();
        if wanted.is_empty() {
            return Ok(changed);
        }
        let keys: Vec<Key> = wanted.iter().map(|d| d.key.clone()).collect();
        let columns = key_columns(plan.key_len(), &keys);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows: HashMap<Key, Vec<Option<String>>> = self
            .leader
            .query(&self.fetch, &params)
            .await
            .map_err(|e| WriteError::Sql(Side::Leader, e))?
            .iter()
            .map(|r| self.keyed(r))
            .collect();
        if let (Some(i), Some(bit)) = (plan.filter_key, set_bit) {
            let column = plan.key[i];
            for values in rows.values() {
                let id = values.get(column).cloned().flatten().unwrap_or_default();
                if !model.decide(id.as_bytes()).contains(bit) {
                    return Err(WriteError::OutOfSet(id));
                }
            }
        }

        let mut updates = Vec::new();
        let mut inserts = Vec::new();
        for d in wanted {
            let values = rows
                .get(&d.key)
                .ok_or_else(|| WriteError::Vanished(d.key.clone()))?;
            match (d.kind, &self.update) {
                (DiffKind::Different, Some(update)) => {
                    let params: Vec<WireValue> = plan
                        .update_columns()
                        .into_iter()
                        .chain(plan.key.iter().copied())
                        .map(|i| wire(values.get(i).and_then(|v| v.as_deref())))
                        .collect();
                    updates.push(self.follower.execute_raw(update, params));
                }
                _ => {
                    // A row missing twice (no key) is inserted twice.
                    let params: Vec<WireValue> =
                        values.iter().map(|v| wire(v.as_deref())).collect();
                    inserts.push(self.follower.execute_raw(&self.insert, params));
                }
            }
        }
        changed += try_join_all(updates).await.map_err(f)?.iter().sum::<u64>();
        changed += try_join_all(inserts).await.map_err(f)?.iter().sum::<u64>();
        Ok(changed)
    }

    /// A fetched leader row: its key texts (or hash) and every column's text.
    fn keyed(&self, row: &Row) -> (Key, Vec<Option<String>>) {
        let width = self.plan.columns.len();
        let values: Vec<Option<String>> = (0..width)
            .map(|i| row.get::<_, Option<String>>(i))
            .collect();
        let key = if self.plan.has_primary_key {
            self.plan
                .key
                .iter()
                .map(|&i| values.get(i).cloned().flatten())
                .collect()
        } else {
            vec![row.get::<_, Option<String>>(width)]
        };
        (key, values)
    }
}
