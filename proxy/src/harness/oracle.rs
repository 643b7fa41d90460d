/*!
The filter's oracle: which resources (variables and every other kind but `public_key`:
Conjur stores secrets on any resource) are in a replica set, computed from scratch on the
leader with one SQL query (a recursive CTE and two lookups), independent of the
`filters` crate and of the schema's own authorization functions. Tests compare what a
follower holds with this.

Rule (README.md, first section; ARCHITECTURE.md, "Trust model"): the closure of data group G is G plus every role
reachable by following `role_memberships` from `member_id` to `role_id` (ownership rows
included). Variable V is in the set when its owner is in the closure, or a role in the
closure holds `execute` on V ([`OracleRule::Execute`]) or any privilege on V
([`OracleRule::Any`], the seed's `is_resource_visible` rule).
*/

use std::collections::BTreeSet;

use tokio_postgres::GenericClient;

use super::error::{HarnessError, PgContext};

/// Which permissions put a variable in a set (besides ownership).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OracleRule {
    /// Only `execute` (Conjur's rule for fetching a secret; pgsieve's default).
    Execute,
    /// Any privilege (`is_resource_visible`; `privilege = "any"`).
    Any,
}

const QUERY: &str = "
WITH RECURSIVE closure(role_id) AS (
    SELECT $1::text
  UNION
    SELECT m.role_id
    FROM role_memberships m
    JOIN closure c ON m.member_id = c.role_id
)
SELECT r.resource_id
FROM resources r
WHERE split_part(r.resource_id, ':', 2) <> 'public_key'
  AND ($3::bool OR split_part(r.resource_id, ':', 2) = 'variable')
  AND (r.owner_id IN (SELECT role_id FROM closure)
       OR EXISTS (SELECT 1 FROM permissions p
                  WHERE p.resource_id = r.resource_id
                    AND p.role_id IN (SELECT role_id FROM closure)
                    AND ($2::bool OR p.privilege = 'execute')))
";

/// The ids of the variables in the set of `data_group` under `rule`, as of the
/// client's snapshot.
pub async fn variables_in_set(
    client: &impl GenericClient,
    data_group: &str,
    rule: OracleRule,
) -> Result<BTreeSet<String>, HarnessError> {
    in_set(client, data_group, rule, false).await
}

/// The ids of the resources of every kind but `public_key` in the set of
/// `data_group` under `rule` (what a follower may hold secrets of).
pub async fn resources_in_set(
    client: &impl GenericClient,
    data_group: &str,
    rule: OracleRule,
) -> Result<BTreeSet<String>, HarnessError> {
    in_set(client, data_group, rule, true).await
}

async fn in_set(
    client: &impl GenericClient,
    data_group: &str,
    rule: OracleRule,
    every_kind: bool,
) -> Result<BTreeSet<String>, HarnessError> {
    let any = rule == OracleRule::Any;
    let rows = client
        .query(QUERY, &[&data_group, &any, &every_kind])
        .await
        .ctx(|| format!("oracle query for {data_group}"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
