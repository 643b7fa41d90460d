/*!
Seeded generators of Conjur policies, so tests, the demo and benches describe a size
(apps × variables × versions) or a shape (random role graphs) instead of rows. The same
spec and seed always give the same rows and secret bytes.

- [`PolicySpec`]: a regular, production-like tree. Policy `<base>` holds one policy per
  app, each with a layer of hosts and variables the layer may read and execute; a few
  seeded cross-app `read` grants make `execute` and `any` differ.
- [`RandomGraphSpec`]: an irregular graph for property tests: membership cycles,
  ownership chains through role-resources, grants to layers, cross-account roles.
*/

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::GenericClient;

use super::conjur::id;
use super::error::HarnessError;
use super::workload::{self, PolicyLoad, pick, seed_of};

/// A production-like policy tree: `apps` application policies under `<base>`, each with
/// `hosts_per_app` hosts in a layer and `variables_per_app` variables the layer may
/// read and execute, each with `versions` secret versions.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// Account of everything generated.
    pub account: String,
    /// Identifier of the top policy (default `apps`), loaded into root.
    pub base: String,
    /// Number of application policies.
    pub apps: usize,
    /// Variables per application.
    pub variables_per_app: usize,
    /// Secret versions per variable (inserted after the load).
    pub versions: usize,
    /// Hosts per application layer (default 1).
    pub hosts_per_app: usize,
    /// Annotations per variable (default 1).
    pub annotations_per_variable: usize,
    /// Probability that a variable is also readable (not executable) by another app's
    /// layer (default 0.05).
    pub cross_read: f64,
    /// Plaintext length of the fake secret values (default 32 bytes).
    pub value_len: usize,
    /// Seed of every random choice and byte.
    pub seed: u64,
}

/// What [`PolicySpec::populate`] created, for grants and assertions.
#[derive(Debug, Clone, Default)]
pub struct Population {
    /// Every variable id, app by app.
    pub variables: Vec<String>,
    /// Each app's layer id.
    pub layers: Vec<String>,
    /// Each app's host ids.
    pub hosts: Vec<String>,
    /// Rows written directly by the loads (triggers add more).
    pub policy_rows: usize,
    /// Secret rows inserted.
    pub secret_rows: u64,
}

impl PolicySpec {
    /// `apps` × `variables_per_app` variables with `versions` versions each, in `account`.
    pub fn new(
        account: impl Into<String>,
        apps: usize,
        variables_per_app: usize,
        versions: usize,
    ) -> Self {
        PolicySpec {
            account: account.into(),
            base: "apps".into(),
            apps,
            variables_per_app,
            versions,
            hosts_per_app: 1,
            annotations_per_variable: 1,
            cross_read: 0.05,
            value_len: 32,
            seed: 0,
        }
    }

    /// Same spec with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Same spec with another number of hosts per app.
    pub fn with_hosts_per_app(mut self, hosts: usize) -> Self {
        self.hosts_per_app = hosts;
        self
    }

    /// Same spec under another top policy identifier.
    pub fn with_base(mut self, base: impl Into<String>) -> Self {
        self.base = base.into();
        self
    }

    /// The account's admin user (loads everything).
    pub fn admin(&self) -> String {
        id(&self.account, "user", "admin")
    }

    /// `<account>:policy:<base>`.
    pub fn base_policy(&self) -> String {
        id(&self.account, "policy", &self.base)
    }

    /// Short name of app `i` (`app-0007`).
    pub fn app_name(&self, app: usize) -> String {
        format!("app-{app:04}")
    }

    /// `<account>:policy:<base>/app-i`.
    pub fn app_policy(&self, app: usize) -> String {
        id(
            &self.account,
            "policy",
            &format!("{}/{}", self.base, self.app_name(app)),
        )
    }

    /// `<account>:layer:<base>/app-i/servers`.
    pub fn layer(&self, app: usize) -> String {
        id(
            &self.account,
            "layer",
            &format!("{}/{}/servers", self.base, self.app_name(app)),
        )
    }

    /// `<account>:host:<base>/app-i/host-h`.
    pub fn host(&self, app: usize, host: usize) -> String {
        id(
            &self.account,
            "host",
            &format!("{}/{}/host-{host}", self.base, self.app_name(app)),
        )
    }

    /// `<account>:variable:<base>/app-i/var-j`.
    pub fn variable(&self, app: usize, var: usize) -> String {
        id(
            &self.account,
            "variable",
            &format!("{}/{}/var-{var:04}", self.base, self.app_name(app)),
        )
    }

    /// Every variable id, app by app.
    pub fn variables(&self) -> Vec<String> {
        (0..self.apps)
            .flat_map(|a| (0..self.variables_per_app).map(move |v| (a, v)))
            .map(|(a, v)| self.variable(a, v))
            .collect()
    }

    /// The two loads: `<base>` into root, then its body into `<base>`.
    pub fn loads(&self) -> [PolicyLoad; 2] {
        let admin = self.admin();
        let root = id(&self.account, "policy", "root");
        let base = self.base_policy();
        let mut top = PolicyLoad::new(&root, &admin);
        top.text = format!("- !policy {}", self.base);
        top.role_resource(&base, &admin, Some(&root));

        let mut rng = StdRng::seed_from_u64(self.seed ^ seed_of(&self.account));
        let mut body = PolicyLoad::new(&base, &admin);
        body.text = format!(
            "# generated: {} apps x {} variables (seed {})",
            self.apps, self.variables_per_app, self.seed
        );
        let layers: Vec<String> = (0..self.apps).map(|a| self.layer(a)).collect();
        for app in 0..self.apps {
            let policy = self.app_policy(app);
            let p = Some(policy.as_str());
            body.role_resource(&policy, &base, Some(&base));
            let layer = &layers[app];
            body.role_resource(layer, &policy, p);
            for h in 0..self.hosts_per_app {
                let host = self.host(app, h);
                body.role_resource(&host, &policy, p);
                body.grant(layer, &host, p);
            }
            for v in 0..self.variables_per_app {
                let var = self.variable(app, v);
                body.resource(&var, &policy, p);
                body.permit(layer, "read", &var, p);
                body.permit(layer, "execute", &var, p);
                for n in 0..self.annotations_per_variable {
                    let name = if n == 0 {
                        "description".to_string()
                    } else {
                        format!("note-{n}")
                    };
                    body.annotate(
                        &var,
                        &name,
                        &format!("{} of {}", name, self.app_name(app)),
                        p,
                    );
                }
                if self.apps > 1 && rng.gen_bool(self.cross_read.clamp(0.0, 1.0)) {
                    let other = (app + rng.gen_range(1..self.apps)) % self.apps;
                    body.permit(&layers[other], "read", &var, p);
                }
            }
        }
        [top, body]
    }

    /// Creates the account (if missing), loads both policies and inserts the secret
    /// versions: three transactions plus one bulk secrets statement.
    pub async fn populate(
        &self,
        client: &mut impl GenericClient,
    ) -> Result<Population, HarnessError> {
        workload::create_account(client, &self.account).await?;
        let mut pop = Population::default();
        for load in self.loads() {
            pop.policy_rows += load.row_count();
            workload::load_policy(client, &load).await?;
        }
        pop.variables = self.variables();
        pop.layers = (0..self.apps).map(|a| self.layer(a)).collect();
        pop.hosts = (0..self.apps)
            .flat_map(|a| (0..self.hosts_per_app).map(move |h| (a, h)))
            .map(|(a, h)| self.host(a, h))
            .collect();
        pop.secret_rows = workload::add_secret_versions(
            client,
            &pop.variables,
            self.versions,
            self.value_len,
            self.seed,
        )
        .await?;
        Ok(pop)
    }
}

/// An irregular authorization graph over two customer accounts and `system`, for
/// property tests of replica-set membership. Everything is loaded into `acme`'s root
/// policy (policy_id NULL), so no policy nesting constrains the shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomGraphSpec {
    /// Roles per kind (group, layer, host, user) per account.
    pub roles_per_kind: usize,
    /// Variables per account.
    pub variables: usize,
    /// Random memberships (cycles allowed) over all roles.
    pub memberships: usize,
    /// Random permissions (read/execute/update) on variables.
    pub permissions: usize,
    /// Number of replica sets (data groups in `system`).
    pub sets: usize,
    /// Seed of every choice.
    pub seed: u64,
}

/// A generated random graph: the load and the ids tests aim at.
#[derive(Debug, Clone)]
pub struct RandomGraph {
    /// The load (into `acme:policy:root`, by `acme:user:admin`).
    pub load: PolicyLoad,
    /// Data groups `system:group:conjur/replication-sets/s<i>/replicated-data`.
    pub data_groups: Vec<String>,
    /// Every role id of the graph (data groups and admins included).
    pub roles: Vec<String>,
    /// Every variable id.
    pub variables: Vec<String>,
}

impl RandomGraphSpec {
    /// A small graph: 4 roles per kind, 12 variables per account, 40 memberships,
    /// 30 permissions, 2 sets.
    pub fn small(seed: u64) -> Self {
        RandomGraphSpec {
            roles_per_kind: 4,
            variables: 12,
            memberships: 40,
            permissions: 30,
            sets: 2,
            seed,
        }
    }

    /// Builds the graph. Accounts `acme`, `other` and `system` must exist (see
    /// [`RandomGraph::create`]).
    pub fn generate(&self) -> RandomGraph {
        const ACCOUNTS: [&str; 2] = ["acme", "other"];
        const KINDS: [&str; 4] = ["group", "layer", "host", "user"];
        const PRIVILEGES: [&str; 3] = ["read", "execute", "update"];
        let mut rng = StdRng::seed_from_u64(self.seed);
        let admin = id("acme", "user", "admin");
        let mut load = PolicyLoad::new(id("acme", "policy", "root"), &admin);
        load.text = format!("# random graph, seed {}", self.seed);

        let mut roles: Vec<String> = ACCOUNTS
            .iter()
            .chain(["system"].iter())
            .map(|a| id(a, "user", "admin"))
            .collect();
        let data_groups: Vec<String> = (0..self.sets)
            .map(|i| {
                id(
                    "system",
                    "group",
                    &format!("conjur/replication-sets/s{i}/replicated-data"),
                )
            })
            .collect();
        let mut new_roles: Vec<String> = data_groups.clone();
        for acct in ACCOUNTS {
            for kind in KINDS {
                for i in 0..self.roles_per_kind {
                    new_roles.push(id(acct, kind, &format!("r/{kind}-{i}")));
                }
            }
        }
        // Role-resources, owned by an earlier role (or an admin): ownership memberships
        // chain roles together, and with the random memberships below form cycles.
        for (i, role) in new_roles.iter().enumerate() {
            let owner = if i > 0 && rng.gen_bool(0.5) {
                new_roles[rng.gen_range(0..i)].clone()
            } else {
                pick(&mut rng, &roles)
                    .cloned()
                    .unwrap_or_else(|| admin.clone())
            };
            load.roles.push(workload::RoleRow {
                role_id: role.clone(),
                policy_id: None,
            });
            load.resource(role, &owner, None);
        }
        roles.extend(new_roles);

        let mut variables = Vec::new();
        for acct in ACCOUNTS {
            for v in 0..self.variables {
                let var = id(acct, "variable", &format!("r/var-{v}"));
                let owner = pick(&mut rng, &roles)
                    .cloned()
                    .unwrap_or_else(|| admin.clone());
                load.resource(&var, &owner, None);
                variables.push(var);
            }
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..self.memberships {
            let (Some(role), Some(member)) = (pick(&mut rng, &roles), pick(&mut rng, &roles))
            else {
                break;
            };
            if seen.insert((role.clone(), member.clone())) {
                load.grant(role, member, None);
            }
        }
        // Sets join a random role each (like `!grant member: …/replicated-data`).
        for g in &data_groups {
            if let Some(role) = pick(&mut rng, &roles) {
                if seen.insert((role.clone(), g.clone())) {
                    load.grant(role, g, None);
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..self.permissions {
            let (Some(role), Some(var), Some(privilege)) = (
                pick(&mut rng, &roles),
                pick(&mut rng, &variables),
                pick(&mut rng, &PRIVILEGES),
            ) else {
                break;
            };
            if seen.insert((role.clone(), var.clone(), *privilege)) {
                load.permit(role, privilege, var, None);
            }
        }
        RandomGraph {
            load,
            data_groups,
            roles,
            variables,
        }
    }
}

impl RandomGraph {
    /// Creates the accounts and loads the graph in one policy load.
    pub async fn create(&self, client: &mut impl GenericClient) -> Result<(), HarnessError> {
        for acct in ["acme", "other", "system"] {
            workload::create_account(client, acct).await?;
        }
        workload::load_policy(client, &self.load).await?;
        Ok(())
    }
}
