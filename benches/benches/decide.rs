//! Criterion benches of the filter model on a Conjur-sized policy: 1 M variables, 100 k roles,
//! 16 replica sets.
//!
//! * `decide/*`: the per-row decision (`Model::decide`): cold (random over 1 M), insertion
//!   order, a hot working set of 10 k variables, and ids of an unfiltered kind.
//! * `feed/grant_10k` / `feed/revoke_10k`: one membership row that moves 10 k variables into
//!   (out of) a set, through `begin`/`feed`/`end` (effects included).
//! * `build/1m_variables`: `Model::builder` over the full tables.
//!
//! The fixture also prints the model's memory (RSS delta and the model's own estimate).
//!
//! `PGSIEVE_BENCH_VARIABLES=N` (a multiple of 1 000, at least 20 000) shrinks the policy to N variables, so CI can
//! run every bench in seconds: building the 1 M-variable model takes ~2 s, and the `build`
//! bench builds it 11 times. The ids then name N (`100k_vars_16_sets`), so short runs never
//! compare against full ones.

use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_main};
use pgsieve_filters::{Change, Model, ReplicaSetSpec, Rule};
use std::time::{Duration, Instant};

const SETS: usize = 16;
const POLICIES: usize = 1_000;
const LAYERS_PER_POLICY: usize = 10;
const ROLES: usize = 100_000;
/// Variables of the full-size policy (see `PGSIEVE_BENCH_VARIABLES`).
const VARIABLES: usize = 1_000_000;
/// Fewest variables `PGSIEVE_BENCH_VARIABLES` may ask for: the big policy and the 1 k-variable
/// model are cut out of the first variables.
const MIN_VARIABLES: usize = 20_000;
/// Variables owned by the policy whose grant the feed benches toggle.
const BIG: usize = 10_000;
const BIG_POLICY: &str = "acct:policy:big";

/// Ids and rows as indices, so building a model formats nothing.
struct Fixture {
    sets: Vec<ReplicaSetSpec>,
    roles: Vec<String>,
    vars: Vec<String>,
    /// (role, member, ownership) indices into `roles`.
    memberships: Vec<(u32, u32, bool)>,
    /// (variable, role, privilege).
    permissions: Vec<(u32, u32, &'static str)>,
    /// (variable, owner role).
    owners: Vec<(u32, u32)>,
}

fn group(i: usize) -> String {
    format!("system:group:conjur/replication-sets/s{i}/replicated-data")
}

/// Roles: data groups, then per policy its policy role and layers, then hosts up to 100 k.
/// Variable `j` of policy `p` is owned by `p` (the first 10 k by `acct:policy:big`) and
/// granted `read` + `execute` to one of `p`'s layers. Set `s`'s data group is a member of two
/// layers of each of policies `10 s .. 10 s + 10` and owns-through-membership policy `900 + s`.
fn fixture(variables: usize) -> Fixture {
    let sets: Vec<ReplicaSetSpec> = (0..SETS)
        .map(|i| ReplicaSetSpec {
            name: format!("s{i}"),
            data_group: group(i),
            rule: if i % 2 == 0 { Rule::Execute } else { Rule::Any },
            always: if i == 0 {
                vec!["*:variable:conjur/shared/*".into()]
            } else {
                vec![]
            },
        })
        .collect();
    let mut roles: Vec<String> = (0..SETS).map(group).collect();
    let policy_base = roles.len();
    roles.extend((0..POLICIES).map(|p| format!("acct:policy:app/p{p}")));
    let layer_base = roles.len();
    roles.extend((0..POLICIES * LAYERS_PER_POLICY).map(|l| {
        format!(
            "acct:layer:app/p{}/l{}",
            l / LAYERS_PER_POLICY,
            l % LAYERS_PER_POLICY
        )
    }));
    let host_base = roles.len();
    let hosts = ROLES - host_base - 1;
    roles.extend((0..hosts).map(|h| format!("acct:host:app/p{}/h{h}", h % POLICIES)));
    let big = roles.len();
    roles.push(BIG_POLICY.to_owned());
    let idx = |i: usize| u32::try_from(i).expect("fits");

    let mut memberships = Vec::new();
    for l in 0..POLICIES * LAYERS_PER_POLICY {
        // The policy owns its layers (ownership rows, as Conjur's trigger writes them).
        memberships.push((
            idx(layer_base + l),
            idx(policy_base + l / LAYERS_PER_POLICY),
            true,
        ));
    }
    for h in 0..hosts {
        let layer = (h % POLICIES) * LAYERS_PER_POLICY + h % LAYERS_PER_POLICY;
        memberships.push((idx(layer_base + layer), idx(host_base + h), false));
    }
    for s in 0..SETS {
        for p in 10 * s..10 * s + 10 {
            for l in [0, 5] {
                memberships.push((idx(layer_base + p * LAYERS_PER_POLICY + l), idx(s), false));
            }
        }
        memberships.push((idx(policy_base + 900 + s), idx(s), false));
    }

    let per_policy = variables / POLICIES;
    let mut vars = Vec::with_capacity(variables);
    let mut owners = Vec::with_capacity(variables);
    let mut permissions = Vec::with_capacity(2 * variables);
    for v in 0..variables {
        let (p, j) = (v / per_policy, v % per_policy);
        vars.push(if v < BIG {
            format!("acct:variable:big/secret-{v}")
        } else {
            format!("acct:variable:app/p{p}/secret-{j}")
        });
        // Big variables are granted to policy 999's layers, which no set reaches.
        let layer_policy = if v < BIG { POLICIES - 1 } else { p };
        let layer = idx(layer_base + layer_policy * LAYERS_PER_POLICY + j % LAYERS_PER_POLICY);
        owners.push((
            idx(v),
            if v < BIG {
                idx(big)
            } else {
                idx(policy_base + p)
            },
        ));
        permissions.push((idx(v), layer, "read"));
        permissions.push((idx(v), layer, "execute"));
    }
    Fixture {
        sets,
        roles,
        vars,
        memberships,
        permissions,
        owners,
    }
}

fn build(f: &Fixture) -> Model {
    let mut b = Model::builder(f.sets.clone()).expect("valid sets");
    let role = |i: u32| f.roles[i as usize].as_str();
    for &(r, m, o) in &f.memberships {
        b.add_membership(role(r), role(m), o).expect("valid ids");
    }
    for &(v, r, p) in &f.permissions {
        b.add_permission(&f.vars[v as usize], role(r), p)
            .expect("valid ids");
    }
    for &(v, o) in &f.owners {
        b.add_resource(&f.vars[v as usize], role(o))
            .expect("valid ids");
    }
    b.build()
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The ids `order` picks from `ids`, back to back in one buffer, with their end offsets.
fn packed(ids: &[String], order: impl Iterator<Item = usize>) -> (Vec<u8>, Vec<usize>) {
    let (mut bytes, mut ends) = (Vec::new(), Vec::new());
    for i in order {
        bytes.extend_from_slice(ids[i].as_bytes());
        ends.push(bytes.len());
    }
    (bytes, ends)
}

/// Deterministic shuffle (xorshift), so runs compare.
fn shuffled(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// Applies `setup` untimed, then times `timed` (one transaction, effects included), `iters` times.
fn timed_flip(model: &mut Model, setup: Change<'_>, timed: Change<'_>, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        model.begin();
        model.feed(setup).expect("valid");
        black_box(model.end());
        let t = Instant::now();
        model.begin();
        model.feed(timed).expect("valid");
        let effects = model.end();
        total += t.elapsed();
        assert_eq!(
            effects.len(),
            BIG,
            "the grant moves exactly the big policy's variables"
        );
    }
    total
}

/// How many variables the policy has: `PGSIEVE_BENCH_VARIABLES`, else 1 M.
fn variables() -> usize {
    match std::env::var("PGSIEVE_BENCH_VARIABLES") {
        Ok(v) => {
            let n: usize = v
                .trim()
                .parse()
                .expect("PGSIEVE_BENCH_VARIABLES is a number");
            assert!(
                n >= MIN_VARIABLES && n % POLICIES == 0,
                "PGSIEVE_BENCH_VARIABLES must be a multiple of {POLICIES}, at least {MIN_VARIABLES}"
            );
            n
        }
        Err(_) => VARIABLES,
    }
}

/// `1m`, `100k`, or the plain number: the size part of the bench ids.
fn size_label(n: usize) -> String {
    if n % 1_000_000 == 0 {
        format!("{}m", n / 1_000_000)
    } else if n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn benches(c: &mut Criterion) {
    let variables = variables();
    let vars_id = format!("{}_vars_16_sets", size_label(variables));
    let f = fixture(variables);
    let before = rss_bytes();
    let started = Instant::now();
    let mut model = build(&f);
    let took = started.elapsed();
    let after = rss_bytes();
    eprintln!(
        "fixture: {} variables, {} roles, {} sets; build {:?}; RSS delta {} MiB; model estimate {} MiB",
        f.vars.len(),
        f.roles.len(),
        SETS,
        took,
        after.saturating_sub(before) >> 20,
        model.approx_heap_bytes() >> 20
    );

    let mut g = c.benchmark_group("decide");
    const BATCH: usize = 4096;
    g.throughput(Throughput::Elements(BATCH as u64));
    // Ids packed back to back, as they sit in decoded frames, so reading the input is not
    // itself a cache miss: `random_order` is the cold case (each row a different variable
    // anywhere in the 1 M), `insertion_order` walks variables as created, `hot_10k` picks at
    // random among 10 k variables (one policy load or rotation batch).
    let order = shuffled(variables);
    let hot: Vec<usize> = order.iter().map(|&i| order[i % 10_000]).collect();
    let other_kinds: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| format!("acct:public_key:user/u{i}/key").into_bytes())
        .collect();
    let cases = [
        ("random_order", packed(&f.vars, order.iter().copied())),
        ("insertion_order", packed(&f.vars, 0..variables)),
        ("hot_10k", packed(&f.vars, hot.iter().copied())),
    ];
    for (name, (bytes, ends)) in &cases {
        let mut at = 0usize;
        g.bench_function(BenchmarkId::new(*name, &vars_id), |b| {
            b.iter(|| {
                let mut acc = 0u64;
                for _ in 0..BATCH {
                    at = if at + 1 == ends.len() { 0 } else { at + 1 };
                    let start = if at == 0 { 0 } else { ends[at - 1] };
                    acc ^= model.decide(black_box(&bytes[start..ends[at]])).0;
                }
                acc
            })
        });
    }
    // The same lookup on a model small enough to stay in cache: the cost of hashing and
    // comparing one id, without memory latency.
    let small = Fixture {
        sets: f.sets.clone(),
        roles: f.roles.clone(),
        vars: f.vars[BIG..BIG + 1_000].to_vec(),
        memberships: f.memberships.clone(),
        permissions: f.permissions[2 * BIG..2 * (BIG + 1_000)]
            .iter()
            .map(|&(v, r, p)| (v - BIG as u32, r, p))
            .collect(),
        owners: f.owners[BIG..BIG + 1_000]
            .iter()
            .map(|&(v, o)| (v - BIG as u32, o))
            .collect(),
    };
    let small_model = build(&small);
    let (bytes, ends) = packed(&small.vars, shuffled(1_000).into_iter());
    let mut at = 0usize;
    g.bench_function(BenchmarkId::new("random_order", "1k_vars_16_sets"), |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for _ in 0..BATCH {
                at = if at + 1 == ends.len() { 0 } else { at + 1 };
                let start = if at == 0 { 0 } else { ends[at - 1] };
                acc ^= small_model.decide(black_box(&bytes[start..ends[at]])).0;
            }
            acc
        })
    });
    g.bench_function(BenchmarkId::new("unknown_public_key", &vars_id), |b| {
        b.iter(|| {
            other_kinds
                .iter()
                .fold(0u64, |acc, id| acc ^ model.decide(black_box(id)).0)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("feed");
    g.throughput(Throughput::Elements(BIG as u64));
    let grant = Change::MembershipUpsert {
        role_id: BIG_POLICY,
        member_id: &f.sets[0].data_group,
        ownership: false,
    };
    let revoke = Change::MembershipDelete {
        role_id: BIG_POLICY,
        member_id: &f.sets[0].data_group,
        ownership: false,
    };
    g.bench_function("grant_10k", |b| {
        b.iter_custom(|iters| timed_flip(&mut model, revoke, grant, iters))
    });
    g.bench_function("revoke_10k", |b| {
        b.iter_custom(|iters| timed_flip(&mut model, grant, revoke, iters))
    });
    g.finish();
    drop(model);

    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.throughput(Throughput::Elements(variables as u64));
    g.bench_function(
        format!("{}_variables_100k_roles", size_label(variables)),
        |b| b.iter(|| build(&f)),
    );
    g.finish();
}

/// Criterion's generated group function, kept out of the crate root's public items.
mod group {
    criterion::criterion_group!(decide, super::benches);
}
criterion_main!(group::decide);
