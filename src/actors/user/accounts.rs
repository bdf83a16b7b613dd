//! `GetUser`, `ListUsers`, `UpdateUser`, `ChangeRole`, `DeleteUser`,
//! `CurrentAccount`, `Ping`: reading and changing accounts.

use super::*;

fn not_found() -> AppError {
    AppError::NotFound("User not found".into())
}

/// Loads the target of a user operation: self, or anyone for admins; a
/// non-admin asking for another user gets 404 without a query.
async fn visible_target(
    conn: &mut AsyncPgConnection,
    caller: AuthUser,
    id: i64,
) -> Result<UserRow, AppError> {
    if caller.id != id && !caller.role.is_admin() {
        return Err(not_found());
    }
    user::find(conn, id).await?.ok_or_else(not_found)
}

/// An admin may not act on a user with a higher role than their own.
fn check_rank(caller: AuthUser, target: &UserRow) -> Result<(), AppError> {
    if caller.id != target.id && target.role > caller.role {
        return Err(AppError::Forbidden(
            "You cannot modify a user with a higher role than yours".into(),
        ));
    }
    Ok(())
}

impl Handler<GetUser> for UserActor {
    type Result = Reply<UserView>;

    fn handle(&mut self, msg: GetUser, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        Box::pin(async move {
            let mut conn = c.pool.get().await?;
            Ok(visible_target(&mut conn, msg.caller, msg.id).await?.into())
        })
    }
}

impl Handler<ListUsers> for UserActor {
    type Result = Reply<Page<UserView>>;

    fn handle(&mut self, msg: ListUsers, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        Box::pin(async move {
            let mut conn = c.pool.get().await?;
            let search = msg.search.as_deref();
            let page = c
                .cursors
                .serve(
                    USERS_CURSOR_SCOPE,
                    msg.page,
                    |u: &UserRow| (u.created_at.timestamp_micros(), u.id),
                    |fetch| async move {
                        Ok(match fetch {
                            Fetch::Offset { offset, limit } => {
                                user::list_offset(&mut conn, search, offset, limit).await?
                            }
                            Fetch::Keyset { after, limit } => {
                                let after = newest_first(after)?;
                                (user::list_keyset(&mut conn, search, after, limit).await?, 0)
                            }
                        })
                    },
                )
                .await?;
            Ok(page.map(UserView::from))
        })
    }
}

impl Handler<UpdateUser> for UserActor {
    type Result = Reply<UserView>;

    fn handle(&mut self, msg: UpdateUser, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        Box::pin(async move {
            let UpdateUser { caller, id, update } = msg;
            let target = {
                let mut conn = c.pool.get().await?;
                visible_target(&mut conn, caller, id).await?
            };
            check_rank(caller, &target)?;
            if caller.id == id && !target.is_active {
                // A deactivated account's token may still be valid: no writes.
                return Err(AppError::Unauthorized("Account is deactivated".into()));
            }
            let sensitive = update.email.as_ref().is_some_and(|e| e.as_str() != target.email)
                || update.password.is_some();
            // Another account's email or password (the keys to it) only from
            // a strictly higher role: an admin cannot take over a peer admin.
            if sensitive && caller.id != id && caller.role <= target.role {
                return Err(AppError::Forbidden(
                    "Changing another account's email or password needs a higher role than theirs".into(),
                ));
            }
            // Self-service changes of email or password need the current
            // password; an admin editing someone else does not.
            if sensitive && caller.id == id {
                let Some(current) = update.current_password else {
                    return Err(AppError::invalid_field(
                        "current_password",
                        "is required to change email or password",
                    ));
                };
                if !c.hasher.verify(current, target.password_hash.clone()).await? {
                    return Err(AppError::invalid_field("current_password", "is incorrect"));
                }
            }
            let password_hash = match &update.password {
                Some(p) => Some(c.hasher.hash(p.expose().to_owned()).await?),
                None => None,
            };
            let password_changed = password_hash.is_some();
            let changes = UserChanges {
                email: update.email.map(|e| e.as_str().to_owned()),
                name: update.name.map(|n| n.as_str().to_owned()),
                password_hash,
                ..Default::default()
            };
            let mut conn = c.pool.get().await?;
            let row = conn
                .transaction::<_, AppError, _>(async move |conn| {
                    let row = match user::update(conn, id, &changes).await {
                        Ok(row) => row,
                        Err(e) if is_unique_violation(&e, "users_email_key") => return Err(email_taken()),
                        Err(DieselError::NotFound) => return Err(not_found()),
                        Err(e) => return Err(e.into()),
                    };
                    if password_changed {
                        refresh_token::revoke_all_for_user(conn, id).await?;
                    }
                    Ok(row)
                })
                .await?;
            Ok(row.into())
        })
    }
}

impl Handler<ChangeRole> for UserActor {
    type Result = Reply<UserView>;

    fn handle(&mut self, msg: ChangeRole, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        Box::pin(async move {
            let ChangeRole { caller, id, role } = msg;
            if caller.id == id {
                return Err(AppError::Forbidden("You cannot change your own role".into()));
            }
            let mut conn = c.pool.get().await?;
            let row = conn
                .transaction::<_, AppError, _>(async move |conn| {
                    // The caller's role is re-read: a token minted before a
                    // demotion must not keep granting it.
                    let current = user::find(conn, caller.id).await?;
                    if !current.is_some_and(|u| u.is_active && u.role == Role::SuperAdmin) {
                        return Err(AppError::Forbidden("Insufficient permissions".into()));
                    }
                    let others = user::lock_other_super_admins(conn, id).await?;
                    let target = user::find_for_update(conn, id).await?.ok_or_else(not_found)?;
                    if target.role == Role::SuperAdmin && role != Role::SuperAdmin && others.is_empty() {
                        return Err(AppError::conflict("Cannot demote the last super admin"));
                    }
                    let changes = UserChanges {
                        role: Some(role),
                        ..Default::default()
                    };
                    let row = user::update(conn, id, &changes).await?;
                    // Outstanding refresh tokens carry the old role into new
                    // access tokens; end them.
                    refresh_token::revoke_all_for_user(conn, id).await?;
                    Ok(row)
                })
                .await?;
            Ok(row.into())
        })
    }
}

impl Handler<DeleteUser> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: DeleteUser, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        Box::pin(async move {
            let DeleteUser { caller, id } = msg;
            let mut conn = c.pool.get().await?;
            conn.transaction::<_, AppError, _>(async move |conn| {
                let target = visible_target(conn, caller, id).await?;
                check_rank(caller, &target)?;
                if target.role == Role::SuperAdmin
                    && target.is_active
                    && user::lock_other_super_admins(conn, id).await?.is_empty()
                {
                    return Err(AppError::conflict("Cannot delete the last super admin"));
                }
                let changes = UserChanges {
                    is_active: Some(false),
                    ..Default::default()
                };
                user::update(conn, id, &changes).await?;
                refresh_token::revoke_all_for_user(conn, id).await?;
                Ok(())
            })
            .await
        })
    }
}

impl Handler<CurrentAccount> for UserActor {
    type Result = Reply<Option<(Role, bool)>>;

    fn handle(&mut self, msg: CurrentAccount, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            Ok(user::find(&mut conn, msg.id)
                .await?
                .map(|u| (u.role, u.is_active)))
        })
    }
}

impl Handler<Ping> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            diesel::sql_query("SELECT 1").execute(&mut conn).await?;
            Ok(())
        })
    }
}
