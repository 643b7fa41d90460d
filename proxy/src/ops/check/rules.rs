//! The pure half of each check: facts in, a [`CheckResult`] out (no I/O).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::conjur::CONJUR_TABLES;
use crate::conjur::PublicationFacts;
use crate::sink::catalog::{CatalogColumn, column_mismatches};
use crate::sql::quote_ident;

use super::{CheckResult, MAX_LISTED_MISMATCHES};

// ---------------------------------------------------------------------------
// Facts and their pure evaluation.
// ---------------------------------------------------------------------------

/// `wal_level` must be `logical` for a logical replication slot.
pub fn check_wal_level(wal_level: &str) -> CheckResult {
    const NAME: &str = "leader: wal_level";
    if wal_level == "logical" {
        CheckResult::pass(NAME, "logical")
    } else {
        CheckResult::fail(
            NAME,
            format!(
                "wal_level is {wal_level}, logical decoding needs logical: set wal_level = logical \
                 and restart the leader"
            ),
        )
    }
}

/// Capacity for replication slots and wal senders on the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// `max_replication_slots`.
    pub max_slots: i64,
    /// Slots that exist (any type).
    pub used_slots: i64,
    /// `max_wal_senders`.
    pub max_senders: i64,
    /// Wal senders running now.
    pub used_senders: i64,
    /// Whether pgsieve's slot exists already (then it needs no new one).
    pub has_our_slot: bool,
    /// Whether pgsieve's slot is in use (then its sender is already counted).
    pub our_slot_active: bool,
}

/// A free slot is needed unless ours exists; a free sender unless ours is connected.
pub fn check_capacity(c: &Capacity) -> Vec<CheckResult> {
    let slots = {
        const NAME: &str = "leader: replication slots";
        let free = c.max_slots - c.used_slots;
        let seen = format!(
            "{} of max_replication_slots = {} in use",
            c.used_slots, c.max_slots
        );
        if c.has_our_slot {
            CheckResult::pass(NAME, format!("{seen}; pgsieve's slot exists"))
        } else if free > 0 {
            CheckResult::pass(NAME, format!("{seen}; {free} free"))
        } else {
            CheckResult::fail(
                NAME,
                format!("{seen}, none free for pgsieve's slot: raise max_replication_slots"),
            )
        }
    };
    let senders = {
        const NAME: &str = "leader: wal senders";
        let free = c.max_senders - c.used_senders;
        let seen = format!(
            "{} of max_wal_senders = {} in use",
            c.used_senders, c.max_senders
        );
        if c.our_slot_active {
            CheckResult::pass(NAME, format!("{seen}; pgsieve's slot is already streaming"))
        } else if free > 0 {
            CheckResult::pass(NAME, format!("{seen}; {free} free"))
        } else {
            CheckResult::fail(
                NAME,
                format!("{seen}, none free for pgsieve's stream: raise max_wal_senders"),
            )
        }
    };
    vec![slots, senders]
}

/// The role pgsieve logs in as on the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFacts {
    /// `current_user`.
    pub name: String,
    /// `rolsuper`.
    pub is_superuser: bool,
    /// `rolreplication`.
    pub can_replicate: bool,
}

/// The leader role must have `REPLICATION` (or be a superuser).
pub fn check_role(role: &RoleFacts) -> CheckResult {
    const NAME: &str = "leader: role may replicate";
    if role.can_replicate {
        CheckResult::pass(NAME, format!("role {} has REPLICATION", role.name))
    } else if role.is_superuser {
        CheckResult::pass(NAME, format!("role {} is a superuser", role.name))
    } else {
        CheckResult::fail(
            NAME,
            format!(
                "role {} has neither REPLICATION nor SUPERUSER: ALTER ROLE {} REPLICATION",
                role.name,
                quote_ident(&role.name)
            ),
        )
    }
}

/// The publication must exist, not be `FOR ALL TABLES`, publish every operation, and
/// list exactly [`CONJUR_TABLES`] in schema `public`.
pub fn check_publication(name: &str, facts: Option<&PublicationFacts>) -> CheckResult {
    let check = format!("leader: publication {name}");
    let Some(facts) = facts else {
        return CheckResult::fail(
            check,
            format!("publication {name} does not exist: run pgsieve setup"),
        );
    };
    if facts.all_tables {
        return CheckResult::fail(
            check,
            format!(
                "publication {name} is FOR ALL TABLES, which publishes the policy loader's \
                 key-less temporary tables: drop it and run pgsieve setup"
            ),
        );
    }
    let wanted: BTreeSet<String> = CONJUR_TABLES
        .iter()
        .map(|t| format!("public.{t}"))
        .collect();
    let missing: Vec<&str> = wanted
        .difference(&facts.tables)
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = facts
        .tables
        .difference(&wanted)
        .map(String::as_str)
        .collect();
    let skipped: Vec<&str> = facts
        .operations
        .iter()
        .filter(|(_, on)| !on)
        .map(|(op, _)| *op)
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("lacks {} (run pgsieve setup)", missing.join(", ")));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "also publishes {} (ALTER PUBLICATION {} DROP TABLE …)",
            extra.join(", "),
            quote_ident(name)
        ));
    }
    if !skipped.is_empty() {
        problems.push(format!("does not publish {}", skipped.join(", ")));
    }
    if problems.is_empty() {
        CheckResult::pass(
            check,
            format!("lists exactly Conjur's {} tables", CONJUR_TABLES.len()),
        )
    } else {
        CheckResult::fail(check, format!("publication {name} {}", problems.join("; ")))
    }
}

/// `policy_log` has no key; its `relreplident` must be `f` (FULL), or the leader's own
/// trimming DELETEs fail once it is published. `None`: the table does not exist.
pub fn check_policy_log_identity(relreplident: Option<&str>) -> CheckResult {
    const NAME: &str = "leader: policy_log replica identity";
    match relreplident {
        Some("f") => CheckResult::pass(NAME, "FULL"),
        Some(other) => {
            let shown = match other {
                "d" => "DEFAULT",
                "n" => "NOTHING",
                "i" => "USING INDEX",
                _ => other,
            };
            CheckResult::fail(
                NAME,
                format!(
                    "public.policy_log has replica identity {shown}, needs FULL (it has no primary \
                     key): run pgsieve setup"
                ),
            )
        }
        None => CheckResult::fail(NAME, "table public.policy_log does not exist on the leader"),
    }
}

/// The slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotFacts {
    /// Output plugin.
    pub plugin: Option<String>,
    /// Database the slot belongs to.
    pub database: Option<String>,
    /// `wal_status` (`reserved`, `extended`, `unreserved`, `lost`).
    pub wal_status: Option<String>,
    /// `pg_current_wal_lsn() - confirmed_flush_lsn`, when known.
    pub lag_bytes: Option<i64>,
}

/// The slot, when it exists, must be a pgoutput slot of the configured database
/// whose WAL is not lost, and lag no more than `max_lag_bytes` behind.
pub fn check_slot(
    slot: &str,
    database: &str,
    facts: Option<&SlotFacts>,
    max_lag_bytes: u64,
) -> Vec<CheckResult> {
    let name = format!("leader: slot {slot}");
    const LAG: &str = "leader: slot lag";
    let Some(facts) = facts else {
        return vec![
            CheckResult::pass(name, "does not exist yet; pgsieve run creates it"),
            CheckResult::pass(LAG, "no slot yet"),
        ];
    };
    let mut problems = Vec::new();
    if facts.plugin.as_deref() != Some("pgoutput") {
        problems.push(format!(
            "uses plugin {}, not pgoutput",
            facts.plugin.as_deref().unwrap_or("(none: a physical slot)")
        ));
    }
    if facts.database.as_deref() != Some(database) {
        problems.push(format!(
            "belongs to database {}, not {database}",
            facts.database.as_deref().unwrap_or("(none)")
        ));
    }
    if facts.wal_status.as_deref() == Some("lost") {
        problems.push(
            "has lost required WAL (wal_status = lost): drop it and let pgsieve run copy again"
                .into(),
        );
    }
    let slot_result = if problems.is_empty() {
        CheckResult::pass(
            name,
            format!(
                "pgoutput slot of database {database}, wal_status {}",
                facts.wal_status.as_deref().unwrap_or("unknown")
            ),
        )
    } else {
        CheckResult::fail(name, format!("slot {slot} {}", problems.join("; ")))
    };
    let lag = match facts.lag_bytes {
        None => CheckResult::pass(LAG, "no confirmed flush position yet"),
        Some(lag) if u64::try_from(lag).unwrap_or(0) <= max_lag_bytes => CheckResult::pass(
            LAG,
            format!("{lag} bytes behind the current WAL position (limit {max_lag_bytes})"),
        ),
        Some(lag) => CheckResult::fail(
            LAG,
            format!(
                "{lag} bytes behind the current WAL position, more than max_lag_bytes = {max_lag_bytes}"
            ),
        ),
    };
    vec![slot_result, lag]
}

/// Published tables pgsieve cannot `SELECT` on the leader (initial copy and backfill
/// read them with the same role).
pub fn check_table_privileges(role: &str, unreadable: &[String]) -> CheckResult {
    const NAME: &str = "leader: SELECT on published tables";
    if unreadable.is_empty() {
        CheckResult::pass(NAME, format!("role {role} can read every published table"))
    } else {
        CheckResult::fail(
            NAME,
            format!(
                "role {role} cannot SELECT {}: GRANT SELECT ON … TO {}",
                unreadable.join(", "),
                quote_ident(role)
            ),
        )
    }
}

/// Columns of each table, in `attnum` order: `table → [(column, format_type)]`.
pub type TableColumns = BTreeMap<String, Vec<(String, String)>>;

/// Compares a follower's columns with the leader's, table by table and column by column
/// (names and `format_type` types). Lists the first few mismatches precisely.
pub fn compare_schemas(
    follower: &str,
    tables: &[String],
    leader: &TableColumns,
    theirs: &TableColumns,
) -> CheckResult {
    let name = format!("follower {follower}: schema");
    let mut mismatches = Vec::new();
    for table in tables {
        let Some(lcols) = leader.get(table) else {
            mismatches.push(format!("table public.{table} does not exist on the leader"));
            continue;
        };
        let Some(fcols) = theirs.get(table) else {
            mismatches.push(format!("table public.{table} does not exist"));
            continue;
        };
        let columns = |cols: &[(String, String)]| -> Vec<CatalogColumn> {
            cols.iter()
                .map(|(name, type_name)| CatalogColumn {
                    name: name.clone(),
                    type_name: type_name.clone(),
                    is_primary_key: false,
                })
                .collect()
        };
        mismatches.extend(
            column_mismatches(&format!("public.{table}"), &columns(lcols), &columns(fcols))
                .iter()
                .map(ToString::to_string),
        );
    }
    if mismatches.is_empty() {
        return CheckResult::pass(
            name,
            format!(
                "{} published tables match the leader column by column",
                tables.len()
            ),
        );
    }
    let total = mismatches.len();
    let mut detail = mismatches
        .into_iter()
        .take(MAX_LISTED_MISMATCHES)
        .collect::<Vec<_>>()
        .join("; ");
    if total > MAX_LISTED_MISMATCHES {
        let _ = write!(detail, "; and {} more", total - MAX_LISTED_MISMATCHES);
    }
    CheckResult::fail(name, detail)
}

/// Replication-origin capacity on a follower: origins share `max_replication_slots`.
pub fn check_origin_capacity(
    follower: &str,
    origin: &str,
    max_slots: i64,
    used_states: i64,
    our_progress: Option<&str>,
) -> CheckResult {
    let name = format!("follower {follower}: replication origin");
    let seen = format!("{used_states} of max_replication_slots = {max_slots} origin states in use");
    match our_progress {
        Some(lsn) => CheckResult::pass(name, format!("origin {origin} at {lsn}; {seen}")),
        None if max_slots - used_states > 0 => CheckResult::pass(
            name,
            format!("origin {origin} not created yet (the initial copy creates it); {seen}"),
        ),
        None => CheckResult::fail(
            name,
            format!(
                "{seen}, none free for origin {origin}: raise max_replication_slots on the follower"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::*;

    fn cols(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
            .collect()
    }

    #[test]
    fn wal_level_replica_fails_with_the_fix() {
        let r = check_wal_level("replica");
        assert!(!r.ok);
        assert!(r.detail.contains("wal_level is replica"), "{}", r.detail);
        assert!(check_wal_level("logical").ok);
    }

    #[test]
    fn capacity_counts_our_slot_and_sender() {
        let full = Capacity {
            max_slots: 2,
            used_slots: 2,
            max_senders: 3,
            used_senders: 3,
            has_our_slot: false,
            our_slot_active: false,
        };
        assert!(check_capacity(&full).iter().all(|r| !r.ok));
        let ours = Capacity {
            has_our_slot: true,
            our_slot_active: true,
            ..full.clone()
        };
        assert!(check_capacity(&ours).iter().all(|r| r.ok));
        let free = Capacity {
            used_slots: 1,
            used_senders: 0,
            ..full
        };
        assert!(check_capacity(&free).iter().all(|r| r.ok));
    }

    #[test]
    fn role_without_replication_fails() {
        let role = RoleFacts {
            name: "app".into(),
            is_superuser: false,
            can_replicate: false,
        };
        assert!(!check_role(&role).ok);
        assert!(
            check_role(&RoleFacts {
                is_superuser: true,
                ..role.clone()
            })
            .ok
        );
        assert!(
            check_role(&RoleFacts {
                can_replicate: true,
                ..role
            })
            .ok
        );
    }

    fn publication(tables: &[&str]) -> PublicationFacts {
        PublicationFacts {
            all_tables: false,
            operations: vec![
                ("insert", true),
                ("update", true),
                ("delete", true),
                ("truncate", true),
            ],
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn publication_names_missing_and_extra_tables() {
        let all: Vec<String> = CONJUR_TABLES
            .iter()
            .map(|t| format!("public.{t}"))
            .collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        assert!(check_publication("p", Some(&publication(&refs))).ok);

        let mut tables: Vec<&str> = refs
            .iter()
            .copied()
            .filter(|t| *t != "public.secrets")
            .collect();
        tables.push("public.schema_migrations");
        let r = check_publication("p", Some(&publication(&tables)));
        assert!(!r.ok);
        assert!(r.detail.contains("lacks public.secrets"), "{}", r.detail);
        assert!(
            r.detail.contains("also publishes public.schema_migrations"),
            "{}",
            r.detail
        );

        let r = check_publication("p", None);
        assert_eq!(r.detail, "publication p does not exist: run pgsieve setup");
        let mut all_tables = publication(&refs);
        all_tables.all_tables = true;
        assert!(!check_publication("p", Some(&all_tables)).ok);
        let mut no_truncate = publication(&refs);
        no_truncate.operations[3].1 = false;
        let r = check_publication("p", Some(&no_truncate));
        assert!(
            r.detail.contains("does not publish truncate"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn policy_log_identity_must_be_full() {
        assert!(check_policy_log_identity(Some("f")).ok);
        let r = check_policy_log_identity(Some("d"));
        assert!(!r.ok && r.detail.contains("DEFAULT"), "{}", r.detail);
        assert!(!check_policy_log_identity(None).ok);
    }

    #[test]
    fn slot_lag_over_the_limit_fails() {
        let facts = SlotFacts {
            plugin: Some("pgoutput".into()),
            database: Some("conjur".into()),
            wal_status: Some("reserved".into()),
            lag_bytes: Some(1000),
        };
        let r = check_slot("s", "conjur", Some(&facts), 999);
        assert!(r[0].ok);
        assert!(
            !r[1].ok && r[1].detail.contains("1000 bytes"),
            "{}",
            r[1].detail
        );
        assert!(check_slot("s", "conjur", Some(&facts), 1000)[1].ok);
        let wrong = SlotFacts {
            plugin: Some("test_decoding".into()),
            ..facts
        };
        let r = check_slot("s", "conjur", Some(&wrong), 1 << 20);
        assert!(
            !r[0].ok && r[0].detail.contains("test_decoding"),
            "{}",
            r[0].detail
        );
        assert!(check_slot("s", "conjur", None, 0).iter().all(|r| r.ok));
    }

    #[test]
    fn schema_mismatches_are_precise() {
        let tables = vec!["secrets".to_owned(), "roles".to_owned()];
        let mut leader = TableColumns::new();
        leader.insert(
            "secrets".into(),
            cols(&[
                ("resource_id", "text"),
                ("version", "integer"),
                ("expires_at", "timestamp without time zone"),
            ]),
        );
        leader.insert("roles".into(), cols(&[("role_id", "text")]));
        assert!(compare_schemas("f", &tables, &leader, &leader).ok);

        let mut follower = leader.clone();
        follower.insert(
            "secrets".into(),
            cols(&[
                ("resource_id", "text"),
                ("version", "bigint"),
                ("extra", "text"),
            ]),
        );
        follower.remove("roles");
        let r = compare_schemas("us-east", &tables, &leader, &follower);
        assert!(!r.ok);
        assert_eq!(r.name, "follower us-east: schema");
        for part in [
            "public.secrets: the follower has no column \"expires_at\"",
            "public.secrets",
            "bigint",
            "table public.roles does not exist",
        ] {
            assert!(r.detail.contains(part), "{part} not in {}", r.detail);
        }
        assert!(
            !r.detail.contains("extra"),
            "a column only the follower has is no mismatch (run applies by name): {}",
            r.detail
        );
    }

    #[test]
    fn many_schema_mismatches_are_summarised() {
        let tables: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
        let mut leader = TableColumns::new();
        for t in &tables {
            leader.insert(t.clone(), cols(&[("id", "integer")]));
        }
        let r = compare_schemas("f", &tables, &leader, &TableColumns::new());
        assert!(r.detail.ends_with("and 3 more"), "{}", r.detail);
    }

    #[test]
    fn origin_capacity() {
        assert!(check_origin_capacity("f", "o", 4, 4, Some("0/10")).ok);
        assert!(check_origin_capacity("f", "o", 4, 3, None).ok);
        assert!(!check_origin_capacity("f", "o", 4, 4, None).ok);
    }

    #[test]
    fn render_has_one_line_per_check_and_a_summary() {
        let text = render(&[
            CheckResult::pass("a", "fine"),
            CheckResult::fail("b", "broken"),
        ]);
        assert_eq!(text, "PASS  a: fine\nFAIL  b: broken\n2 checks, 1 failed\n");
    }
}
