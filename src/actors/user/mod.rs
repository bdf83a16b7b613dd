//! UserActor: users, credentials and tokens.
//!
//! Handles: `Register`, `Login`, `Refresh`, `Logout`, `GetUser`, `ListUsers`,
//! `UpdateUser`, `ChangeRole`, `DeleteUser`, `Ping`.
//!
//! Files: this one holds the actor, its messages and registration;
//! `credentials.rs` logins and refresh tokens; `accounts.rs` reading and
//! changing accounts; `oauth.rs` the Google sign-in.
//!
//! Every message runs as a `ResponseFuture` beside the actor: the mailbox keeps
//! flowing while a query or an Argon2 hash is in progress. The actor owns its
//! own pool (`database.pools.user`), so a login storm cannot take connections
//! from order placement.

mod accounts;
mod credentials;
mod oauth;

use std::{future::Future, sync::Arc, time::Duration};

use actix::prelude::*;
use chrono::Utc;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    actors::{guarded, guarded_or, PanicNextMessage},
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
    panic_next: bool,
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
            panic_next: false,
        }
    }

    /// Enables login through an OpenID provider.
    pub fn with_oauth(mut self, provider: Option<Arc<Provider>>) -> Self {
        self.oauth = provider;
        self
    }

    /// A handler's work, run through `actors::guarded` (a panic answers
    /// 503 and the actor goes on).
    fn reply<T: 'static>(&mut self, work: impl Future<Output = Result<T, AppError>> + 'static) -> Reply<T> {
        let panic = std::mem::take(&mut self.panic_next);
        guarded("UserActor", async move {
            if panic {
                panic!("injected panic in a UserActor handler");
            }
            work.await
        })
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
        self.reply(async move {
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

pub use oauth::{BeginOAuth, CompleteOAuth, OAuthStart, OAUTH_STATE_TTL};

impl Handler<PanicNextMessage> for UserActor {
    type Result = ();

    fn handle(&mut self, _: PanicNextMessage, _: &mut Context<Self>) {
        self.panic_next = true;
    }
}
