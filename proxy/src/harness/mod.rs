/*!
One harness for tests, `pgsieve demo`, `pgsieve bench` and the benches: throwaway
PostgreSQL clusters ([`cluster`]), the Conjur schema and leader preparation
([`conjur`]), a workload driver that writes what Conjur writes ([`workload`]) with
seeded generators ([`generate`]), the from-scratch replica-set oracle ([`oracle`]),
table comparisons ([`compare`]) and waiting for a follower to catch up ([`wait`]).
Behind the `harness` feature.
*/

pub mod cluster;
pub mod compare;
pub mod conjur;
pub mod error;
pub mod generate;
pub mod invariants;
pub mod oracle;
pub mod tls;
pub mod topology;
pub mod wait;
pub mod workload;

pub use cluster::{Cluster, ClusterSpec, Profile};
pub use error::HarnessError;
pub use oracle::{OracleRule, variables_in_set};
pub use topology::Topology;
pub use wait::{wait_caught_up, wait_initial_copy};
pub mod process;
