//! `Login`, `Refresh`, `Logout`: credentials in, token pairs out.

use super::*;

impl Handler<Login> for UserActor {
    type Result = Reply<TokenPair>;

    fn handle(&mut self, msg: Login, _: &mut Context<Self>) -> Self::Result {
        let c = self.ctx();
        self.reply(async move {
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
        self.reply(async move {
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
        self.reply(async move {
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
