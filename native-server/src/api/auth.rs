//! Credentials, password hashing and access tokens.
//!
//! Tokens are 256 random bits, base64url; only their SHA-256 is stored, so a copy of the
//! database lets no one in. Passwords are hashed with Argon2id.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gridsocket_core::Params;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// What a request presented to prove who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing: the caller is a guest.
    None,
    /// An access token (query `access_token` first, then `Authorization: Bearer`).
    Token(String),
    /// A client id and secret (query params or `Authorization: Basic`).
    Client {
        /// Client id.
        id: String,
        /// Client secret.
        secret: String,
    },
}

impl std::fmt::Debug for Credentials {
    // Never print a secret, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Client { id, .. } => write!(f, "Client({id}, <redacted>)"),
        }
    }
}

impl Credentials {
    /// Reads credentials the way Usergrid does: `access_token` param, then the bearer header,
    /// then `client_id` + `client_secret`, then basic auth.
    pub fn from_request(params: &Params, authorization: Option<&str>) -> Credentials {
        if let Some(t) = params.get("access_token").filter(|t| !t.is_empty()) {
            return Credentials::Token(t.to_owned());
        }
        let header = authorization.map(str::trim).unwrap_or("");
        if let Some(t) = strip_scheme(header, "bearer") {
            return Credentials::Token(t.to_owned());
        }
        if let (Some(id), Some(secret)) = (params.get("client_id"), params.get("client_secret")) {
            return Credentials::Client {
                id: id.to_owned(),
                secret: secret.to_owned(),
            };
        }
        if let Some(b64) = strip_scheme(header, "basic")
            && let Ok(raw) = STANDARD.decode(b64)
            && let Ok(text) = String::from_utf8(raw)
            && let Some((id, secret)) = text.split_once(':')
        {
            return Credentials::Client {
                id: id.to_owned(),
                secret: secret.to_owned(),
            };
        }
        Credentials::None
    }
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.split_once(' ')?;
    (s.eq_ignore_ascii_case(scheme) && !rest.trim().is_empty()).then(|| rest.trim())
}

/// Hashes a password with Argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    fill_random(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .unwrap_or_else(|_| SaltString::from_b64("c2FsdHNhbHRzYWx0").expect("static salt"));
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// A stable Argon2id digest of the superuser's name and password, kept with each superuser
/// token: a token is honoured only while the server runs with the credentials it was issued
/// under, so changing `--superuser` (or removing it) ends every superuser token. The salt
/// comes from the name, so every node computes the same digest; being Argon2id, a copy of the
/// token table is no shortcut to the password.
pub fn superuser_fingerprint(name: &str, password: &str) -> String {
    let digest = Sha256::digest(format!("gridsocket superuser {name}").as_bytes());
    let salt = SaltString::encode_b64(&digest[..16])
        .unwrap_or_else(|_| SaltString::from_b64("c2FsdHNhbHRzYWx0").expect("static salt"));
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// True when `password` matches the PHC hash.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The client an address stands for, for per-client limits: an IPv4 address, or an IPv6
/// address's /64 (one host usually holds a whole /64, so per-/128 limits would not limit it).
pub fn client_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        std::net::IpAddr::V6(v6) => std::net::IpAddr::V4(
            v6.to_ipv4_mapped()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        ),
        v4 => v4,
    }
}

/// Fills a buffer from the OS random source.
pub fn fill_random(buf: &mut [u8]) {
    // The OS source failing is not recoverable for a server that issues secrets.
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// A new random secret: `bytes` random bytes, base64url.
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A token hash as text (for signals between nodes).
pub fn hash_text(hash: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(hash)
}

/// Reads [`hash_text`] back.
pub fn hash_from_text(text: &str) -> Option<[u8; 32]> {
    URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()
}

/// Compares secrets in time independent of where they differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (token_hash(a), token_hash(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A bounded map from token hash to what it resolved to, so that a REST call with a known
/// token skips the database. When full it is emptied (tokens then reload on use).
pub struct TokenCache<V> {
    map: Mutex<HashMap<[u8; 32], V>>,
    capacity: usize,
}

impl<V: Clone> TokenCache<V> {
    /// A cache of at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            map: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The cached value of a token.
    pub fn get(&self, hash: &[u8; 32]) -> Option<V> {
        self.lock().get(hash).cloned()
    }

    /// Caches a value.
    pub fn insert(&self, hash: [u8; 32], value: V) {
        let mut map = self.lock();
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(hash, value);
    }

    /// Drops every entry the predicate selects, given the token's hash and its value
    /// (revocation).
    pub fn remove_where(&self, mut pred: impl FnMut(&[u8; 32], &V) -> bool) {
        self.lock().retain(|k, v| !pred(k, v));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], V>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Failed attempts per key (a username, a client address): each key has a bucket of
/// `per_minute` failures that refills evenly over a minute. A key whose bucket is empty is
/// refused before its credentials are even checked, so guessing stays at `per_minute` tries
/// a minute however fast an attacker asks. Memory is bounded: full buckets are forgotten
/// when the map grows, and past [`Throttle::MAX_KEYS`] the oldest are.
pub struct Throttle<K> {
    per_minute: u32,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Failures still allowed, as of `at`.
    left: f64,
    at: std::time::Instant,
}

impl<K: std::hash::Hash + Eq + Clone> Throttle<K> {
    /// Most keys remembered at once.
    pub const MAX_KEYS: usize = 100_000;

    /// A throttle allowing `per_minute` failures per key per minute; 0 allows any number.
    pub fn new(per_minute: u32) -> Self {
        Throttle {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, b: Bucket, now: std::time::Instant) -> f64 {
        let rate = f64::from(self.per_minute) / 60.0;
        (b.left + now.saturating_duration_since(b.at).as_secs_f64() * rate)
            .min(f64::from(self.per_minute))
    }

    /// Takes one failure from `key`'s allowance before an attempt is checked, or
    /// `Err(seconds to wait)` when none is left. Taking first, and giving it back with
    /// [`Throttle::refund`] once the attempt succeeds, means that attempts made at once are
    /// counted at once: a burst of concurrent guesses cannot all pass a check made before any
    /// of them failed.
    pub fn take(&self, key: &K, now: std::time::Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= Self::MAX_KEYS && !buckets.contains_key(key) {
            let full = f64::from(self.per_minute);
            buckets.retain(|_, b| self.refilled(*b, now) < full);
            if buckets.len() >= Self::MAX_KEYS {
                // Still full of keys under attack: forget the oldest half.
                let mut ages: Vec<_> = buckets.values().map(|b| b.at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                buckets.retain(|_, b| b.at > cut);
            }
        }
        let left = match buckets.get(key) {
            Some(b) => self.refilled(*b, now),
            None => f64::from(self.per_minute),
        };
        if left < 1.0 {
            let rate = f64::from(self.per_minute) / 60.0;
            return Err(((1.0 - left) / rate).ceil().max(1.0) as u64);
        }
        buckets.insert(
            key.clone(),
            Bucket {
                left: left - 1.0,
                at: now,
            },
        );
        Ok(())
    }

    /// Gives back what [`Throttle::take`] took: the attempt succeeded.
    pub fn refund(&self, key: &K, now: std::time::Instant) {
        if self.per_minute == 0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = buckets.get(key).copied() {
            let left = (self.refilled(b, now) + 1.0).min(f64::from(self.per_minute));
            buckets.insert(key.clone(), Bucket { left, at: now });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_precedence() {
        let p = Params::from_query_string("access_token=q&client_id=i&client_secret=s");
        assert_eq!(
            Credentials::from_request(&p, Some("Bearer h")),
            Credentials::Token("q".into())
        );
        let p = Params::from_query_string("client_id=i&client_secret=s");
        assert_eq!(
            Credentials::from_request(&p, Some("Bearer h")),
            Credentials::Token("h".into())
        );
        assert_eq!(
            Credentials::from_request(&p, None),
            Credentials::Client {
                id: "i".into(),
                secret: "s".into()
            }
        );
        let basic = format!("Basic {}", STANDARD.encode("a:b"));
        assert_eq!(
            Credentials::from_request(&Params::new(), Some(&basic)),
            Credentials::Client {
                id: "a".into(),
                secret: "b".into()
            }
        );
        assert_eq!(
            Credentials::from_request(&Params::new(), Some("Bearer ")),
            Credentials::None
        );
        assert_eq!(
            format!("{:?}", Credentials::Token("secret".into())),
            "Token(<redacted>)"
        );
    }

    #[test]
    fn failures_are_throttled_per_key_and_refill() {
        let t = Throttle::new(6);
        let start = std::time::Instant::now();
        for _ in 0..6 {
            assert_eq!(t.take(&"john", start), Ok(()));
        }
        // One failure comes back every ten seconds.
        assert_eq!(t.take(&"john", start), Err(10));
        assert_eq!(t.take(&"jane", start), Ok(()));
        let later = start + std::time::Duration::from_secs(10);
        assert_eq!(t.take(&"john", later), Ok(()));
        assert!(t.take(&"john", later).is_err());
        let unlimited = Throttle::new(0);
        for _ in 0..100 {
            assert_eq!(unlimited.take(&"x", start), Ok(()));
        }
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(client_of(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_of(ip("2001:db8:1:2:ffff::1")),
            client_of(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            client_of(ip("2001:db8:1:3::1")),
            client_of(ip("2001:db8:1:2::1"))
        );
        assert_eq!(client_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_of(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn attempts_in_flight_count_until_they_succeed() {
        let t = Throttle::new(3);
        let now = std::time::Instant::now();
        // Three attempts at once use the allowance up before any is decided ...
        for _ in 0..3 {
            assert_eq!(t.take(&"john", now), Ok(()));
        }
        assert!(t.take(&"john", now).is_err(), "a fourth waits");
        // ... and the ones that succeed give theirs back.
        t.refund(&"john", now);
        t.refund(&"john", now);
        assert_eq!(t.take(&"john", now), Ok(()));
        assert_eq!(t.take(&"john", now), Ok(()));
        assert!(t.take(&"john", now).is_err());
        t.refund(&"nobody", now);
        for _ in 0..3 {
            t.refund(&"john", now);
        }
        for _ in 0..3 {
            assert_eq!(
                t.take(&"john", now),
                Ok(()),
                "refunds never pass the allowance"
            );
        }
        assert!(t.take(&"john", now).is_err());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("s3cret");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("other", &h));
        assert!(!verify_password("s3cret", "garbage"));
    }
}
