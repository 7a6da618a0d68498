-- What can still be unread, by each audience an unread count walks (gateway/src/inbox.rs,
-- `unread_of!`): withdrawals and withdrawn notifications leave these indexes, so a count walks
-- only the candidates' index entries instead of the tenant's whole history and its rows.
CREATE INDEX notifications_unread_by_tenant ON notifications (tenant_id, seq)
    WHERE withdraws IS NULL AND withdrawn_at IS NULL;
CREATE INDEX notifications_unread_by_user ON notifications (tenant_id, audience_user_id, seq)
    WHERE withdraws IS NULL AND withdrawn_at IS NULL;
CREATE INDEX notifications_unread_by_role ON notifications (tenant_id, audience_role, seq)
    WHERE withdraws IS NULL AND withdrawn_at IS NULL;
