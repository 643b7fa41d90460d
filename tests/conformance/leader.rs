//! The leader, its slots and the workload that writes every change shape.

use super::*;

/// Starts a leader with the Conjur schema, the publication and the scratch table,
/// creates the four slots back to back, runs [`run_workload`] and returns the cluster
/// (keep it alive) with a superuser connection to the Conjur database.
pub(super) async fn leader_with_workload(name: &str) -> (Cluster, Client) {
    let cluster = ok(Cluster::start(
        ClusterSpec::leader(name)
            .with_conf("logical_decoding_work_mem = 64kB")
            .with_conf("max_prepared_transactions = 4"),
    ));
    let mut client = ok(conjur::prepare_conjur(&cluster).await);
    ok(conjur::prepare_leader(&client, PUBLICATION).await);
    client.batch_execute(SCRATCH_DDL).await.unwrap();
    // Back to back, before any write: every slot sees the same changes.
    for (slot, plugin, two_phase) in [
        (PGOUTPUT_SLOT, "pgoutput", false),
        (PGOUTPUT_2PC_SLOT, "pgoutput", true),
        (TEST_DECODING_SLOT, "test_decoding", false),
        (TEST_DECODING_2PC_SLOT, "test_decoding", true),
    ] {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, $2, false, $3)",
                &[&slot, &plugin, &two_phase],
            )
            .await
            .unwrap();
    }
    run_workload(&mut client).await;
    (cluster, client)
}

/// `s` as an SQL string literal (what `quote_literal` gives for strings without `\`).
pub(super) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Writes what Conjur writes (through the harness) plus the shapes Conjur's API paths
/// do not produce (raw SQL), one transaction at a time from one session.
pub(super) async fn run_workload(client: &mut Client) {
    let mut rng = StdRng::seed_from_u64(0xC0DE);
    // Account, two policy loads (the second one large enough to be streamed: roles,
    // resources, memberships, permissions, annotations, tsvectors, hstore/enum
    // policy_log rows) and 180 bytea secret versions.
    let spec = PolicySpec::new("acme", 3, 30, 2).with_seed(7);
    let pop = ok(spec.populate(client).await);
    let admin = spec.admin();
    let var = |i: usize| pop.variables[i].clone();
    let expires = SystemTime::UNIX_EPOCH + Duration::from_micros(1_900_000_000_123_456);

    // Secret writes as the API does them: bytea with a quote, NUL and high bytes; a
    // rotation with an expiry (timestamp).
    ok(workload::add_secret(client, &var(0), b"it's \x00\xff secret").await);
    ok(workload::rotate_secret(&*client, &var(0), b"rotated", Some(expires)).await);

    // An incompressible secret > 8 kB (TOASTed), then updates of another column of
    // every version: the big value is an unchanged TOAST datum in those updates.
    let big: Vec<u8> = (0..12 * 1024).map(|_| rng.r#gen()).collect();
    ok(workload::add_secret(client, &var(1), &big).await);
    ok(workload::set_expiration(&*client, &var(1), Some(expires)).await);
    ok(workload::set_expiration(&*client, &var(1), None).await);

    // A policy load with a TOASTed policy text (inserted, then stamped at commit) and
    // an annotation with quotes, a newline, a tab and non-ASCII text.
    let app0 = spec.app_policy(0);
    let mut load = PolicyLoad::new(&app0, &admin);
    load.text = (&mut rng)
        .sample_iter(&Alphanumeric)
        .take(12 * 1024)
        .map(char::from)
        .collect();
    load.annotate(
        &var(2),
        "note",
        "it's \"annotated\"\nacross lines,\ttabbed, déjà vu",
        Some(&app0),
    );
    ok(workload::load_policy(client, &load).await);

    // A policy change: deletes (permission, membership), an insert, an owner change
    // and a resource delete that cascades to secrets, annotations and textsearch.
    let changes = [
        Change::Deny {
            role: pop.layers[1].clone(),
            privilege: "read".into(),
            resource: var(31),
        },
        Change::GrantRole {
            role: pop.layers[2].clone(),
            member: pop.hosts[1].clone(),
        },
        Change::RevokeRole {
            role: pop.layers[1].clone(),
            member: pop.hosts[1].clone(),
        },
        Change::SetOwner {
            resource: var(32),
            owner: pop.layers[1].clone(),
        },
        Change::DeleteResource { resource: var(33) },
    ];
    ok(workload::policy_change(client, &spec.app_policy(1), &admin, &changes).await);

    // Key change on a primary-key column: old key in both outputs.
    client
        .execute(
            "UPDATE annotations SET name = 'renamed' WHERE resource_id = $1 AND name = 'description'",
            &[&var(3)],
        )
        .await
        .unwrap();

    // cidr[], bytea, varchar, identity and NULL columns: insert, non-key update, key change.
    let (host0, host2) = (&pop.hosts[0], &pop.hosts[2]);
    client
        .execute(
            "INSERT INTO credentials (role_id, api_key, restricted_to)
             VALUES ($1, $2, '{10.0.0.0/8,192.168.1.0/24}')",
            &[host0, &b"\x01\x02'".as_slice()],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE credentials SET restricted_to = '{127.0.0.1/32}',
             updated_at = '2026-01-02 03:04:05.6' WHERE role_id = $1",
            &[host0],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE credentials SET role_id = $2 WHERE role_id = $1",
            &[host0, host2],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO host_factory_tokens (token_sha256, token, resource_id, cidr, expiration)
             VALUES (repeat('ab', 32), '\\xdeadbeef', $1, '{10.1.0.0/16,192.168.0.1/32}',
                     '2030-01-01 00:00:00')",
            &[&pop.layers[0]],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO authenticator_configs (resource_id, enabled) VALUES ($1, true)",
            &[&var(4)],
        )
        .await
        .unwrap();

    // REPLICA IDENTITY FULL: policy_log (hstore, enums, timestamptz) and the scratch
    // table, whose TOASTed doc is in the old row but unchanged in the new one.
    client
        .batch_execute(
            "UPDATE policy_log SET at = at + interval '1 second'
               WHERE ctid IN (SELECT ctid FROM policy_log WHERE kind = 'annotations' LIMIT 3);
             DELETE FROM policy_log
               WHERE ctid IN (SELECT ctid FROM policy_log WHERE kind = 'permissions' LIMIT 3);
             INSERT INTO conformance_full VALUES
               (1, true, -32768, 9223372036854775807, 0.1, 12345.678, B'1010',
                E'it''s \"quoted\"\\nand multi-line, déjà', repeat(md5('doc'), 400),
                '{a,\"b c\",NULL}', '2026-01-02 03:04:05.678901+00'),
               (2, false, 0, -1, 'NaN', -0.5, B'', '', NULL, '{}', NULL),
               (3, NULL, NULL, NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL);
             UPDATE conformance_full SET flag = NOT flag WHERE id = 1;
             UPDATE conformance_full SET id = 10, note = 'moved' WHERE id = 2;
             DELETE FROM conformance_full WHERE id = 3;",
        )
        .await
        .unwrap();

    // Logical decoding messages: alone in a transaction, non-transactional, and
    // around a change.
    client
        .batch_execute(
            "SELECT pg_logical_emit_message(true, 'pgsieve', 'x');
             SELECT pg_logical_emit_message(false, 'pgsieve', 'not transactional: it''s');
             BEGIN;
             SELECT pg_logical_emit_message(true, 'pgsieve', 'before');
             INSERT INTO conformance_full (id, note) VALUES (4, 'between messages');
             SELECT pg_logical_emit_message(true, 'pgsieve', 'after');
             COMMIT;",
        )
        .await
        .unwrap();

    // Streamed (> 64 kB): a subtransaction rolled back after its changes were
    // streamed, then a whole streamed transaction rolled back.
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO conformance_full (id, note)
               SELECT g, 'kept ' || g FROM generate_series(1000, 1599) g;
             SAVEPOINT doomed;
             INSERT INTO conformance_full (id, note)
               SELECT g, 'rolled back ' || g FROM generate_series(2000, 3999) g;
             ROLLBACK TO SAVEPOINT doomed;
             INSERT INTO conformance_full (id, note)
               SELECT g, 'after the savepoint ' || g FROM generate_series(4000, 4009) g;
             COMMIT;
             BEGIN;
             INSERT INTO conformance_full (id, note)
               SELECT g, 'aborted ' || g FROM generate_series(5000, 6999) g;
             ROLLBACK;",
        )
        .await
        .unwrap();

    // Prepared transactions: one committed (another transaction commits between its
    // PREPARE and its COMMIT PREPARED), one rolled back.
    client
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO secrets (resource_id, value) VALUES ({v5}, '\\xc0ffee');
             UPDATE annotations SET value = 'prepared' WHERE resource_id = {v5};
             PREPARE TRANSACTION {gid};",
            v5 = quote_literal(&var(5)),
            gid = quote_literal(GID_COMMITTED),
        ))
        .await
        .unwrap();
    ok(workload::add_secret(client, &var(6), b"between prepare and commit").await);
    // (COMMIT/ROLLBACK PREPARED cannot share a simple query with other statements.)
    let (gid, gid2) = (quote_literal(GID_COMMITTED), quote_literal(GID_ROLLED_BACK));
    for sql in [
        format!("COMMIT PREPARED {gid}"),
        format!(
            "BEGIN;
             DELETE FROM permissions WHERE resource_id = {};
             PREPARE TRANSACTION {gid2};",
            quote_literal(&var(7))
        ),
        format!("ROLLBACK PREPARED {gid2}"),
    ] {
        client.batch_execute(&sql).await.unwrap();
    }

    // Truncates: two tables with RESTART IDENTITY, one with CASCADE.
    client
        .batch_execute(
            "TRUNCATE host_factory_tokens, authenticator_configs RESTART IDENTITY;
             TRUNCATE credentials CASCADE;",
        )
        .await
        .unwrap();
    // Something after the truncates, so a truncate is not the last thing decoded.
    ok(workload::add_secret(client, &var(8), b"last").await);
}

/// Asserts that the oracle's output holds every shape the workload is meant to
/// produce, so the comparison cannot pass for lack of material.
pub(super) fn assert_workload_covered(events: &[Event], two_phase: bool) {
    let has = |what: &str, f: &dyn Fn(&Event) -> bool| {
        assert!(
            events.iter().any(f),
            "test_decoding output has no {what}: the workload did not produce it"
        );
    };
    let table_is = |t: &str, e: &Event| match e {
        Event::Insert { table, .. } | Event::Update { table, .. } | Event::Delete { table, .. } => {
            table == t
        }
        _ => false,
    };
    let unchanged = |fields: &[Field]| fields.iter().any(|f| f.value == "unchanged-toast-datum");
    has("insert", &|e| matches!(e, Event::Insert { .. }));
    has("update without old key", &|e| {
        matches!(e, Event::Update { old: None, .. })
    });
    for table in ["public.annotations", "public.credentials"] {
        has(&format!("key change on {table}"), &|e| {
            table_is(table, e) && matches!(e, Event::Update { old: Some(_), .. })
        });
    }
    for table in ["public.policy_log", "public.conformance_full"] {
        has(&format!("full-identity update on {table}"), &|e| {
            table_is(table, e) && matches!(e, Event::Update { old: Some(_), .. })
        });
        has(&format!("delete on {table}"), &|e| {
            table_is(table, e) && matches!(e, Event::Delete { .. })
        });
    }
    for table in ["public.secrets", "public.conformance_full"] {
        has(&format!("unchanged TOAST on {table}"), &|e| {
            table_is(table, e) && matches!(e, Event::Update { new, .. } if unchanged(new))
        });
    }
    has(
        "truncate with restart_seqs",
        &|e| matches!(e, Event::Truncate { tables, restart_seqs: true, .. } if tables.len() == 2),
    );
    has("truncate with cascade", &|e| {
        matches!(e, Event::Truncate { cascade: true, .. })
    });
    for transactional in [true, false] {
        has(
            &format!("message (transactional: {transactional})"),
            &|e| matches!(e, Event::Message { transactional: t, .. } if *t == transactional),
        );
    }
    let types: BTreeSet<&str> = events
        .iter()
        .flat_map(Event::fields)
        .map(|f| f.type_name.as_str())
        .collect();
    for ty in [
        "bytea",
        "cidr[]",
        "hstore",
        "policy_log_op",
        "policy_log_kind",
        "timestamp without time zone",
        "timestamp with time zone",
        "tsvector",
        "boolean",
        "integer",
        "smallint",
        "bigint",
        "double precision",
        "numeric",
        "bit varying",
        "character varying",
        "text[]",
    ] {
        assert!(types.contains(ty), "no column of type {ty} in {types:?}");
    }
    has("NULL value", &|e| e.fields().any(|f| f.value == "null"));
    let prepared = |e: &Event| {
        matches!(
            e,
            Event::Prepare { .. } | Event::CommitPrepared { .. } | Event::RollbackPrepared { .. }
        )
    };
    if two_phase {
        for gid in [GID_COMMITTED, GID_ROLLED_BACK] {
            has(
                &format!("PREPARE of {gid}"),
                &|e| matches!(e, Event::Prepare { gid: g, .. } if g == gid),
            );
        }
        has(
            "COMMIT PREPARED",
            &|e| matches!(e, Event::CommitPrepared { gid, .. } if gid == GID_COMMITTED),
        );
        has(
            "ROLLBACK PREPARED",
            &|e| matches!(e, Event::RollbackPrepared { gid, .. } if gid == GID_ROLLED_BACK),
        );
    } else {
        assert!(!events.iter().any(prepared), "two-phase events without 2PC");
    }
}
