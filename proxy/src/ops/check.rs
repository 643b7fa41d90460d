/*!
`pgsieve check`: a preflight an operator runs before `pgsieve run`, printing one
PASS/FAIL line per check with the precise reason, so that a leader without
`wal_level = logical`, a publication missing a table or a follower lacking a column
is found before the first transaction fails to apply.

Each check is split in two: an `async` step that reads facts from the leader or a
follower, and a pure function that turns those facts into a [`CheckResult`] (unit
tested below without a database). The checks only read, except on a follower, where
the origin probe runs in a transaction that is always rolled back.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use crate::config::{Config, FollowerConfig};
use crate::conjur::CONJUR_TABLES;
use crate::conjur::PublicationFacts;
use crate::sink::catalog::{CatalogColumn, column_mismatches};
use crate::source::{ReplicationConnection, SourceConfig};
use crate::sql::quote_ident;

/// How long one connection attempt may take before the check reports it as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many schema mismatches one follower line lists before "and N more".
const MAX_LISTED_MISMATCHES: usize = 5;
/// Name of the throwaway origin created (and rolled back) on each follower.
const PROBE_ORIGIN: &str = "pgsieve_check_probe";

/// The outcome of one check: what was checked, whether it passed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// What was checked, prefixed by where (`leader: wal_level`, `follower us-east: schema`).
    pub name: String,
    /// Whether pgsieve can run as far as this check is concerned.
    pub ok: bool,
    /// The finding: what was seen, and on failure what is wrong and how to fix it.
    pub detail: String,
}

impl CheckResult {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            ok: true,
            detail: detail.into(),
        }
    }

    /// A failed check.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }
}

/// Writes one `PASS`/`FAIL` line per result and a summary line.
pub fn render(results: &[CheckResult]) -> String {
    let mut out = String::new();
    for r in results {
        let verdict = if r.ok { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "{verdict}  {}: {}", r.name, r.detail);
    }
    let failed = failures(results);
    let _ = writeln!(out, "{} checks, {} failed", results.len(), failed);
    out
}

/// How many results failed.
pub fn failures(results: &[CheckResult]) -> usize {
    results.iter().filter(|r| !r.ok).count()
}

/// Runs every check against the configured leader and followers. Never fails as a
/// whole: an unreachable server is itself a failed check, and the checks that need
/// it are skipped.
pub async fn run_checks(config: &Config) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let leader_columns = check_leader(config, &mut results).await;
    for follower in &config.followers {
        check_follower(config, follower, leader_columns.as_ref(), &mut results).await;
    }
    results
}

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

// ---------------------------------------------------------------------------
// Reading the facts.
// ---------------------------------------------------------------------------

/// Runs the leader checks; returns the leader's columns of the published tables (for
/// the follower schema comparison) when the leader could be read.
async fn check_leader(
    config: &Config,
    results: &mut Vec<CheckResult>,
) -> Option<(Vec<String>, TableColumns)> {
    let leader = match connect(&config.leader.pg, "the leader").await {
        Ok((client, tls)) => {
            results.push(CheckResult::pass(
                "leader: connection",
                format!("connected as {}", user_of(&config.leader.pg, tls.as_ref())),
            ));
            client
        }
        Err(e) => {
            results.push(CheckResult::fail("leader: connection", e));
            return None;
        }
    };
    if let Err(e) = leader_facts(config, &leader, results).await {
        results.push(CheckResult::fail("leader: catalog", e));
    }
    // Capacity is counted before the replication probe so it does not count itself.
    results.push(check_replication_connection(config).await);

    let tables = match published_tables(&leader, &config.leader.publication).await {
        Ok(Some(tables)) if !tables.is_empty() => tables,
        Ok(_) => CONJUR_TABLES.iter().map(|t| (*t).to_owned()).collect(),
        Err(e) => {
            results.push(CheckResult::fail("leader: published tables", e));
            return None;
        }
    };
    match table_columns(&leader, &tables).await {
        Ok(columns) => Some((tables, columns)),
        Err(e) => {
            results.push(CheckResult::fail("leader: columns", e));
            None
        }
    }
}

async fn leader_facts(
    config: &Config,
    leader: &Client,
    results: &mut Vec<CheckResult>,
) -> Result<(), String> {
    let slot = &config.leader.slot;
    let publication = &config.leader.publication;

    let wal_level: String = query_one(leader, "SHOW wal_level", &[]).await?.get(0);
    results.push(check_wal_level(&wal_level));

    let row = query_one(
        leader,
        "SELECT current_setting('max_replication_slots')::bigint,
                (SELECT count(*) FROM pg_catalog.pg_replication_slots),
                current_setting('max_wal_senders')::bigint,
                (SELECT count(*) FROM pg_catalog.pg_stat_replication),
                current_database()::text",
        &[],
    )
    .await?;
    let database: String = row.get(4);
    let slot_row = leader
        .query_opt(
            "SELECT plugin::text, database::text, wal_status, active,
                    (pg_catalog.pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[slot],
        )
        .await
        .map_err(|e| sql_error("reading pg_replication_slots", &e))?;
    results.extend(check_capacity(&Capacity {
        max_slots: row.get(0),
        used_slots: row.get(1),
        max_senders: row.get(2),
        used_senders: row.get(3),
        has_our_slot: slot_row.is_some(),
        our_slot_active: slot_row.as_ref().is_some_and(|r| r.get::<_, bool>(3)),
    }));

    let role = query_one(
        leader,
        "SELECT current_user::text, rolsuper, rolreplication
         FROM pg_catalog.pg_roles WHERE rolname = current_user",
        &[],
    )
    .await?;
    let role = RoleFacts {
        name: role.get(0),
        is_superuser: role.get(1),
        can_replicate: role.get(2),
    };
    results.push(check_role(&role));

    let facts = PublicationFacts::read(leader, publication)
        .await
        .map_err(|e| sql_error("reading pg_publication", &e))?;
    results.push(check_publication(publication, facts.as_ref()));

    let ident = leader
        .query_opt(
            "SELECT relreplident::text FROM pg_catalog.pg_class
             WHERE oid = pg_catalog.to_regclass('public.policy_log')",
            &[],
        )
        .await
        .map_err(|e| sql_error("reading policy_log's replica identity", &e))?
        .map(|r| r.get::<_, String>(0));
    results.push(check_policy_log_identity(ident.as_deref()));

    let tables: Vec<String> = CONJUR_TABLES.iter().map(|t| (*t).to_owned()).collect();
    let unreadable: Vec<String> = leader
        .query(
            "SELECT t FROM unnest($1::text[]) AS t
             WHERE pg_catalog.to_regclass('public.' || quote_ident(t)) IS NOT NULL
               AND NOT has_table_privilege(('public.' || quote_ident(t))::regclass, 'SELECT')
             ORDER BY t",
            &[&tables],
        )
        .await
        .map_err(|e| sql_error("reading table privileges", &e))?
        .iter()
        .map(|r| format!("public.{}", r.get::<_, String>(0)))
        .collect();
    results.push(check_table_privileges(&role.name, &unreadable));

    let slot_facts = slot_row.map(|r| SlotFacts {
        plugin: r.get(0),
        database: r.get(1),
        wal_status: r.get(2),
        lag_bytes: r.get(4),
    });
    results.extend(check_slot(
        slot,
        &database,
        slot_facts.as_ref(),
        config.max_lag_bytes,
    ));

    for follower in &config.followers {
        let Some(set) = &follower.replica_set else {
            continue;
        };
        let name = format!("leader: data group of {}", follower.name);
        let found = leader
            .query_opt(
                "SELECT 1 FROM public.roles WHERE role_id = $1",
                &[&set.data_group],
            )
            .await;
        results.push(match found {
            Ok(Some(_)) => CheckResult::pass(name, format!("role {} exists", set.data_group)),
            Ok(None) => CheckResult::fail(
                name,
                format!(
                    "role {} is not in public.roles: load the replication-set policy {} on the \
                     leader (or fix replica_set/account)",
                    set.data_group, set.name
                ),
            ),
            Err(e) => CheckResult::fail(name, sql_error("reading public.roles", &e)),
        });
    }
    Ok(())
}

async fn check_replication_connection(config: &Config) -> CheckResult {
    const NAME: &str = "leader: replication connection";
    let mut source = SourceConfig::new(config.leader.pg.clone());
    source.application_name = format!("pgsieve-check-{}", config.leader.slot);
    let mut conn = match ReplicationConnection::connect(&source).await {
        Ok(conn) => conn,
        Err(e) => {
            return CheckResult::fail(
                NAME,
                format!("cannot open a replication=database session: {e}"),
            );
        }
    };
    match conn.identify_system().await {
        Ok(id) => CheckResult::pass(
            NAME,
            format!(
                "IDENTIFY_SYSTEM: system {}, timeline {}, database {}{}",
                id.system_id,
                id.timeline,
                id.dbname.as_deref().unwrap_or("(none)"),
                if conn.is_tls() { ", TLS" } else { "" }
            ),
        ),
        Err(e) => CheckResult::fail(NAME, format!("IDENTIFY_SYSTEM failed: {e}")),
    }
}

/// The publication's tables in schema `public`, `None` when it does not exist.
async fn published_tables(
    leader: &Client,
    publication: &str,
) -> Result<Option<Vec<String>>, String> {
    let exists = leader
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| sql_error("reading pg_publication", &e))?;
    if exists.is_none() {
        return Ok(None);
    }
    let rows = leader
        .query(
            "SELECT tablename::text FROM pg_catalog.pg_publication_tables
             WHERE pubname = $1 AND schemaname = 'public' ORDER BY tablename",
            &[&publication],
        )
        .await
        .map_err(|e| sql_error("reading pg_publication_tables", &e))?;
    Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
}

/// Columns of `tables` (schema `public`) with their `format_type` types.
async fn table_columns(client: &Client, tables: &[String]) -> Result<TableColumns, String> {
    let rows = client
        .query(
            "SELECT c.relname::text, a.attname::text,
                    pg_catalog.format_type(a.atttypid, a.atttypmod)
             FROM pg_catalog.pg_attribute a
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relname = ANY($1::text[])
               AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY c.relname, a.attnum",
            &[&tables],
        )
        .await
        .map_err(|e| sql_error("reading pg_attribute", &e))?;
    let mut columns = TableColumns::new();
    for row in rows {
        columns
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2)));
    }
    Ok(columns)
}

async fn check_follower(
    config: &Config,
    follower: &FollowerConfig,
    leader_columns: Option<&(Vec<String>, TableColumns)>,
    results: &mut Vec<CheckResult>,
) {
    let prefix = format!("follower {}", follower.name);
    let client = match connect(&follower.pg, &prefix).await {
        Ok((client, tls)) => {
            results.push(CheckResult::pass(
                format!("{prefix}: connection"),
                format!("connected as {}", user_of(&follower.pg, tls.as_ref())),
            ));
            client
        }
        Err(e) => {
            results.push(CheckResult::fail(format!("{prefix}: connection"), e));
            return;
        }
    };
    if let Some((tables, leader)) = leader_columns {
        results.push(match table_columns(&client, tables).await {
            Ok(theirs) => compare_schemas(&follower.name, tables, leader, &theirs),
            Err(e) => CheckResult::fail(format!("{prefix}: schema"), e),
        });
    }
    results.push(probe_apply_session(&follower.name, &client).await);
    let origin = config.origin_name();
    let capacity = async {
        let row = query_one(
            &client,
            "SELECT current_setting('max_replication_slots')::bigint,
                    (SELECT count(*) FROM pg_catalog.pg_replication_origin_status),
                    (SELECT pg_catalog.pg_replication_origin_progress(roname, true)::text
                     FROM pg_catalog.pg_replication_origin WHERE roname = $1)",
            &[&origin],
        )
        .await?;
        Ok::<_, String>(check_origin_capacity(
            &follower.name,
            &origin,
            row.get(0),
            row.get(1),
            row.get::<_, Option<String>>(2).as_deref(),
        ))
    };
    results.push(match capacity.await {
        Ok(result) => result,
        Err(e) => CheckResult::fail(format!("{prefix}: replication origin"), e),
    });
}

/// Tries what every apply session does, in a transaction that is rolled back:
/// `session_replication_role = replica` and the replication-origin functions.
async fn probe_apply_session(follower: &str, client: &Client) -> CheckResult {
    let name = format!("follower {follower}: apply privileges");
    let steps: [(&str, String); 3] = [
        ("BEGIN", "BEGIN".to_owned()),
        (
            "SET session_replication_role = replica",
            "SET LOCAL session_replication_role = replica".to_owned(),
        ),
        (
            "the replication origin functions",
            format!(
                "SELECT pg_catalog.pg_replication_origin_create('{PROBE_ORIGIN}'),
                        pg_catalog.pg_replication_origin_progress('{PROBE_ORIGIN}', false)"
            ),
        ),
    ];
    let mut outcome = CheckResult::pass(
        name.clone(),
        "session_replication_role = replica and the replication origin functions are permitted",
    );
    for (what, sql) in &steps {
        if let Err(e) = client.batch_execute(sql).await {
            outcome = CheckResult::fail(
                name.clone(),
                format!(
                    "{what} is not permitted: {} (pgsieve's follower role must be a superuser \
                     or be granted these)",
                    db_message(&e)
                ),
            );
            break;
        }
    }
    if let Err(e) = client.batch_execute("ROLLBACK").await {
        return CheckResult::fail(name, format!("ROLLBACK failed: {}", db_message(&e)));
    }
    outcome
}

/// An ordinary SQL session for a one-shot command (`check`, `status`): bounded by
/// [`CONNECT_TIMEOUT`], failures as one precise sentence.
pub(crate) async fn connect(
    pg: &crate::conn::ConnConfig,
    what: &str,
) -> Result<(Arc<Client>, Option<crate::conn::TlsInfo>), String> {
    let mut pg = pg.clone();
    if pg.params.connect_timeout.is_none() {
        pg.params.connect_timeout = Some(CONNECT_TIMEOUT);
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, crate::conn::connect_client(&pg, what)).await {
        Ok(Ok((client, tls))) => Ok((Arc::new(client), tls)),
        Ok(Err(e)) => Err(match e.pg_error() {
            Some(source) => format!("cannot connect to {what}: {}", db_message(source)),
            None => format!("cannot connect to {what}: {}", e.source),
        }),
        Err(_) => Err(format!(
            "cannot connect to {what}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// `role, TLS verified (sslmode=…)`: who pgsieve is and how the session
/// is protected, as negotiated.
fn user_of(pg: &crate::conn::ConnConfig, tls: Option<&crate::conn::TlsInfo>) -> String {
    let tls = match tls {
        Some(t) if t.verified => "TLS verified",
        Some(_) => "TLS, certificate not verified",
        None => "no TLS",
    };
    format!("{}, {tls} (sslmode={})", pg.user(), pg.tls.mode.as_str())
}

async fn query_one(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row, String> {
    client.query_one(sql, params).await.map_err(|e| {
        sql_error(
            sql.split_whitespace().take(4).collect::<Vec<_>>().join(" "),
            &e,
        )
    })
}

fn sql_error(what: impl std::fmt::Display, e: &tokio_postgres::Error) -> String {
    format!("{what}: {}", db_message(e))
}

/// The server's message and SQLSTATE when there is one, else the client error
/// (whose text already includes its cause, e.g. why a connection was refused).
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
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
