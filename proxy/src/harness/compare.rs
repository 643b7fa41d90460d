/*!
Compares a follower with the leader: tables dumped as ordered row text, and the
`secrets` rows a follower of a replica set should hold (the leader's rows filtered by
the [`super::oracle`]). Tests assert with these instead of writing their own queries.
*/

use std::collections::BTreeSet;

use tokio_postgres::GenericClient;

use super::error::{HarnessError, PgContext};
use super::oracle::{OracleRule, resources_in_set};

/// Every row of `public.<table>` as its text form (`(a,b,…)`), sorted by that text.
pub async fn dump_table(
    client: &impl GenericClient,
    table: &str,
) -> Result<Vec<String>, HarnessError> {
    let sql = format!(
        "SELECT t::text FROM public.\"{}\" t ORDER BY 1",
        table.replace('"', "\"\"")
    );
    let rows = client
        .query(sql.as_str(), &[])
        .await
        .ctx(|| format!("dumping {table}"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The `secrets` rows (text form, sorted) a follower of `data_group` should hold, read
/// from the leader: rows of resources in the set (any kind), rows of public keys (public
/// in Conjur's API) and rows whose resource id matches one of the `always` patterns (`*` matches any
/// run of characters).
pub async fn expected_secrets(
    leader: &impl GenericClient,
    data_group: &str,
    rule: OracleRule,
    always: &[&str],
) -> Result<Vec<String>, HarnessError> {
    let in_set = resources_in_set(leader, data_group, rule).await?;
    let rows = leader
        .query(
            "SELECT s::text, s.resource_id FROM public.secrets s ORDER BY 1",
            &[],
        )
        .await
        .ctx(|| "reading the leader's secrets".to_string())?;
    Ok(rows
        .iter()
        .filter(|r| {
            let id: &str = r.get(1);
            is_public_key(id) || in_set.contains(id) || always.iter().any(|p| glob_match(p, id))
        })
        .map(|r| r.get(0))
        .collect())
}

/// Tables whose rows differ between leader and follower, with a short description of
/// the first differences; empty when equal. `secrets` is compared with
/// [`expected_secrets`], every other table in `tables` exactly.
pub async fn follower_diff(
    leader: &impl GenericClient,
    follower: &impl GenericClient,
    tables: &[&str],
    data_group: &str,
    rule: OracleRule,
    always: &[&str],
) -> Result<Vec<String>, HarnessError> {
    let mut diffs = Vec::new();
    for table in tables {
        let want = if *table == "secrets" {
            expected_secrets(leader, data_group, rule, always).await?
        } else {
            dump_table(leader, table).await?
        };
        let got = dump_table(follower, table).await?;
        if want != got {
            diffs.push(describe_diff(table, &want, &got));
        }
    }
    Ok(diffs)
}

/// "table: N missing, M extra; e.g. missing (…), extra (…)".
fn describe_diff(table: &str, want: &[String], got: &[String]) -> String {
    let want_set: BTreeSet<&String> = want.iter().collect();
    let got_set: BTreeSet<&String> = got.iter().collect();
    let missing: Vec<&&String> = want_set.difference(&got_set).collect();
    let extra: Vec<&&String> = got_set.difference(&want_set).collect();
    let sample = |v: &[&&String]| {
        v.iter()
            .take(3)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{table}: {} missing, {} extra; missing e.g. {}; extra e.g. {}",
        missing.len(),
        extra.len(),
        sample(&missing),
        sample(&extra)
    )
}

fn is_public_key(id: &str) -> bool {
    id.split(':').nth(1) == Some("public_key")
}

/// Whether `text` matches `pattern`, where `*` matches any (possibly empty) run of
/// characters and everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return text.is_empty(),
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty(); // no '*' at all
    };
    for part in middle {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob_match(
            "*:variable:conjur/shared/*",
            "acme:variable:conjur/shared/x"
        ));
        assert!(!glob_match(
            "*:variable:conjur/shared/*",
            "acme:variable:conjur/other/x"
        ));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(
            !glob_match("ab*ba", "aba"),
            "prefix and suffix must not overlap"
        );
        assert!(glob_match("*", ""));
    }
}
