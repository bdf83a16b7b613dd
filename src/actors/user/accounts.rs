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
fn check_rank(caller: &UserRow, target: &UserRow) -> Result<(), AppError> {
    if caller.id != target.id && target.role > caller.role {
        return Err(AppError::Forbidden(
            "You cannot modify a user with a higher role than yours".into(),
        ));
    }
    Ok(())
}

/// The caller's and the target's rows, locked together (`user::lock_accounts`),
/// the caller's as the database has it now: a token minted before a demotion
/// or a deactivation grants nothing more.
async fn lock_pair(
    conn: &mut AsyncPgConnection,
    caller: AuthUser,
    id: i64,
    super_admins: bool,
) -> Result<(UserRow, UserRow, Vec<UserRow>), AppError> {
    let rows = user::lock_accounts(conn, &[caller.id, id], super_admins).await?;
    let find = |id: i64| rows.iter().find(|u| u.id == id).cloned();
    let me = find(caller.id)
        .filter(|u| u.is_active)
        .ok_or_else(|| AppError::Unauthorized("Account is deactivated".into()))?;
    if me.id != id && !me.role.is_admin() {
        return Err(not_found());
    }
    let target = find(id).ok_or_else(not_found)?;
    Ok((me, target, rows))
}

/// Whether `me` may make `update` to `target`, and whether it is sensitive
/// (email or password). The current password itself is verified by the
/// caller of this, on the locked row.
fn authorize_update(me: &UserRow, target: &UserRow, update: &UserUpdate) -> Result<bool, AppError> {
    check_rank(me, target)?;
    let sensitive =
        update.email.as_ref().is_some_and(|e| e.as_str() != target.email) || update.password.is_some();
    // Another account's email or password (the keys to it) only from a
    // strictly higher role: an admin cannot take over a peer admin.
    if sensitive && me.id != target.id && me.role <= target.role {
        return Err(AppError::Forbidden(
            "Changing another account's email or password needs a higher role than theirs".into(),
        ));
    }
    // Self-service changes of email or password need the current password;
    // an admin editing someone else does not.
    if sensitive && me.id == target.id && update.current_password.is_none() {
        return Err(AppError::invalid_field(
            "current_password",
            "is required to change email or password",
        ));
    }
    Ok(sensitive)
}

impl Handler<GetUser> for UserActor {
    type Result = Reply<UserView>;

    fn handle(&mut self, msg: GetUser, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        self.reply(async move {
            let mut conn = c.pool.get().await?;
            Ok(visible_target(&mut conn, msg.caller, msg.id).await?.into())
        })
    }
}

impl Handler<ListUsers> for UserActor {
    type Result = Reply<Page<UserView>>;

    fn handle(&mut self, msg: ListUsers, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        self.reply(async move {
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
        self.reply(async move {
            let UpdateUser { caller, id, update } = msg;
            // Refused requests are refused before any Argon2 work; every
            // check is made again on the locked rows of the writing
            // transaction.
            {
                let mut conn = c.pool.get().await?;
                let target = visible_target(&mut conn, caller, id).await?;
                let me = match caller.id == id {
                    true => Some(target.clone()),
                    false => user::find(&mut conn, caller.id).await?,
                };
                let me = me
                    .filter(|u| u.is_active)
                    .ok_or_else(|| AppError::Unauthorized("Account is deactivated".into()))?;
                authorize_update(&me, &target, &update)?;
            }
            let password_hash = match &update.password {
                Some(p) => Some(c.hasher.hash(p.expose().to_owned()).await?),
                None => None,
            };
            let update = &update;
            let password_hash = &password_hash;
            let row = crate::db::retry_on_conflict("update user", || {
                let c = c.clone();
                async move {
                    let mut conn = c.pool.get().await?;
                    conn.transaction::<_, AppError, _>(async move |conn| {
                        let (me, target, _) = lock_pair(conn, caller, id, false).await?;
                        if authorize_update(&me, &target, update)? && me.id == id {
                            let current = update.current_password.clone().unwrap_or_default();
                            if !c.hasher.verify(current, target.password_hash.clone()).await? {
                                return Err(AppError::invalid_field("current_password", "is incorrect"));
                            }
                        }
                        let changes = UserChanges {
                            email: update.email.as_ref().map(|e| e.as_str().to_owned()),
                            name: update.name.as_ref().map(|n| n.as_str().to_owned()),
                            password_hash: password_hash.clone(),
                            ..Default::default()
                        };
                        let row = match user::update(conn, id, &changes).await {
                            Ok(row) => row,
                            Err(e) if is_unique_violation(&e, "users_email_key") => return Err(email_taken()),
                            Err(DieselError::NotFound) => return Err(not_found()),
                            Err(e) => return Err(e.into()),
                        };
                        if password_hash.is_some() {
                            refresh_token::revoke_all_for_user(conn, id).await?;
                        }
                        Ok(row)
                    })
                    .await
                }
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
        self.reply(async move {
            let ChangeRole { caller, id, role } = msg;
            if caller.id == id {
                return Err(AppError::Forbidden("You cannot change your own role".into()));
            }
            let row = crate::db::retry_on_conflict("change role", || {
                let c = c.clone();
                async move {
                    let mut conn = c.pool.get().await?;
                    conn.transaction::<_, AppError, _>(async move |conn| {
                        let (me, target, locked) = lock_pair(conn, caller, id, true).await?;
                        if me.role != Role::SuperAdmin {
                            return Err(AppError::Forbidden("Insufficient permissions".into()));
                        }
                        let others = locked
                            .iter()
                            .filter(|u| u.id != id && u.is_active && u.role == Role::SuperAdmin)
                            .count();
                        if target.role == Role::SuperAdmin && role != Role::SuperAdmin && others == 0 {
                            return Err(AppError::conflict("Cannot demote the last super admin"));
                        }
                        let changes = UserChanges {
                            role: Some(role),
                            ..Default::default()
                        };
                        let row = user::update(conn, id, &changes).await?;
                        // Outstanding refresh tokens carry the old role into
                        // new access tokens; end them.
                        refresh_token::revoke_all_for_user(conn, id).await?;
                        Ok(row)
                    })
                    .await
                }
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
        self.reply(async move {
            let DeleteUser { caller, id } = msg;
            if caller.id != id && !caller.role.is_admin() {
                return Err(not_found());
            }
            crate::db::retry_on_conflict("delete user", || {
                let c = c.clone();
                async move {
                    let mut conn = c.pool.get().await?;
                    conn.transaction::<_, AppError, _>(async move |conn| {
                        let (me, target, locked) = lock_pair(conn, caller, id, true).await?;
                        check_rank(&me, &target)?;
                        let others = locked
                            .iter()
                            .filter(|u| u.id != id && u.is_active && u.role == Role::SuperAdmin)
                            .count();
                        if target.role == Role::SuperAdmin && target.is_active && others == 0 {
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
                }
            })
            .await
        })
    }
}

impl Handler<CurrentAccount> for UserActor {
    type Result = Reply<Option<(Role, bool)>>;

    fn handle(&mut self, msg: CurrentAccount, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        self.reply(async move {
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
        self.reply(async move {
            let mut conn = pool.get().await?;
            diesel::sql_query("SELECT 1").execute(&mut conn).await?;
            Ok(())
        })
    }
}
