/*!
One harness for tests, `pgsieve demo`, `pgsieve bench` and the benches: throwaway
PostgreSQL clusters ([`cluster`]), the Conjur schema and leader preparation
([`conjur`]), a workload driver that writes what Conjur writes ([`workload`]) with
seeded generators ([`generate`]), the from-scratch replica-set oracle ([`oracle`]) and
table comparisons ([`compare`]). Behind the `harness` feature.
*/

pub mod cluster;
pub mod compare;
pub mod conjur;
pub mod error;
pub mod generate;
pub mod oracle;
pub mod topology;
pub mod workload;

pub use cluster::{Cluster, ClusterSpec, Profile};
pub use error::HarnessError;
pub use oracle::{OracleRule, variables_in_set};
pub use topology::Topology;
pub mod process;
