//! Ending and re-reading sockets whose credentials changed: revoked tokens, renamed,
//! disabled or deleted users, a bus outage that may have hidden a revocation, and `AUTH`.

use super::Realtime;
use super::hub::ConnHandle;
use crate::api::{ApiError, ApiResponse, Caller, Presenter, user_may_log_in};
use crate::store::EntityKey;
use std::time::Instant;

impl Realtime {
    /// Ends every socket of a user whose tokens were revoked, but the one using the kept
    /// token `except`: each subscription gets a `revoked` event, then the socket closes with
    /// 4401.
    pub(super) fn close_user_sockets(&self, user_uuid: &str, except: Option<[u8; 32]>) {
        self.hub.close_where(
            |c| {
                c.caller.user_uuid() == Some(user_uuid)
                    && (except.is_none() || c.caller.token() != except)
            },
            "token revoked",
        );
    }

    /// Re-reads a user whose username, email, activation or disabled flag changed: the
    /// sockets of a user who may no longer act close (4401); the others speak for the user as
    /// they are now, and every subscription is re-checked.
    pub(super) async fn refresh_user(&self, app: &str, user: &str) {
        let found = self
            .api
            .store()
            .entity(app, Some("users"), EntityKey::Uuid(user))
            .await;
        let mine = |c: &ConnHandle| c.caller.user_uuid() == Some(user);
        match found {
            Ok(Some(u)) if user_may_log_in(&u).is_ok() => {
                let name = u.name.unwrap_or_default();
                for caller in self.hub.callers(mine) {
                    caller.set_username(&name);
                }
                self.hub.request_revalidation();
            }
            Ok(_) => self.hub.close_where(mine, "user disabled or deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "could not re-read a changed user; closing their sockets");
                self.hub.close_where(mine, "user changed");
            }
        }
    }

    /// Re-checks, after a bus outage, the tokens of this node's sockets: a socket whose token
    /// was revoked meanwhile is closed as if the revocation's signal had arrived.
    pub(super) async fn recheck_socket_tokens(&self) {
        for hash in self.hub.tokens() {
            match self.api.store().token(&hash).await {
                Ok(Some(_)) => {}
                Ok(None) => self
                    .hub
                    .close_where(|c| c.caller.token() == Some(hash), "token revoked"),
                Err(e) => tracing::warn!(error = %e, "could not re-check a socket's token"),
            }
        }
    }

    /// Checks a token sent with `AUTH` on a socket: it must speak for the same principal.
    /// Returns its expiry (ms since the epoch).
    pub async fn reauthenticate(
        &self,
        caller: &Caller,
        token: &str,
    ) -> Result<Option<i64>, ApiResponse> {
        let started = Instant::now();
        let who = match self.api.principal_of_token(token, Presenter::Socket).await {
            Ok(who) => who,
            Err(e) => return Err(self.api.error_response(e, started)),
        };
        if who.principal != *caller.principal() {
            return Err(self.api.error_response(
                ApiError::Forbidden(
                    "AUTH must keep the same user; open a new socket for another".into(),
                ),
                started,
            ));
        }
        caller.set_token(crate::api::auth::token_hash(token));
        Ok(who.expires)
    }
}
