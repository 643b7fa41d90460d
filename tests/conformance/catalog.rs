//! The server as oracle for what the stream only names by OID or sends in binary.

use super::*;

/// The server as oracle for what the stream only names by OID or sends in binary,
/// with caches (one query per distinct question).
pub(super) struct Catalog<'a> {
    pub(super) client: &'a Client,
    pub(super) type_names: HashMap<u32, String>,
    pub(super) relations: HashMap<u32, Relation>,
    pub(super) times: HashMap<PgTimestamp, String>,
    /// Distinct binary values (type OID, send format) behind the placeholders.
    pub(super) deferred: Vec<(u32, Vec<u8>)>,
    pub(super) deferred_index: HashMap<(u32, Vec<u8>), usize>,
}

/// Starts the placeholder of a deferred binary value (NUL: no text value has one).
pub(super) const DEFERRED: char = '\0';

/// A parameter passed in binary format as is, whatever its declared type: the
/// server's receive function for that type reads the bytes pgoutput sent.
#[derive(Debug)]
pub(super) struct RawBinary<'a>(&'a [u8]);

impl ToSql for RawBinary<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The text output of binary values of type `oid` (named `ty`), in order: one
/// query with the values as a binary array, or (for array types, which cannot nest)
/// one query per value.
pub(super) async fn output_texts(
    client: &Client,
    ty: &str,
    oid: u32,
    values: &[&[u8]],
) -> Vec<String> {
    if ty.ends_with("[]") {
        let one = client
            .prepare(&format!("SELECT format('%s', $1::{ty})"))
            .await
            .unwrap();
        let mut texts = Vec::with_capacity(values.len());
        for value in values {
            let row = client.query_one(&one, &[&RawBinary(value)]).await;
            texts.push(
                row.unwrap_or_else(|e| panic!("{ty} value rejected: {e}"))
                    .get(0),
            );
        }
        return texts;
    }
    let array = binary_array(oid, values);
    client
        .query(
            &format!(
                "SELECT format('%s', v) FROM unnest($1::{ty}[]) WITH ORDINALITY AS u(v, i)
                 ORDER BY i"
            ),
            &[&RawBinary(&array)],
        )
        .await
        .unwrap_or_else(|e| panic!("{ty} values rejected: {e}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// `values` (send format of type `oid`) as a one-dimensional array in binary
/// (`array_send`) format: dimensions, no NULL bitmap, then length-prefixed elements.
pub(super) fn binary_array(oid: u32, values: &[&[u8]]) -> Vec<u8> {
    let len = |n: usize| i32::try_from(n).unwrap().to_be_bytes();
    let mut out = Vec::new();
    out.extend(1i32.to_be_bytes()); // dimensions
    out.extend(0i32.to_be_bytes()); // has NULLs
    out.extend(oid.to_be_bytes());
    out.extend(len(values.len()));
    out.extend(1i32.to_be_bytes()); // lower bound
    for value in values {
        out.extend(len(value.len()));
        out.extend_from_slice(value);
    }
    out
}

impl<'a> Catalog<'a> {
    pub(super) fn new(client: &'a Client) -> Self {
        Catalog {
            client,
            type_names: HashMap::new(),
            relations: HashMap::new(),
            times: HashMap::new(),
            deferred: Vec::new(),
            deferred_index: HashMap::new(),
        }
    }

    /// `format_type(oid, NULL)`: the type name `test_decoding` prints.
    pub(super) async fn type_name(&mut self, oid: u32) -> String {
        if let Some(name) = self.type_names.get(&oid) {
            return name.clone();
        }
        let name: String = self
            .client
            .query_one("SELECT format_type($1, NULL)", &[&oid])
            .await
            .unwrap()
            .get(0);
        self.type_names.insert(oid, name.clone());
        name
    }

    /// A placeholder for a binary value of type `oid`, printed later in one batch
    /// per type by [`Catalog::resolve_binary`] (one query per value is too slow).
    pub(super) fn defer_binary(&mut self, oid: u32, bytes: &[u8]) -> String {
        let next = self.deferred.len();
        let key = (oid, bytes.to_vec());
        let index = *self.deferred_index.entry(key.clone()).or_insert(next);
        if index == next {
            self.deferred.push(key);
        }
        format!("{DEFERRED}{index}")
    }

    /// Replaces every binary placeholder in `events` by the value as
    /// `test_decoding` prints it: the server reads the bytes with the type's receive
    /// function and prints them with its output function (`format('%s', …)` calls
    /// the output function, unlike a cast to text, which differs for bool or inet).
    pub(super) async fn resolve_binary(&mut self, events: &mut [Event]) {
        let placeholder = |value: &str| -> Option<usize> {
            value.strip_prefix(DEFERRED).map(|i| i.parse().unwrap())
        };
        let mut by_type: HashMap<u32, Vec<usize>> = HashMap::new();
        let used: BTreeSet<usize> = events
            .iter()
            .flat_map(Event::fields)
            .filter_map(|f| placeholder(&f.value))
            .collect();
        for index in used {
            by_type
                .entry(self.deferred[index].0)
                .or_default()
                .push(index);
        }
        let mut printed = HashMap::new();
        for (oid, indexes) in by_type {
            let ty = self.type_name(oid).await;
            let values: Vec<&[u8]> = indexes
                .iter()
                .map(|&i| self.deferred[i].1.as_slice())
                .collect();
            let texts = output_texts(self.client, &ty, oid, &values).await;
            assert_eq!(texts.len(), values.len(), "type {oid}");
            for (index, text) in indexes.into_iter().zip(texts) {
                printed.insert(index, literal(oid, &text));
            }
        }
        for field in events.iter_mut().flat_map(Event::fields_mut) {
            if let Some(index) = placeholder(&field.value) {
                field.value = printed[&index].clone();
            }
        }
    }

    /// A pgoutput timestamp as `test_decoding` prints it (timestamptz output in this
    /// session's time zone, the one `test_decoding` used).
    pub(super) async fn time(&mut self, at: PgTimestamp) -> String {
        if let Some(text) = self.times.get(&at) {
            return text.clone();
        }
        let text: String = self
            .client
            .query_one(
                "SELECT (timestamptz '2000-01-01 00:00:00+00' + $1::int8 * interval '1 microsecond')::text",
                &[&at.0],
            )
            .await
            .unwrap()
            .get(0);
        self.times.insert(at, text.clone());
        text
    }

    /// Asserts that a Relation message says what the catalog says: schema, name,
    /// replica identity, and per column name, type OID, typmod and key flag (every
    /// column for FULL, else the primary key or replica identity index).
    pub(super) async fn check_relation(&mut self, relation: &Relation) {
        if !self.relations.contains_key(&relation.oid) {
            let expected = self.catalog_relation(relation.oid).await;
            self.relations.insert(relation.oid, expected);
        }
        let expected = Relation {
            xid: relation.xid,
            ..self.relations[&relation.oid].clone()
        };
        assert_eq!(relation, &expected, "Relation message vs catalog");
    }

    pub(super) async fn catalog_relation(&self, oid: u32) -> Relation {
        let row = self
            .client
            .query_one(
                "SELECT n.nspname::text, c.relname::text, c.relreplident::text
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
                &[&oid],
            )
            .await
            .unwrap();
        let identity: &str = row.get(2);
        let columns = self
            .client
            .query(
                "SELECT a.attname::text, a.atttypid, a.atttypmod,
                        c.relreplident = 'f' OR EXISTS (
                          SELECT 1 FROM pg_index i
                          WHERE i.indrelid = c.oid AND a.attnum = ANY (i.indkey)
                            AND CASE c.relreplident WHEN 'd' THEN i.indisprimary
                                                    WHEN 'i' THEN i.indisreplident
                                                    ELSE false END)
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attgenerated = ''
                 ORDER BY a.attnum",
                &[&oid],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| RelationColumn {
                name: r.get(0),
                type_oid: r.get(1),
                type_modifier: r.get(2),
                is_key: r.get(3),
            })
            .collect();
        Relation {
            xid: None,
            oid,
            namespace: row.get(0),
            name: row.get(1),
            replica_identity: ReplicaIdentity::from_byte(identity.as_bytes()[0]).unwrap(),
            columns,
        }
    }

    /// Asserts that a Type message names the type the catalog has under its OID.
    pub(super) async fn check_type(&mut self, ty: &TypeMessage) {
        let row = self
            .client
            .query_one(
                "SELECT n.nspname::text, t.typname::text
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = $1",
                &[&ty.oid],
            )
            .await
            .unwrap();
        let expected: (String, String) = (row.get(0), row.get(1));
        assert_eq!(
            (ty.namespace.clone(), ty.name.clone()),
            expected,
            "Type message {ty:?} vs catalog"
        );
    }
}
