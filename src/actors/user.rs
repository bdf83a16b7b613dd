//! UserActor: users, credentials and tokens.
//!
//! Handles: `Register`, `Login`, `Refresh`, `Logout`, `GetUser`, `ListUsers`,
//! `UpdateUser`, `ChangeRole`, `DeleteUser`, `Ping`.
//!
//! Every message runs as a `ResponseFuture` beside the actor: the mailbox keeps
//! flowing while a query or an Argon2 hash is in progress. The actor owns its
//! own pool (`database.pools.user`), so a login storm cannot take connections
//! from order placement.

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
use chrono::Utc;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    auth::{
        oauth::{OAuthFailure, Provider, UserInfo},
        refresh, AuthUser, JwtKeys, PasswordHasher,
    },
    db::DbPool,
    domain::{Email, Password, Role, UserName},
    error::{AppError, FieldError},
    models::{
        oauth_state::{self, Taken},
        refresh_token::{self, NewRefreshToken},
        user::{self, NewUser, UserChanges, UserRow, UserView},
    },
    pagination::{newest_first, CursorCodec, Fetch, Page, PageRequest},
};

pub struct UserActor {
    pool: DbPool,
    hasher: PasswordHasher,
    jwt: Arc<JwtKeys>,
    cursors: CursorCodec,
    refresh_ttl: Duration,
    oauth: Option<Arc<Provider>>,
}

impl UserActor {
    pub fn new(
        pool: DbPool,
        hasher: PasswordHasher,
        jwt: Arc<JwtKeys>,
        cursors: CursorCodec,
        refresh_ttl: Duration,
    ) -> Self {
        Self {
            pool,
            hasher,
            jwt,
            cursors,
            refresh_ttl,
            oauth: None,
        }
    }

    /// Enables login through an OpenID provider.
    pub fn with_oauth(mut self, provider: Option<Arc<Provider>>) -> Self {
        self.oauth = provider;
        self
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            pool: self.pool.clone(),
            hasher: self.hasher.clone(),
            jwt: self.jwt.clone(),
            cursors: self.cursors.clone(),
            refresh_ttl: self.refresh_ttl,
        }
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        // Housekeeping: expired refresh tokens and stale OAuth attempts.
        ctx.run_interval(Duration::from_secs(3600), |act, ctx| {
            let pool = act.pool.clone();
            ctx.spawn(
                async move {
                    let Ok(mut conn) = pool.get().await else { return };
                    let tokens = refresh_token::delete_expired(&mut conn).await;
                    let states = oauth_state::purge(&mut conn).await;
                    tracing::debug!(?tokens, ?states, "housekeeping done");
                }
                .into_actor(act),
            );
        });
    }
}

impl Supervised for UserActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        tracing::warn!(actor = "UserActor", "restarting after a failure");
    }
}

/// What a message's future needs, cloned out of the actor so it can run
/// beside it.
#[derive(Clone)]
struct Ctx {
    pool: DbPool,
    hasher: PasswordHasher,
    jwt: Arc<JwtKeys>,
    cursors: CursorCodec,
    refresh_ttl: Duration,
}

type Reply<T> = ResponseFuture<Result<T, AppError>>;

fn is_unique_violation(e: &DieselError, constraint: &str) -> bool {
    matches!(e, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
        if info.constraint_name() == Some(constraint))
}

fn email_taken() -> AppError {
    AppError::Conflict {
        message: "Email already registered".into(),
        errors: vec![FieldError::new("email", "is already registered")],
    }
}

fn invalid_credentials() -> AppError {
    AppError::Unauthorized("Invalid email or password".into())
}

fn invalid_refresh() -> AppError {
    AppError::Unauthorized("Invalid or expired refresh token".into())
}

// ---------------------------------------------------------------- messages

/// Creates an account. `role` is `User` for the public endpoint; the CLI
/// creates admins with it.
#[derive(Message)]
#[rtype(result = "Result<UserView, AppError>")]
pub struct Register {
    pub email: Email,
    pub password: Password,
    pub name: UserName,
    pub role: Role,
}

#[derive(Message)]
#[rtype(result = "Result<TokenPair, AppError>")]
pub struct Login {
    pub email: String,
    pub password: String,
}

#[derive(Message)]
#[rtype(result = "Result<TokenPair, AppError>")]
pub struct Refresh {
    pub refresh_token: String,
}

#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct Logout {
    pub user_id: i64,
    pub refresh_token: String,
}

/// Loads a user the caller may see (self, or anyone for admins); others are 404.
#[derive(Message)]
#[rtype(result = "Result<UserView, AppError>")]
pub struct GetUser {
    pub caller: AuthUser,
    pub id: i64,
}

#[derive(Message)]
#[rtype(result = "Result<Page<UserView>, AppError>")]
pub struct ListUsers {
    pub search: Option<String>,
    pub page: PageRequest<UserCursor>,
}

/// Keyset position for the users listing (newest first).
pub type UserCursor = (i64, i64);

pub const USERS_CURSOR_SCOPE: &str = "users:-created_at";

#[derive(Debug, Default)]
pub struct UserUpdate {
    pub name: Option<UserName>,
    pub email: Option<Email>,
    pub password: Option<Password>,
    pub current_password: Option<String>,
}

#[derive(Message)]
#[rtype(result = "Result<UserView, AppError>")]
pub struct UpdateUser {
    pub caller: AuthUser,
    pub id: i64,
    pub update: UserUpdate,
}

#[derive(Message)]
#[rtype(result = "Result<UserView, AppError>")]
pub struct ChangeRole {
    pub caller: AuthUser,
    pub id: i64,
    pub role: Role,
}

#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct DeleteUser {
    pub caller: AuthUser,
    pub id: i64,
}

/// Readiness: the actor is alive and its pool reaches Postgres.
#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct Ping;

/// The caller's role and whether the account is active, as the database
/// says now (a token's claims may be up to `auth.access_ttl_secs` old).
#[derive(Message)]
#[rtype(result = "Result<Option<(Role, bool)>, AppError>")]
pub struct CurrentAccount {
    pub id: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: u64,
    pub user: UserView,
}

// ---------------------------------------------------------------- handlers

impl Handler<Register> for UserActor {
    type Result = Reply<UserView>;

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        Box::pin(async move {
            let hash = c.hasher.hash(msg.password.expose().to_owned()).await?;
            let mut conn = c.pool.get().await?;
            let new = NewUser {
                email: msg.email.as_str(),
                password_hash: Some(&hash),
                name: msg.name.as_str(),
                role: msg.role,
                google_id: None,
            };
            match user::insert(&mut conn, &new).await {
                Ok(row) => Ok(row.into()),
                Err(e) if is_unique_violation(&e, "users_email_key") => Err(email_taken()),
                Err(e) => Err(e.into()),
            }
        })
    }
}

impl Ctx {
    /// A new access token and a new refresh token in `family`.
    async fn issue_pair(
        &self,
        conn: &mut AsyncPgConnection,
        user: UserRow,
        family: Uuid,
    ) -> Result<TokenPair, AppError> {
        let access = self.jwt.issue(user.id, user.role).map_err(AppError::internal)?;
        let token = refresh::generate();
        let hash = refresh::hash(&token);
        let ttl = chrono::Duration::from_std(self.refresh_ttl).map_err(AppError::internal)?;
        refresh_token::insert(
            conn,
            &NewRefreshToken {
                user_id: user.id,
                family_id: family,
                token_hash: &hash,
                expires_at: Utc::now() + ttl,
            },
        )
        .await?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: token,
            token_type: "Bearer",
            expires_in: self.jwt.ttl_secs(),
            user: user.into(),
        })
    }
}

impl Handler<Login> for UserActor {
    type Result = Reply<TokenPair>;

    fn handle(&mut self, msg: Login, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        Box::pin(async move {
            // Text that is no address (a NUL byte, say) matches nobody and is
            // never sent to the database.
            let found = match crate::domain::Email::parse(&msg.email) {
                Ok(email) => {
                    let mut conn = c.pool.get().await?;
                    user::find_by_email(&mut conn, email.as_str()).await?
                }
                Err(_) => None,
            };
            // Always one Argon2 verification, whether or not the user exists,
            // is active or has a password, so timing reveals nothing.
            let phc = found.as_ref().and_then(|u| u.password_hash.clone());
            let ok = c.hasher.verify(msg.password, phc).await?;
            let Some(user) = found.filter(|u| ok && u.is_active) else {
                return Err(invalid_credentials());
            };
            let mut conn = c.pool.get().await?;
            c.issue_pair(&mut conn, user, Uuid::new_v4()).await
        })
    }
}

impl Handler<Refresh> for UserActor {
    type Result = Reply<TokenPair>;

    fn handle(&mut self, msg: Refresh, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        Box::pin(async move {
            let hash = refresh::hash(msg.refresh_token.trim());
            let mut conn = c.pool.get().await?;
            let c2 = c.clone();
            let outcome = conn
                .transaction::<_, AppError, _>(async move |conn| {
                    match refresh_token::consume(conn, &hash).await? {
                        Some(tok) => {
                            let user = user::find(conn, tok.user_id).await?;
                            match user.filter(|u| u.is_active) {
                                Some(user) => Ok(Ok(c2.issue_pair(conn, user, tok.family_id).await?)),
                                None => Ok(Err(invalid_refresh())),
                            }
                        }
                        None => {
                            // Spent or revoked: a replay. Revoke the whole
                            // login so a stolen token is useless to both sides.
                            if let Some(tok) = refresh_token::find_by_hash(conn, &hash).await? {
                                if tok.used_at.is_some() || tok.revoked_at.is_some() {
                                    let n = refresh_token::revoke_family(conn, tok.family_id).await?;
                                    tracing::warn!(
                                        user_id = tok.user_id,
                                        revoked = n,
                                        "refresh token reuse detected; token family revoked"
                                    );
                                }
                            }
                            Ok(Err(invalid_refresh()))
                        }
                    }
                })
                .await?;
            outcome
        })
    }
}

impl Handler<Logout> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: Logout, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        Box::pin(async move {
            let hash = refresh::hash(msg.refresh_token.trim());
            let mut conn = c.pool.get().await?;
            // Logging out ends that login: its whole token family. A token of
            // another user is left alone (and the answer is the same).
            if let Some(tok) = refresh_token::find_by_hash(&mut conn, &hash).await? {
                if tok.user_id == msg.user_id {
                    refresh_token::revoke_family(&mut conn, tok.family_id).await?;
                }
            }
            Ok(())
        })
    }
}

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

/// Starts a login with the OpenID provider: the URL to send the browser to
/// and the state for its cookie.
#[derive(Message)]
#[rtype(result = "Result<OAuthStart, AppError>")]
pub struct BeginOAuth;

pub struct OAuthStart {
    pub url: String,
    pub state: String,
}

/// Finishes a login from the provider's callback.
#[derive(Message)]
#[rtype(result = "Result<TokenPair, OAuthFailure>")]
pub struct CompleteOAuth {
    pub code: Option<String>,
    pub state: Option<String>,
    /// The state from the browser's cookie.
    pub cookie_state: Option<String>,
    /// `error=` from the provider (consent denied, ...).
    pub provider_error: Option<String>,
}

/// How long a login attempt may take.
pub const OAUTH_STATE_TTL: Duration = Duration::from_secs(600);

fn not_configured() -> AppError {
    AppError::Unavailable(anyhow::anyhow!("OAuth provider is not configured"))
}

impl Handler<BeginOAuth> for UserActor {
    type Result = Reply<OAuthStart>;

    fn handle(&mut self, _: BeginOAuth, _: &mut Context<Self>) -> Self::Result {
        let (pool, provider) = (self.pool.clone(), self.oauth.clone());
        Box::pin(async move {
            let provider = provider.ok_or_else(not_configured)?;
            let start = provider.start();
            let mut conn = pool.get().await?;
            oauth_state::insert(&mut conn, &refresh::hash(&start.state), &start.pkce_verifier).await?;
            Ok(OAuthStart {
                url: start.url,
                state: start.state,
            })
        })
    }
}

/// Constant-time comparison of two states.
fn same_state(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

impl Handler<CompleteOAuth> for UserActor {
    type Result = ResponseFuture<Result<TokenPair, OAuthFailure>>;

    fn handle(&mut self, msg: CompleteOAuth, _: &mut Context<Self>) -> Self::Result {
        let (c, provider) = (self.ctx(), self.oauth.clone());
        Box::pin(async move {
            let server_error = |e: AppError| {
                tracing::error!(error = %e, "OAuth login failed on our side");
                OAuthFailure::ServerError
            };
            let provider = provider.ok_or(OAuthFailure::ServerError)?;
            let state = msg
                .state
                .filter(|s| !s.is_empty() && s.len() <= 512)
                .ok_or(OAuthFailure::InvalidState)?;
            // The state must come back to the browser that started the login.
            if !msg.cookie_state.is_some_and(|cookie| same_state(&cookie, &state)) {
                return Err(OAuthFailure::InvalidState);
            }
            let taken = {
                let mut conn = c.pool.get().await.map_err(|e| server_error(e.into()))?;
                oauth_state::take(&mut conn, &refresh::hash(&state))
                    .await
                    .map_err(|e| server_error(e.into()))?
            };
            let verifier = match taken {
                Taken::Unknown => return Err(OAuthFailure::InvalidState),
                Taken::Reused => return Err(OAuthFailure::StateReused),
                Taken::Fresh { created_at, .. }
                    if chrono::Utc::now() - created_at
                        > chrono::Duration::from_std(OAUTH_STATE_TTL).unwrap_or_default() =>
                {
                    return Err(OAuthFailure::StateExpired)
                }
                Taken::Fresh { verifier, .. } => verifier,
            };
            if msg.provider_error.is_some() {
                return Err(OAuthFailure::AccessDenied);
            }
            let code = msg
                .code
                .filter(|c| !c.is_empty() && c.len() <= 2048)
                .ok_or(OAuthFailure::ProviderError)?;
            let info = provider.user(code, verifier).await?;
            let user = link_or_create(&c, &info).await?;
            let mut conn = c.pool.get().await.map_err(|e| server_error(e.into()))?;
            c.issue_pair(&mut conn, user, Uuid::new_v4())
                .await
                .map_err(server_error)
        })
    }
}

/// Links by Google id first, else by a verified email (clearing the local
/// password and ending its logins), else creates a user without a password.
/// An unverified email is never linked, nor used to create an account (it
/// could pre-claim someone else's address).
async fn link_or_create(c: &Ctx, info: &UserInfo) -> Result<UserRow, OAuthFailure> {
    let fail = |e: diesel::result::Error| {
        tracing::error!(error = %e, "OAuth account lookup failed");
        OAuthFailure::ServerError
    };
    let mut conn = c.pool.get().await.map_err(|e| {
        tracing::error!(error = %e, "OAuth account lookup failed");
        OAuthFailure::ServerError
    })?;
    let active = |u: UserRow| {
        if u.is_active {
            Ok(u)
        } else {
            Err(OAuthFailure::AccountDisabled)
        }
    };
    if let Some(u) = user::find_by_google_id(&mut conn, &info.sub)
        .await
        .map_err(fail)?
    {
        return active(u);
    }
    let email = info
        .email
        .as_deref()
        .and_then(|e| Email::parse(e).ok())
        .ok_or(OAuthFailure::EmailMissing)?;
    if !info.email_verified {
        return Err(OAuthFailure::EmailNotVerified);
    }
    if let Some(existing) = user::find_by_email(&mut conn, email.as_str())
        .await
        .map_err(fail)?
    {
        if existing.google_id.is_some() {
            // Linked to another Google account already.
            return Err(OAuthFailure::AccountDisabled);
        }
        // The local account's email was never verified; the provider's is.
        // The owner of the verified email wins: the password goes, and every
        // login made with it ends, in the same transaction as the link.
        let existing = active(existing)?;
        let (id, sub) = (existing.id, info.sub.clone());
        return conn
            .transaction::<_, diesel::result::Error, _>(async move |conn| {
                let linked = user::link_google(conn, id, &sub).await?;
                refresh_token::revoke_all_for_user(conn, id).await?;
                Ok(linked)
            })
            .await
            .map_err(fail);
    }
    let fallback = email.as_str().split('@').next().unwrap_or("User").to_owned();
    let name = info
        .name
        .as_deref()
        .and_then(|n| UserName::parse(n).ok())
        .or_else(|| UserName::parse(&fallback).ok())
        .or_else(|| UserName::parse("Google user").ok())
        .ok_or(OAuthFailure::ServerError)?;
    let new = NewUser {
        email: email.as_str(),
        password_hash: None,
        name: name.as_str(),
        role: Role::User,
        google_id: Some(&info.sub),
    };
    match user::insert(&mut conn, &new).await {
        Ok(u) => Ok(u),
        // A concurrent login created it first: use that one.
        Err(e)
            if is_unique_violation(&e, "users_email_key")
                || is_unique_violation(&e, "users_google_id_key") =>
        {
            user::find_by_google_id(&mut conn, &info.sub)
                .await
                .map_err(fail)?
                .ok_or(OAuthFailure::ServerError)
        }
        Err(e) => Err(fail(e)),
    }
}
