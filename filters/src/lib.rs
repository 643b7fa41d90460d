//! The Conjur authorization model as pgsieve needs it: which replica sets may hold the
//! `secrets` rows of each variable, kept current row by row, and which variables flipped in
//! or out of a set in each leader transaction. No I/O and no SQL.
//!
//! # Semantics
//!
//! Replica set S has a data group `G_S` and a [`Rule`]. `closure(G_S)` is `G_S` plus every
//! role it is transitively a member of (`role_memberships (role_id = P, member_id = M)` is
//! the edge `M → P`; ownership rows count too; cycles are fine). A variable V with a
//! `resources` row is *in* S iff some role in `closure(G_S)` is `owner_id(V)` or holds
//! `execute` on V ([`Rule::Execute`], Conjur's `is_role_allowed_to`) or any privilege on V
//! ([`Rule::Any`], the seed's `is_resource_visible`), or V matches one of S's `always`
//! patterns. The same rule holds for a resource of any kind (Conjur stores secrets on
//! webservices, hosts, …; fetching one needs `execute`); only `public_key` ids go to every
//! set. An id the model has never seen is in no set but those of its `always` patterns
//! (fail closed).
//!
//! # Overview
//!
//! * [`Model::builder`] loads full tables; [`Model::feed`] follows row changes inside
//!   [`Model::begin`]/[`Model::end`], which returns the [`Effects`] (per-set [`Flip`]s).
//! * [`Model::decide`] is the per-row decision: one hash lookup on borrowed bytes.
//! * [`Model::explain`] says why, as a membership chain.
//!
//! # Cost of keeping it current
//!
//! Ids are interned into dense `u32` handles; per-id state lives in parallel vectors; each
//! role keeps its parents, owned variables and granted variables; each variable its owner
//! and permission rows; each role the bits of the sets whose closure holds it.
//!
//! * Permission row or owner change on V: O(permissions on V) — only V is recomputed, and only
//!   sets whose closure holds the role can change.
//! * Membership insert `M → P`: O(roles entering closures + variables reachable from them ×
//!   their permissions); nothing is done unless `M` is in some closure `P` is not in.
//! * Membership delete `M → P`: only if `M` is in some closure: those closures are recomputed
//!   by BFS (O(their size)), then the variables reachable from roles that left are recomputed.
//! * `decide`: O(|id|) hash + one probe; unknown ids parse the kind (and match `always` globs).
//!
//! ```
//! use pgsieve_filters::{Change, Model, ReplicaSetSpec, Rule};
//! let g = "system:group:conjur/replication-sets/east/replicated-data";
//! let mut m = Model::new(vec![ReplicaSetSpec {
//!     name: "east".into(), data_group: g.into(), rule: Rule::Execute, always: vec![],
//! }]).unwrap();
//! m.begin();
//! m.feed(Change::ResourceUpsert { resource_id: "acme:variable:db/pass", owner_id: "acme:policy:db" }).unwrap();
//! m.feed(Change::MembershipUpsert { role_id: "acme:layer:app", member_id: g, ownership: false }).unwrap();
//! m.feed(Change::PermissionUpsert { resource_id: "acme:variable:db/pass", role_id: "acme:layer:app", privilege: "execute" }).unwrap();
//! let effects = m.end();
//! assert_eq!(effects.flips.len(), 1);
//! assert!(m.decide(b"acme:variable:db/pass").contains(0));
//! assert_eq!(m.explain("acme:variable:db/pass", 0).to_string(),
//!     format!("acme:variable:db/pass in east: data group {g} → member of acme:layer:app → execute on acme:variable:db/pass"));
//! ```

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

mod builder;
mod closure;
mod effects;
mod error;
mod explain;
mod feed;
mod graph;
mod ids;
mod intern;
mod membership;
mod model;
mod privileges;
mod replica_set;

pub use builder::ModelBuilder;
pub use effects::{Effects, Flip};
pub use error::FilterError;
pub use explain::{Explanation, Reason};
pub use feed::{Change, ModelTable};
pub use ids::{PUBLIC_KEY_KIND, ResourceId, VARIABLE_KIND, data_group_id};
pub use model::Model;
pub use replica_set::{MAX_SETS, ReplicaSetSpec, Rule, SetMask};
