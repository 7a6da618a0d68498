//! Who may see a notification (contract §5.2). The same rule, written in SQL, selects what the inbox
//! counts and lists for a user (see `inbox.rs`); the integration tests check that both agree.

use vigia_schemas::{Audience, Role, TenantId, UserId};

/// The person at the other end of a connection or REST call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Viewer {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: Role,
}

/// The role's name in claims, audiences and the inbox (`"ceo"`, `"seller"`, …).
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Ceo => "ceo",
        Role::Manager => "manager",
        Role::Seller => "seller",
        Role::Secretary => "secretary",
        Role::Supervisor => "supervisor",
    }
}

/// CEOs and managers see every notification of their tenant.
pub fn sees_whole_tenant(role: Role) -> bool {
    matches!(role, Role::Ceo | Role::Manager)
}

/// Whether `viewer` may see a notification of `tenant_id` addressed to `audience`: never across
/// tenants; otherwise if it names the viewer, or the viewer's role, or the viewer is a CEO or
/// manager.
pub fn can_see(viewer: &Viewer, tenant_id: TenantId, audience: &Audience) -> bool {
    if viewer.tenant_id != tenant_id {
        return false;
    }
    if sees_whole_tenant(viewer.role) {
        return true;
    }
    match audience {
        Audience::User { user_id } => *user_id == viewer.user_id,
        Audience::Role { role } => *role == viewer.role,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_ROLES: [Role; 5] = [
        Role::Ceo,
        Role::Manager,
        Role::Seller,
        Role::Secretary,
        Role::Supervisor,
    ];

    fn viewer(tenant_id: TenantId, user_id: UserId, role: Role) -> Viewer {
        Viewer {
            tenant_id,
            user_id,
            role,
        }
    }

    #[test]
    fn a_seller_sees_their_own_and_not_another_sellers() {
        let a = viewer(1, 10, Role::Seller);
        assert!(can_see(&a, 1, &Audience::User { user_id: 10 }));
        assert!(!can_see(&a, 1, &Audience::User { user_id: 11 }));
    }

    #[test]
    fn ceo_and_manager_see_everything_of_their_tenant() {
        for role in [Role::Ceo, Role::Manager] {
            let boss = viewer(1, 1, role);
            assert!(can_see(&boss, 1, &Audience::User { user_id: 10 }));
            for addressed in ALL_ROLES {
                assert!(can_see(&boss, 1, &Audience::Role { role: addressed }));
            }
        }
    }

    #[test]
    fn a_role_audience_reaches_that_role_only_besides_the_bosses() {
        for addressed in ALL_ROLES {
            for role in [Role::Seller, Role::Secretary, Role::Supervisor] {
                let v = viewer(1, 5, role);
                assert_eq!(
                    can_see(&v, 1, &Audience::Role { role: addressed }),
                    role == addressed,
                    "{role:?} vs audience {addressed:?}"
                );
            }
        }
    }

    #[test]
    fn a_user_audience_does_not_reach_others_with_the_same_role() {
        let secretary = viewer(1, 7, Role::Secretary);
        assert!(!can_see(&secretary, 1, &Audience::User { user_id: 8 }));
        assert!(can_see(&secretary, 1, &Audience::User { user_id: 7 }));
    }

    #[test]
    fn role_names_match_the_serde_names() {
        for role in ALL_ROLES {
            assert_eq!(serde_json::to_value(role).unwrap(), role_name(role));
        }
    }

    #[test]
    fn nobody_sees_another_tenant() {
        for role in ALL_ROLES {
            let v = viewer(1, 10, role);
            assert!(!can_see(&v, 2, &Audience::User { user_id: 10 }));
            assert!(!can_see(&v, 2, &Audience::Role { role }));
        }
    }
}
