//! Passwords and logins: Argon2id rationed to a few at once (each takes about 19 MiB), a
//! check against a dummy hash for unknown users so that timing tells nothing about who exists,
//! and failed logins throttled per username and per client address.

use super::{Api, ApiError};
use crate::api::auth::{
    Throttle, client_of, hash_password, random_secret, secrets_equal, superuser_fingerprint,
    verify_password,
};
use std::net::IpAddr;
use std::time::Instant;
use tokio::sync::Semaphore;

/// What the service keeps for checking passwords.
pub(super) struct Logins {
    /// Argon2id runs at once.
    checks: Semaphore,
    /// Hashes of new passwords at once: one fewer than `checks`, so that a flood of sign-ups
    /// never takes every turn from the logins.
    hashes: Semaphore,
    /// Sign-ups per client address.
    signups: Throttle<IpAddr>,
    /// The hash an unknown user's password is checked against (it never matches).
    dummy: String,
    /// The bootstrap superuser's name and password hash.
    superuser: Option<(String, String)>,
    /// What the superuser's tokens must carry to be honoured ([`superuser_fingerprint`]).
    superuser_fingerprint: Option<String>,
    /// Failures per (scope, lower-case login): an app's users and the admins apart.
    per_user: Throttle<(String, String)>,
    /// Failures per client address.
    per_address: Throttle<IpAddr>,
}

/// Who a login attempt is for, for throttling: the scope (an app uuid, or `management`) and
/// the login name.
pub(super) type LoginKey<'a> = Option<(&'a str, &'a str)>;

impl Logins {
    /// Hashes the superuser's password now: the plain text is not kept.
    pub(super) fn new(
        superuser: Option<(String, String)>,
        per_user: u32,
        per_address: u32,
        signups: u32,
        checks: usize,
    ) -> Logins {
        Logins {
            checks: Semaphore::new(checks.max(1)),
            hashes: Semaphore::new(checks.saturating_sub(1).max(1)),
            signups: Throttle::new(signups),
            dummy: hash_password(&random_secret(16)),
            superuser_fingerprint: superuser
                .as_ref()
                .map(|(name, password)| superuser_fingerprint(name, password)),
            superuser: superuser.map(|(name, password)| (name, hash_password(&password))),
            per_user: Throttle::new(per_user),
            per_address: Throttle::new(per_address),
        }
    }
}

fn user_key(key: LoginKey<'_>) -> Option<(String, String)> {
    key.map(|(scope, name)| (scope.to_owned(), name.to_lowercase()))
}

impl Api {
    /// Hashes a password off the async threads, a few at a time.
    pub(super) async fn hash_password(&self, password: String) -> Result<String, ApiError> {
        let _hashing = self.logins.hashes.acquire().await;
        let _turn = self.logins.checks.acquire().await;
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ApiError::Store(crate::store::StoreError::Backend(Box::new(e))))
    }

    /// Checks a password against a stored hash (`None`: no such user, or no password: the
    /// dummy hash is checked instead and the answer is false), off the async threads, a few
    /// at a time.
    pub(super) async fn verify_password(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, ApiError> {
        let known = hash.as_ref().is_some_and(|h| !h.is_empty());
        let hash = hash
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| self.logins.dummy.clone());
        let _turn = self.logins.checks.acquire().await;
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(|e| ApiError::Store(crate::store::StoreError::Backend(Box::new(e))))?;
        Ok(ok && known)
    }

    /// The superuser's name, if `login` is it (compared in constant time).
    pub(super) fn superuser_named(&self, login: &str) -> Option<(&str, &str)> {
        self.logins
            .superuser
            .as_ref()
            .filter(|(name, _)| secrets_equal(name, login))
            .map(|(name, hash)| (name.as_str(), hash.as_str()))
    }

    /// Counts a sign-up from `address`, or refuses it when the address has used up its
    /// sign-ups for now.
    pub(super) fn signup_allowed(&self, address: Option<IpAddr>) -> Result<(), ApiError> {
        match address.map(client_of) {
            Some(ip) => self
                .logins
                .signups
                .take(&ip, Instant::now())
                .map_err(|wait| ApiError::TooManyAttempts { retry_after: wait }),
            None => Ok(()),
        }
    }

    /// What a superuser token must carry now; `None` when the server has no superuser.
    pub(super) fn superuser_fingerprint(&self) -> Option<&str> {
        self.logins.superuser_fingerprint.as_deref()
    }

    /// Starts a login attempt from `address`, or for `key`: it counts as a failure of both
    /// from now on, unless [`LoginAttempt::succeeded`] says otherwise. Refused when either has
    /// used up its failures. Call before checking the credentials.
    pub(super) fn login_attempt(
        &self,
        address: Option<IpAddr>,
        key: LoginKey<'_>,
    ) -> Result<LoginAttempt<'_>, ApiError> {
        let now = Instant::now();
        let address = address.map(client_of);
        let user = user_key(key);
        let by_address = address.map_or(Ok(()), |ip| self.logins.per_address.take(&ip, now));
        let by_user = match (&by_address, &user) {
            (Ok(()), Some(k)) => self.logins.per_user.take(k, now),
            _ => Ok(()),
        };
        match (by_address, by_user) {
            (Ok(()), Ok(())) => Ok(LoginAttempt {
                logins: &self.logins,
                address,
                user,
            }),
            (Err(wait), _) => Err(ApiError::TooManyAttempts { retry_after: wait }),
            (Ok(()), Err(wait)) => {
                if let Some(ip) = address {
                    self.logins.per_address.refund(&ip, now);
                }
                Err(ApiError::TooManyAttempts { retry_after: wait })
            }
        }
    }
}

/// A login attempt under way: counted as a failed one unless it succeeds.
#[must_use = "a login attempt counts as failed unless `succeeded` is called"]
pub(super) struct LoginAttempt<'a> {
    logins: &'a Logins,
    address: Option<IpAddr>,
    user: Option<(String, String)>,
}

impl LoginAttempt<'_> {
    /// The credentials were right: the attempt is not a failure.
    pub(super) fn succeeded(self) {
        let now = Instant::now();
        if let Some(ip) = &self.address {
            self.logins.per_address.refund(ip, now);
        }
        if let Some(k) = &self.user {
            self.logins.per_user.refund(k, now);
        }
    }
}
