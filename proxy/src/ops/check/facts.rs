//! The reading half of each check: connections and catalog queries on the
//! leader and the followers, each turned into results by `rules`.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::config::{Config, FollowerConfig};
use crate::conjur::CONJUR_TABLES;
use crate::conjur::PublicationFacts;
use crate::source::{ReplicationConnection, SourceConfig};

use super::rules::*;
use super::{CONNECT_TIMEOUT, CheckResult, PROBE_ORIGIN};

/// Runs the leader checks; returns the leader's columns of the published tables (for
/// the follower schema comparison) when the leader could be read.
pub(super) async fn check_leader(
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

/// The leader's settings, capacity, role, publication, slot and data groups, each
/// turned into results by `rules`; an error is a query that could not run.
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

    let role = role_facts(leader).await?;
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

    let unreadable = unreadable_tables(leader).await?;
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

    check_data_groups(config, leader, results).await;
    Ok(())
}

/// The connected role and its attributes.
async fn role_facts(leader: &Client) -> Result<RoleFacts, String> {
    let role = query_one(
        leader,
        "SELECT current_user::text, rolsuper, rolreplication
         FROM pg_catalog.pg_roles WHERE rolname = current_user",
        &[],
    )
    .await?;
    Ok(RoleFacts {
        name: role.get(0),
        is_superuser: role.get(1),
        can_replicate: role.get(2),
    })
}

/// Conjur's tables that exist on the leader but the role cannot SELECT (the
/// initial copy and the diff read them all).
async fn unreadable_tables(leader: &Client) -> Result<Vec<String>, String> {
    let tables: Vec<String> = CONJUR_TABLES.iter().map(|t| (*t).to_owned()).collect();
    Ok(leader
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
        .collect())
}

/// One result per filtered follower: its replica set's data group must be a role on
/// the leader, else the follower would receive no secrets at all.
async fn check_data_groups(config: &Config, leader: &Client, results: &mut Vec<CheckResult>) {
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

pub(super) async fn check_follower(
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
