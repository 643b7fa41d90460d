/*!
The bench's workloads, as Conjur writes them, and their sizes: W1 single-row
secret rotations, W2 one big secrets transaction, W3 grant/revoke latency on a
leader with many secrets, W4 one big policy load. Each runs with every
variable in the follower's replica set (`all`) and with half of them (`half`).

Layout of every case: account `acme` with two top policies, `shared` and
`private`, each holding apps × variables ([`PolicySpec`]); the replica set's
data group is a member of `acme:policy:shared` (and of `acme:policy:private`
for `all`), which owns the app policies that own the variables, so the set is
exactly the variables under one or both prefixes. That is also what native
replication's row filter can express: `resource_id LIKE 'acme:variable:shared/%'`.
A sentinel variable under `shared/` ends every workload with a new version.
*/

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio_postgres::{Client, GenericClient};

use crate::harness::HarnessError;
use crate::harness::conjur::{ReplicaSet, id};
use crate::harness::error::PgContext;
use crate::harness::generate::PolicySpec;
use crate::harness::workload::{self, Change, PolicyLoad};

/// Account of everything a bench case writes.
pub const ACCOUNT: &str = "acme";
/// Top policy whose variables are in the set in both filter modes.
pub const SHARED: &str = "shared";
/// Top policy whose variables are in the set only in mode `all`.
pub const PRIVATE: &str = "private";
/// The replica set's short name.
pub const SET_NAME: &str = "bench";

/// One of the four workloads (README.md, "Bench").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
pub enum Workload {
    /// Single-row secret rotations, one transaction each.
    W1,
    /// One transaction inserting many secret versions.
    W2,
    /// Grant and revoke latency of one variable on a leader with many secrets.
    W3,
    /// One big policy load (roles, resources, permissions, annotations).
    W4,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 4] = [Workload::W1, Workload::W2, Workload::W3, Workload::W4];

    /// What it is, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Workload::W1 => "single-row secret rotations (one transaction each)",
            Workload::W2 => "one transaction of secret versions",
            Workload::W3 => "grant/revoke latency of one variable",
            Workload::W4 => "one policy load",
        }
    }

    /// The unit its rate is counted in.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::W1 => "txn/s",
            _ => "rows/s",
        }
    }
}

/// The definition of `secrets` a case runs on (leader and followers alike).
///
/// Conjur's table has three indexes, one over SQL functions PostgreSQL cannot
/// inline: its per-row cost on a follower is several times a plain table's, and
/// it would hide an apply path's own cost. The plain table has only its
/// primary key, and the workloads write 8-byte values into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
pub enum Schema {
    /// `secrets(resource_id text, version int, value bytea, PRIMARY KEY
    /// (resource_id, version))`, no other index (the leader keeps Conjur's
    /// version-numbering trigger; followers apply as `replica`, so it never
    /// fires there).
    Plain,
    /// Conjur's own `secrets`.
    Conjur,
}

impl Schema {
    /// `plain` / `conjur`.
    pub fn name(self) -> &'static str {
        match self {
            Schema::Plain => "plain",
            Schema::Conjur => "conjur",
        }
    }

    /// The schemas a workload runs on: W1 and W2 on both (plain first), the
    /// others on Conjur's only.
    pub fn for_workload(workload: Workload) -> &'static [Schema] {
        match workload {
            Workload::W1 | Workload::W2 => &[Schema::Plain, Schema::Conjur],
            Workload::W3 | Workload::W4 => &[Schema::Conjur],
        }
    }

    /// The value each workload row carries (SQL expression): 8 bytes on the
    /// plain table, a 61-byte Conjur-like ciphertext otherwise.
    fn value_sql(self) -> &'static str {
        match self {
            Schema::Plain => "'\\x0102030405060708'::bytea",
            Schema::Conjur => VALUE_SQL,
        }
    }
}

/// Replaces Conjur's `secrets` (just loaded with the schema, still empty) by
/// the plain table. Run before the publication exists (it lists the table).
/// `leader`: keep the version-numbering trigger, which the workloads rely on.
pub async fn use_plain_secrets(c: &impl GenericClient, leader: bool) -> Result<(), HarnessError> {
    let trigger = if leader {
        "CREATE TRIGGER secrets_version BEFORE INSERT ON secrets \
         FOR EACH ROW EXECUTE FUNCTION secrets_next_version();"
    } else {
        ""
    };
    c.batch_execute(&format!(
        "DROP TABLE secrets CASCADE;
         CREATE TABLE secrets (resource_id text NOT NULL, version integer NOT NULL, \
           value bytea NOT NULL, PRIMARY KEY (resource_id, version));
         {trigger}
         GRANT SELECT ON secrets TO {role};",
        role = crate::harness::cluster::REPLICATOR_ROLE
    ))
    .await
    .ctx(|| "replacing secrets by the plain table".into())
}

/// Which share of the variables the follower's replica set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
pub enum Filter {
    /// Every variable is in the set: every secrets row passes.
    All,
    /// Half the variables are in the set: half the secrets rows pass.
    Half,
}

impl Filter {
    /// `all` / `half`.
    pub fn name(self) -> &'static str {
        match self {
            Filter::All => "all",
            Filter::Half => "half",
        }
    }
}

/// Sizes of one bench run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// W1: single-row transactions.
    pub w1_transactions: u64,
    /// W2: rows of the one transaction.
    pub w2_rows: u64,
    /// W3: secrets on the leader (variables × 20 versions).
    pub w3_secrets: u64,
    /// W3: grant/revoke rounds.
    pub w3_rounds: usize,
    /// W4: rows the policy load writes directly (triggers add more).
    pub w4_rows: u64,
    /// Fan-out: single-row transactions of the backlog each follower count replays.
    pub fanout_transactions: u64,
}

impl Sizes {
    /// The full sizes (README.md, "Bench").
    pub fn full() -> Sizes {
        Sizes {
            w1_transactions: 200_000,
            w2_rows: 1_000_000,
            w3_secrets: 1_000_000,
            w3_rounds: 20,
            w4_rows: 100_000,
            fanout_transactions: 50_000,
        }
    }

    /// These sizes with W1, W2 and W4 replaced by `PGSIEVE_BENCH_W1_TRANSACTIONS`,
    /// `PGSIEVE_BENCH_W2_ROWS` and `PGSIEVE_BENCH_W4_ROWS` where set: a peer that
    /// is orders of magnitude slower (pglogical's row filter on W2) can make a
    /// full run take hours. Returns the sizes and one line per override.
    pub fn with_env_overrides(self) -> Result<(Sizes, Vec<String>), String> {
        let mut sizes = self;
        let mut changed = Vec::new();
        for (var, field) in [
            ("PGSIEVE_BENCH_W1_TRANSACTIONS", &mut sizes.w1_transactions),
            ("PGSIEVE_BENCH_W2_ROWS", &mut sizes.w2_rows),
            ("PGSIEVE_BENCH_W4_ROWS", &mut sizes.w4_rows),
        ] {
            let Ok(value) = std::env::var(var) else {
                continue;
            };
            let n: u64 = value
                .trim()
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{var}={value}: want a positive number"))?;
            changed.push(format!("{var}={n} (instead of {})", *field));
            *field = n;
        }
        Ok((sizes, changed))
    }

    /// `--quick`: a tenth, for CI.
    pub fn quick() -> Sizes {
        Sizes {
            w1_transactions: 20_000,
            w2_rows: 100_000,
            w3_secrets: 100_000,
            w3_rounds: 10,
            w4_rows: 10_000,
            fanout_transactions: 5_000,
        }
    }
}

/// Secret versions per variable in W3 (Conjur keeps 20).
const W3_VERSIONS: usize = 20;
/// Apps per top policy in W1/W2.
const SMALL_APPS: usize = 10;
/// Variables per app in W1/W2 (1000 variables in all).
const SMALL_VARS: usize = 50;

/// The replica set every case uses.
pub fn replica_set() -> ReplicaSet {
    ReplicaSet::new(SET_NAME)
}

/// The sentinel variable: under `shared/`, so every engine forwards it.
pub fn sentinel() -> String {
    id(ACCOUNT, "variable", &format!("{SHARED}/bench-sentinel"))
}

/// The `LIKE` pattern of the variables in the set (native's row filter), or
/// `None` for `all`.
pub fn native_filter(filter: Filter) -> Option<String> {
    match filter {
        Filter::All => None,
        Filter::Half => Some(format!("{ACCOUNT}:variable:{SHARED}/%")),
    }
}

/// The two policy specs of a case: (`shared`, `private`).
pub fn specs(workload: Workload, sizes: &Sizes) -> (PolicySpec, PolicySpec) {
    let (apps, vars, versions) = match workload {
        Workload::W1 | Workload::W2 => (SMALL_APPS, SMALL_VARS, 1),
        Workload::W3 => {
            // Two policies × apps × vars × 20 versions = w3_secrets.
            let per_policy = (sizes.w3_secrets / 2 / W3_VERSIONS as u64).max(1) as usize;
            let apps = (per_policy / 500).max(1);
            (apps, per_policy.div_ceil(apps), W3_VERSIONS)
        }
        Workload::W4 => {
            // A variable writes ~4 rows (resource, read, execute, annotation).
            let per_policy = (sizes.w4_rows / 2 / 4).max(1) as usize;
            let apps = (per_policy / 500).max(1);
            (apps, per_policy.div_ceil(apps), 0)
        }
    };
    let spec = |base: &str, seed: u64| {
        PolicySpec::new(ACCOUNT, apps, vars, versions)
            .with_base(base)
            .with_seed(seed)
    };
    (spec(SHARED, 11), spec(PRIVATE, 12))
}

/// Prepares a leader that already has the Conjur schema: the replica set, the two
/// top policies, the data group's grants for `filter`, the sentinel (version 1),
/// and for W1–W3 the policies' bodies and secrets. W4's bodies are the workload.
pub async fn populate(
    leader: &mut Client,
    workload: Workload,
    filter: Filter,
    sizes: &Sizes,
) -> Result<(), HarnessError> {
    let set = replica_set();
    workload::create_replica_set(leader, &set).await?;
    workload::create_account(leader, ACCOUNT).await?;
    let (shared, private) = specs(workload, sizes);
    for spec in [&shared, &private] {
        let [top, body] = spec.loads();
        workload::load_policy(leader, &top).await?;
        if workload != Workload::W4 {
            workload::load_policy(leader, &body).await?;
            workload::add_secret_versions(
                &*leader,
                &spec.variables(),
                spec.versions,
                spec.value_len,
                spec.seed,
            )
            .await?;
        }
    }
    let mut grants = vec![Change::GrantRole {
        role: shared.base_policy(),
        member: set.data_group(),
    }];
    if filter == Filter::All {
        grants.push(Change::GrantRole {
            role: private.base_policy(),
            member: set.data_group(),
        });
    }
    workload::apply_changes(&*leader, None, &grants).await?;
    let shared_policy = shared.base_policy();
    leader
        .execute(
            "INSERT INTO resources (resource_id, owner_id, policy_id) VALUES ($1, $2, $2)",
            &[&sentinel(), &shared_policy],
        )
        .await
        .ctx(|| "creating the sentinel variable".into())?;
    bump_sentinel(leader).await?;
    leader
        .batch_execute("ANALYZE")
        .await
        .ctx(|| "analyzing the leader".into())?;
    Ok(())
}

/// Adds a version to the sentinel (the trigger numbers it); returns the version.
/// Names only the columns both schemas have.
pub async fn bump_sentinel(leader: &impl GenericClient) -> Result<i32, HarnessError> {
    let row = leader
        .query_one(
            "INSERT INTO secrets (resource_id, value) VALUES ($1, $2) RETURNING version",
            &[&sentinel(), &&b"sentinel"[..]],
        )
        .await
        .ctx(|| "adding a sentinel version".into())?;
    Ok(row.get(0))
}

/// A fixed 61-byte value shaped like a Conjur ciphertext (SQL expression).
const VALUE_SQL: &str = "decode(repeat('47', 61), 'hex')";

/// The variables a W1/W2 workload writes (every variable but the sentinel).
fn variables_sql() -> String {
    format!(
        "SELECT resource_id FROM resources WHERE resource_id LIKE '{ACCOUNT}:variable:%' \
         AND resource_id <> '{}' ORDER BY resource_id",
        sentinel()
    )
}

/// Writes the workload's rows on the leader (W1, W2, W4; W3 is driven
/// separately). Returns the number of rows (W1: transactions) written.
pub async fn write(
    leader: &mut Client,
    workload: Workload,
    schema: Schema,
    sizes: &Sizes,
) -> Result<u64, HarnessError> {
    let value_sql = schema.value_sql();
    match workload {
        Workload::W1 => {
            let n = sizes.w1_transactions;
            let sql = format!(
                "DO $bench$ DECLARE
                   vars text[] := ARRAY({vars});
                   nv int := cardinality(vars);
                   val bytea := {value_sql};
                 BEGIN
                   FOR i IN 1..{n} LOOP
                     INSERT INTO secrets (resource_id, value) VALUES (vars[1 + i % nv], val);
                     COMMIT;
                   END LOOP;
                 END $bench$",
                vars = variables_sql()
            );
            leader
                .batch_execute(&sql)
                .await
                .ctx(|| "writing W1".into())?;
            Ok(n)
        }
        Workload::W2 => {
            let n = sizes.w2_rows;
            let sql = format!(
                "WITH v AS (SELECT array_agg(resource_id) AS a FROM ({vars}) s)
                 INSERT INTO secrets (resource_id, value)
                 SELECT v.a[1 + i % cardinality(v.a)], {value_sql} FROM v, generate_series(1, {n}) i",
                vars = variables_sql()
            );
            leader
                .batch_execute(&sql)
                .await
                .ctx(|| "writing W2".into())?;
            Ok(n)
        }
        Workload::W3 => Ok(0),
        Workload::W4 => {
            let before = table_rows(leader).await?;
            let (shared, private) = specs(workload, sizes);
            let mut load =
                PolicyLoad::new(id(ACCOUNT, "policy", "root"), id(ACCOUNT, "user", "admin"));
            load.text = "# bench W4: shared and private bodies".into();
            for spec in [&shared, &private] {
                let [_, body] = spec.loads();
                load.roles.extend(body.roles);
                load.memberships.extend(body.memberships);
                load.resources.extend(body.resources);
                load.permissions.extend(body.permissions);
                load.annotations.extend(body.annotations);
            }
            workload::load_policy(leader, &load).await?;
            let after = table_rows(leader).await?;
            Ok(after
                .values()
                .sum::<i64>()
                .saturating_sub(before.values().sum()) as u64)
        }
    }
}

/// `count(*)` of every table pgsieve publishes.
pub async fn table_rows(c: &impl GenericClient) -> Result<BTreeMap<String, i64>, HarnessError> {
    let mut out = BTreeMap::new();
    for table in crate::conjur::CONJUR_TABLES {
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .ctx(|| format!("counting {table}"))?
            .get(0);
        out.insert((*table).to_owned(), n);
    }
    Ok(out)
}

/// Secret rows per variable.
pub async fn secrets_per_variable(
    c: &impl GenericClient,
) -> Result<BTreeMap<String, i64>, HarnessError> {
    let rows = c
        .query("SELECT resource_id, count(*) FROM secrets GROUP BY 1", &[])
        .await
        .ctx(|| "counting secrets per variable".into())?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// What a follower should hold, read once from the leader after the workload.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Secret rows per variable in the set.
    pub secrets: BTreeMap<String, i64>,
    /// Rows of every other published table.
    pub tables: BTreeMap<String, i64>,
}

impl Expected {
    /// Reads the leader: the oracle's set (`execute` rule), its secrets, the
    /// other tables' counts.
    pub async fn read(leader: &Client) -> Result<Expected, HarnessError> {
        let in_set: BTreeSet<String> = crate::harness::oracle::variables_in_set(
            leader,
            &replica_set().data_group(),
            crate::harness::OracleRule::Execute,
        )
        .await?;
        let secrets = secrets_per_variable(leader)
            .await?
            .into_iter()
            .filter(|(v, _)| in_set.contains(v))
            .collect();
        let mut tables = table_rows(leader).await?;
        tables.remove("secrets");
        Ok(Expected { secrets, tables })
    }

    /// Secret rows a follower should hold.
    pub fn secret_rows(&self) -> i64 {
        self.secrets.values().sum()
    }
}

/// How a follower compares with [`Expected`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivered {
    /// Secret rows on the follower.
    pub secret_rows: i64,
    /// Secret rows of variables outside the set (a leak).
    pub leaked_rows: i64,
    /// Everything that differs, one line each (empty when correct).
    pub problems: Vec<String>,
}

/// Compares a follower with `expected`; tables in `skip` are not compared
/// (pglogical cannot replicate key-less `policy_log`).
pub async fn check_follower(
    follower: &Client,
    expected: &Expected,
    skip: &[&str],
) -> Result<Delivered, HarnessError> {
    let got = secrets_per_variable(follower).await?;
    let mut d = Delivered {
        secret_rows: got.values().sum(),
        ..Delivered::default()
    };
    for (variable, n) in &got {
        match expected.secrets.get(variable) {
            None => {
                d.leaked_rows += n;
                if d.problems.len() < 20 {
                    d.problems
                        .push(format!("secrets of {variable} outside the set: {n} rows"));
                }
            }
            Some(want) if want != n => d
                .problems
                .push(format!("secrets of {variable}: {n} rows, want {want}")),
            Some(_) => {}
        }
    }
    let missing = expected
        .secrets
        .keys()
        .filter(|v| !got.contains_key(*v))
        .count();
    if missing > 0 {
        d.problems
            .push(format!("{missing} variables in the set have no secrets"));
    }
    let tables = table_rows(follower).await?;
    for (table, want) in &expected.tables {
        if skip.contains(&table.as_str()) {
            continue;
        }
        let n = tables.get(table).copied().unwrap_or(0);
        if n != *want {
            d.problems.push(format!("{table}: {n} rows, want {want}"));
        }
    }
    Ok(d)
}
