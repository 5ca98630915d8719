//! Every way a request can fail, with its HTTP status and Usergrid error code.

use crate::store::StoreError;
use gridsocket_core::presence::PresencePathError;
use gridsocket_core::{PathError, QueryError};

/// A failed request. Its [`status`](ApiError::status) and [`code`](ApiError::code) become the
/// Usergrid error body `{"error", "error_description", "timestamp", "duration"}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No valid credentials for something that needs them (401 `unauthorized`).
    #[error("{0}")]
    Unauthorized(String),
    /// The token is unknown or malformed (401 `auth_bad_access_token`).
    #[error("unable to authenticate due to corrupt or unknown access token")]
    BadToken,
    /// The token has expired (401 `expired_token`).
    #[error("access token has expired")]
    ExpiredToken,
    /// The token's user is not activated (401 `auth_unactivated_appuser`).
    #[error("the user is not activated")]
    UserNotActivated,
    /// The token's user is disabled (401 `auth_disabled_appuser`).
    #[error("the user is disabled")]
    UserDisabled,
    /// The client id or secret is wrong (401 `invalid_client`).
    #[error("invalid client id or secret")]
    InvalidClient,
    /// Authenticated, but not allowed (403 `forbidden`).
    #[error("{0}")]
    Forbidden(String),
    /// The organization or application does not exist (404).
    #[error("could not find organization/application {0:?}")]
    AppNotFound(String),
    /// No such entity (404 `entity_not_found`).
    #[error("{0}")]
    NotFound(String),
    /// The path names nothing the API serves (404 `service_resource_not_found`).
    #[error("{0}")]
    NoSuchResource(String),
    /// The path cannot be parsed (400 `illegal_argument`).
    #[error("bad path: {0}")]
    Path(#[from] PathError),
    /// The path can have no presence or broadcasts (400 `illegal_argument`).
    #[error("{0}")]
    PresencePath(#[from] PresencePathError),
    /// The `ql` cannot be parsed (400 `query_parse`).
    #[error("bad query: {0}")]
    Query(#[from] QueryError),
    /// A parameter or body value is wrong (400 `illegal_argument`).
    #[error("{0}")]
    IllegalArgument(String),
    /// The body is not the JSON the call needs (400 `json_parse`).
    #[error("{0}")]
    BadBody(String),
    /// A required property is missing (400 `required_property_not_found`).
    #[error("required property {0:?} is missing")]
    RequiredProperty(&'static str),
    /// A unique name is taken (400 `duplicate_unique_property_exists`).
    #[error("{0} already exists")]
    Duplicate(String),
    /// An organization or application name is taken (409).
    #[error("{0} already exists")]
    Conflict(String),
    /// Wrong username or password, or a bad grant (400 `invalid_grant`).
    #[error("{0}")]
    InvalidGrant(String),
    /// The old password given to change a password is wrong (400
    /// `auth_invalid_username_or_password`).
    #[error("the old password is wrong")]
    WrongOldPassword,
    /// A grant type this endpoint does not take (400 `unsupported_grant_type`).
    #[error("unsupported grant type {0:?}")]
    UnsupportedGrant(String),
    /// The method is not served on this path (405 `unsupported_service_operation`).
    #[error("{0} is not supported on this path")]
    MethodNotAllowed(&'static str),
    /// The entity is larger than `--max-entity-bytes` (413 `entity_too_large`).
    #[error("the entity is {size} bytes of JSON; at most {limit} are stored")]
    EntityTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many failed logins for this username or from this address (429
    /// `too_many_attempts`, with `Retry-After`).
    #[error("too many failed attempts: retry in {retry_after} s")]
    TooManyAttempts {
        /// Seconds until an attempt is allowed again.
        retry_after: u64,
    },
    /// The server holds as much of this kind of work as it takes; retry shortly (503
    /// `server_busy`, with `Retry-After`).
    #[error("{0}")]
    Busy(&'static str),
    /// Storage failed (500 `internal_error`); details go to the log, not the client.
    #[error("internal error")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Unauthorized(_)
            | ApiError::BadToken
            | ApiError::ExpiredToken
            | ApiError::UserNotActivated
            | ApiError::UserDisabled
            | ApiError::InvalidClient => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::AppNotFound(_) | ApiError::NotFound(_) | ApiError::NoSuchResource(_) => 404,
            ApiError::Path(_)
            | ApiError::PresencePath(_)
            | ApiError::Query(_)
            | ApiError::IllegalArgument(_)
            | ApiError::BadBody(_)
            | ApiError::RequiredProperty(_)
            | ApiError::Duplicate(_)
            | ApiError::InvalidGrant(_)
            | ApiError::WrongOldPassword
            | ApiError::UnsupportedGrant(_) => 400,
            ApiError::Conflict(_) => 409,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::EntityTooLarge { .. } => 413,
            ApiError::TooManyAttempts { .. } => 429,
            ApiError::Busy(_)
            | ApiError::Store(StoreError::Busy)
            | ApiError::Store(StoreError::Unavailable(_)) => 503,
            ApiError::Store(StoreError::Duplicate(_)) => 400,
            ApiError::Store(StoreError::Full | StoreError::ReadOnly) => 507,
            ApiError::Store(StoreError::Timeout) => 504,
            ApiError::Store(StoreError::TooExpensive(_)) => 400,
            ApiError::Store(_) => 500,
        }
    }

    /// The Usergrid error code (`error` field).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadToken => "auth_bad_access_token",
            ApiError::ExpiredToken => "expired_token",
            ApiError::UserNotActivated => "auth_unactivated_appuser",
            ApiError::UserDisabled => "auth_disabled_appuser",
            ApiError::InvalidClient => "invalid_client",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::AppNotFound(_) => "organization_application_not_found",
            ApiError::NotFound(_) => "entity_not_found",
            ApiError::NoSuchResource(_) => "service_resource_not_found",
            ApiError::Path(_) | ApiError::PresencePath(_) | ApiError::IllegalArgument(_) => {
                "illegal_argument"
            }
            ApiError::Query(_) => "query_parse",
            ApiError::BadBody(_) => "json_parse",
            ApiError::RequiredProperty(_) => "required_property_not_found",
            ApiError::Duplicate(_) | ApiError::Store(StoreError::Duplicate(_)) => {
                "duplicate_unique_property_exists"
            }
            ApiError::Conflict(_) => "conflict",
            ApiError::InvalidGrant(_) => "invalid_grant",
            ApiError::WrongOldPassword => "auth_invalid_username_or_password",
            ApiError::UnsupportedGrant(_) => "unsupported_grant_type",
            ApiError::MethodNotAllowed(_) => "unsupported_service_operation",
            ApiError::EntityTooLarge { .. } => "entity_too_large",
            ApiError::TooManyAttempts { .. } => "too_many_attempts",
            ApiError::Busy(_) | ApiError::Store(StoreError::Busy) => "server_busy",
            ApiError::Store(StoreError::Unavailable(_)) => "store_unavailable",
            ApiError::Store(StoreError::Full) => "storage_full",
            ApiError::Store(StoreError::ReadOnly) => "storage_read_only",
            ApiError::Store(StoreError::Timeout) => "query_timeout",
            ApiError::Store(StoreError::TooExpensive(_)) => "query_too_expensive",
            ApiError::Store(_) => "internal_error",
        }
    }

    /// Seconds the client should wait before retrying, when the error says so.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManyAttempts { retry_after } => Some(*retry_after),
            ApiError::Busy(_)
            | ApiError::Store(StoreError::Busy)
            | ApiError::Store(StoreError::Unavailable(_)) => Some(1),
            _ => None,
        }
    }

    /// The human description (`error_description` field).
    pub fn description(&self) -> String {
        match self {
            ApiError::Store(StoreError::Duplicate(what)) => format!("{what} already exists"),
            ApiError::Store(StoreError::Full) => {
                "the server's disk is full: nothing was written; retry later".into()
            }
            ApiError::Store(StoreError::ReadOnly) => {
                "the server's storage is read-only: nothing was written".into()
            }
            ApiError::Store(StoreError::Timeout) => {
                "the query took longer than the server's query time limit: narrow it".into()
            }
            ApiError::Store(StoreError::Busy) => {
                "the server's database is busy: nothing was done; retry shortly".into()
            }
            ApiError::Store(StoreError::Unavailable(_)) => {
                "the server cannot reach its database: nothing was done; retry shortly".into()
            }
            ApiError::Store(StoreError::TooExpensive(n)) => format!(
                "the query read {n} entities that do not match without filling its page: the \
                 index cannot narrow \
                 it enough (a `not`, or a filter on one property and an order on another); \
                 add a condition on an indexed property, such as `k = v`, a range, or a range \
                 on the order by key"
            ),
            other => other.to_string(),
        }
    }
}

impl From<gridsocket_core::route::RouteError> for ApiError {
    fn from(e: gridsocket_core::route::RouteError) -> Self {
        match e {
            gridsocket_core::route::RouteError::MethodNotAllowed(m) => {
                ApiError::MethodNotAllowed(m)
            }
            gridsocket_core::route::RouteError::NoSuchResource(what) => {
                ApiError::NoSuchResource(what.to_owned())
            }
            other => ApiError::NoSuchResource(other.to_string()),
        }
    }
}
