//! The filter stage: feeds the Conjur model from the stream and decides, per
//! `secrets` row, which replica sets may receive it.
//!
//! Sits between transaction assembly and the sinks and changes nothing but
//! each change's `mask` and each commit's `effects`. Model inputs
//! (`role_memberships`, `permissions`, `resources`) are fed *before* later
//! rows of the same transaction are decided, so a grant and a secret written
//! in one transaction, in either order, end right (the grant's flip re-syncs
//! what was decided before it).
//!
//! **Replay window.** At session start the model is built from the leader at
//! a snapshot taken *now* (position `C`), while the stream resumes at the
//! followers' origins, before `C`. Transactions that committed before `C` are
//! already in the model: they are decided by it but not fed again, and make
//! no effects. So every `secrets` row in the window goes only where its
//! resource is in the set *at `C`*, and the reconcile that ran at `C`
//! (`crate::reconcile`) already purged and backfilled each follower to that
//! model. Feeding the window again could mix old and new rows into a graph
//! that never existed on the leader (a membership added before a row and an
//! ownership added after it) and forward a secret no follower was ever
//! entitled to; see ARCHITECTURE.md, "Session start".
//!
//! **Fail closed.** A `secrets` row whose resource id cannot be read goes to
//! no follower that has a set (counted in
//! `pgsieve_rows_failed_closed_total`); an unknown resource is in no set
//! (the model's own rule).

use std::collections::HashMap;
use std::sync::Arc;

use pgsieve_filters::{Change, FilterError, Model, ModelTable, SetMask};
use pgsieve_protocol::Lsn;
use pgsieve_protocol::pgoutput::{OldTuple, Relation, TupleData};

use crate::conjur::{self, ConjurTable};
use crate::txn::{RowOp, TxnEvent};

/// What a table means to the model: its [`ConjurTable`] with the columns read.
#[derive(Debug, Clone, Copy)]
enum Role {
    Secrets {
        resource_id: usize,
    },
    Memberships {
        role_id: usize,
        member_id: usize,
        ownership: usize,
    },
    Permissions {
        resource_id: usize,
        role_id: usize,
        privilege: usize,
    },
    Resources {
        resource_id: usize,
        owner_id: usize,
    },
    Other,
}

/// Why a change could not be fed to the model.
#[derive(Debug, thiserror::Error)]
#[error("filter: {table} change in the leader transaction committed at {commit_lsn}: {what}")]
pub struct FilterStageError {
    /// Table name.
    pub table: String,
    /// Commit LSN of the transaction.
    pub commit_lsn: Lsn,
    /// What went wrong.
    pub what: String,
}

/// The stage: one model for every replica set of the process.
#[derive(Debug)]
pub struct FilterStage {
    model: Model,
    roles: HashMap<u32, Role>,
    commit_lsn: Lsn,
    /// Transactions committed before this position are already in the model.
    model_at: Lsn,
    /// Whether the open transaction is one of those.
    replayed: bool,
    failed_closed: u64,
}

impl FilterStage {
    /// A stage over a model that already contains every transaction committed
    /// before `model_at` (the snapshot it was built in; `Lsn::ZERO` for a model
    /// that the whole stream must feed).
    pub fn new(model: Model, model_at: Lsn) -> Self {
        Self {
            model,
            roles: HashMap::new(),
            commit_lsn: Lsn::ZERO,
            model_at,
            replayed: false,
            failed_closed: 0,
        }
    }

    /// `secrets` rows dropped because no decision could be made, so far.
    pub fn failed_closed(&self) -> u64 {
        self.failed_closed
    }

    /// The model, for explain and tap.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Whether `event` would change the model (a row of a model table): a
    /// speculation must be given up before it (see `Assembled::Speculated`).
    pub fn feeds_model(&self, event: &TxnEvent) -> bool {
        let TxnEvent::Change(change) = event else {
            return false;
        };
        !matches!(
            self.roles.get(&change.relation.oid),
            None | Some(Role::Other | Role::Secrets { .. })
        )
    }

    /// Updates masks, feeds the model and attaches effects, in place.
    pub fn process(&mut self, event: &mut TxnEvent) -> Result<(), FilterStageError> {
        match event {
            TxnEvent::Relation(relation) => {
                let role = classify(relation).map_err(|what| FilterStageError {
                    table: format!("{}.{}", relation.namespace, relation.name),
                    commit_lsn: self.commit_lsn,
                    what,
                })?;
                self.roles.insert(relation.oid, role);
            }
            TxnEvent::Begin(begin) => {
                self.commit_lsn = begin.commit_lsn;
                self.replayed = begin.commit_lsn < self.model_at;
                self.model.begin();
            }
            TxnEvent::Change(change) => {
                let role = self
                    .roles
                    .get(&change.relation.oid)
                    .copied()
                    .unwrap_or(Role::Other);
                let err = |what: String| FilterStageError {
                    table: change.relation.name.clone(),
                    commit_lsn: self.commit_lsn,
                    what,
                };
                match role {
                    Role::Secrets { resource_id } => {
                        let tuple = match &change.op {
                            RowOp::Insert(m) => &m.new,
                            RowOp::Update(m) => &m.new,
                            RowOp::Delete(m) => old(&m.old),
                        };
                        change.mask = match tuple.get(resource_id).and_then(|c| c.as_bytes()) {
                            Some(id) => self.model.decide(id),
                            None => {
                                self.failed_closed += 1;
                                crate::metrics::count_failed_closed();
                                tracing::warn!(commit_lsn = %self.commit_lsn, "A secrets row without a readable resource_id: dropped for every follower with a replica set.");
                                SetMask::NONE
                            }
                        };
                    }
                    Role::Other => {}
                    _ if self.replayed => {}
                    input => {
                        feed(&mut self.model, input, &change.op).map_err(|e| err(e.to_string()))?;
                    }
                }
            }
            TxnEvent::Truncate(_) if self.replayed => {}
            TxnEvent::Truncate(truncate) => {
                for oid in &truncate.rel_ids {
                    let table = match self.roles.get(oid) {
                        Some(Role::Memberships { .. }) => ModelTable::RoleMemberships,
                        Some(Role::Permissions { .. }) => ModelTable::Permissions,
                        Some(Role::Resources { .. }) => ModelTable::Resources,
                        _ => continue,
                    };
                    self.model
                        .feed(Change::Truncate(table))
                        .map_err(|e| FilterStageError {
                            table: format!("{table:?}"),
                            commit_lsn: self.commit_lsn,
                            what: e.to_string(),
                        })?;
                }
            }
            TxnEvent::Commit(commit) => {
                let effects = self.model.end();
                if !effects.is_empty() && !self.replayed {
                    commit.effects = Arc::new(effects);
                }
            }
            // A speculation never fed the model (the reader gives it up
            // before a model change), so there is nothing to undo.
            TxnEvent::Abandon { .. } | TxnEvent::Idle { .. } => {}
        }
        Ok(())
    }
}

/// What `relation` is to the model. A model or `secrets` table without the
/// columns the decisions read is an error: treating it as unfiltered would
/// forward every secret.
fn classify(relation: &Relation) -> Result<Role, String> {
    let col = |name: &str| relation.column_index(name);
    let kind = conjur::classify(&relation.namespace, &relation.name);
    let found = match kind {
        ConjurTable::Other => return Ok(Role::Other),
        ConjurTable::Secrets => col("resource_id").map(|resource_id| Role::Secrets { resource_id }),
        ConjurTable::RoleMemberships => (|| {
            Some(Role::Memberships {
                role_id: col("role_id")?,
                member_id: col("member_id")?,
                ownership: col("ownership")?,
            })
        })(),
        ConjurTable::Permissions => (|| {
            Some(Role::Permissions {
                resource_id: col("resource_id")?,
                role_id: col("role_id")?,
                privilege: col("privilege")?,
            })
        })(),
        ConjurTable::Resources => (|| {
            Some(Role::Resources {
                resource_id: col("resource_id")?,
                owner_id: col("owner_id")?,
            })
        })(),
    };
    found.ok_or_else(|| {
        format!("the leader's {kind:?} table lacks a column the replica-set decisions read")
    })
}

fn old(old: &OldTuple) -> &TupleData {
    match old {
        OldTuple::Key(t) | OldTuple::Full(t) => t,
    }
}

fn text(tuple: &TupleData, index: usize) -> Result<&str, FilterError> {
    tuple
        .get(index)
        .and_then(|c| c.as_str())
        .ok_or_else(|| FilterError::BadId {
            id: format!("<column {index} missing or not text>"),
        })
}

fn boolean(tuple: &TupleData, index: usize) -> bool {
    matches!(
        tuple.get(index).and_then(|c| c.as_bytes()),
        Some(b"t") | Some(b"true") | Some([1])
    )
}

/// Turns one row change of a model table into model changes.
fn feed(model: &mut Model, role: Role, op: &RowOp) -> Result<(), FilterError> {
    // An update that changed the key arrives with the old key: remove the
    // old row, then insert the new one.
    let (removed, added): (Option<&TupleData>, Option<&TupleData>) = match op {
        RowOp::Insert(m) => (None, Some(&m.new)),
        RowOp::Update(m) => (m.old.as_ref().map(old), Some(&m.new)),
        RowOp::Delete(m) => (Some(old(&m.old)), None),
    };
    match role {
        Role::Memberships {
            role_id,
            member_id,
            ownership,
        } => {
            if let Some(t) = removed {
                model.feed(Change::MembershipDelete {
                    role_id: text(t, role_id)?,
                    member_id: text(t, member_id)?,
                    ownership: boolean(t, ownership),
                })?;
            }
            if let Some(t) = added {
                model.feed(Change::MembershipUpsert {
                    role_id: text(t, role_id)?,
                    member_id: text(t, member_id)?,
                    ownership: boolean(t, ownership),
                })?;
            }
        }
        Role::Permissions {
            resource_id,
            role_id,
            privilege,
        } => {
            if let Some(t) = removed {
                model.feed(Change::PermissionDelete {
                    resource_id: text(t, resource_id)?,
                    role_id: text(t, role_id)?,
                    privilege: text(t, privilege)?,
                })?;
            }
            if let Some(t) = added {
                model.feed(Change::PermissionUpsert {
                    resource_id: text(t, resource_id)?,
                    role_id: text(t, role_id)?,
                    privilege: text(t, privilege)?,
                })?;
            }
        }
        Role::Resources {
            resource_id,
            owner_id,
        } => {
            if let Some(t) = removed {
                let removed_id = text(t, resource_id)?;
                let kept = added.map(|n| text(n, resource_id)).transpose()?;
                if kept != Some(removed_id) {
                    model.feed(Change::ResourceDelete {
                        resource_id: removed_id,
                    })?;
                }
            }
            if let Some(t) = added {
                model.feed(Change::ResourceUpsert {
                    resource_id: text(t, resource_id)?,
                    owner_id: text(t, owner_id)?,
                })?;
            }
        }
        Role::Secrets { .. } | Role::Other => {}
    }
    Ok(())
}
