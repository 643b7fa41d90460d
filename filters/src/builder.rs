//! Bulk construction from full tables (initial copy, restart from the follower): rows are
//! recorded without any per-row propagation, then closures and masks are computed once.
//! Cost: O(rows + Σ closure sizes + Σ permissions) for the whole build.

use crate::FilterError;
use crate::ids::ResourceId;
use crate::intern::Sym;
use crate::model::Model;
use crate::replica_set::ReplicaSetSpec;

/// Collects the rows of `role_memberships`, `permissions` and `resources`, then
/// [`ModelBuilder::build`]s a [`Model`] equal to one fed the same rows one by one.
#[derive(Debug, Clone)]
pub struct ModelBuilder {
    model: Model,
}

impl Model {
    /// A builder for a model serving `sets` (see [`Model::new`] for the errors).
    pub fn builder(sets: Vec<ReplicaSetSpec>) -> Result<ModelBuilder, FilterError> {
        Ok(ModelBuilder {
            model: Model::new(sets)?,
        })
    }
}

impl ModelBuilder {
    /// A `role_memberships` row: `member_id` is a member of `role_id`.
    pub fn add_membership(
        &mut self,
        role_id: &str,
        member_id: &str,
        ownership: bool,
    ) -> Result<(), FilterError> {
        let m = &mut self.model;
        let role = m.intern_id(role_id)?;
        let member = m.intern_id(member_id)?;
        m.set_membership_row(role, member, ownership, true);
        Ok(())
    }

    /// A `permissions` row (ignored for a `public_key`).
    pub fn add_permission(
        &mut self,
        resource_id: &str,
        role_id: &str,
        privilege: &str,
    ) -> Result<(), FilterError> {
        let filtered = ResourceId::parse_str(resource_id)?.is_filtered();
        let m = &mut self.model;
        if filtered {
            let var = m.intern_id(resource_id)?;
            let role = m.intern_id(role_id)?;
            let p = m.privileges.intern(privilege);
            m.add_permission_row(var, role, p);
        } else {
            ResourceId::parse_str(role_id)?;
        }
        Ok(())
    }

    /// A `resources` row (ignored for a `public_key`).
    pub fn add_resource(&mut self, resource_id: &str, owner_id: &str) -> Result<(), FilterError> {
        let filtered = ResourceId::parse_str(resource_id)?.is_filtered();
        let m = &mut self.model;
        if filtered {
            let var = m.intern_id(resource_id)?;
            let owner = m.intern_id(owner_id)?;
            m.set_owner(var, owner);
        } else {
            ResourceId::parse_str(owner_id)?;
        }
        Ok(())
    }

    /// Computes every closure and every variable's mask; the model records no flips.
    pub fn build(self) -> Model {
        let mut m = self.model;
        let mut touched = Vec::new();
        m.recompute_closures(m.all, &mut touched);
        for i in 0..m.names.len() {
            // Handles were u32 when interned, so the conversion cannot fail.
            let Ok(var) = Sym::try_from(i) else { break };
            let mask = m.compute_mask(var);
            m.names.set_payload(var, mask);
        }
        m.pending.clear();
        m
    }
}
