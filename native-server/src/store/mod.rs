//! Storage behind a trait: the embedded SQLite store by default, PostgreSQL for several nodes.
//!
//! The store knows records and pages, not HTTP: the service layer turns requests into these
//! calls. Every write that returns `Ok` is durable.

pub mod contract;
pub mod index;
mod plan;
mod postgres;
mod rows;
pub mod search;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use gridsocket_core::Query;
use gridsocket_core::subscription::{Change, ChangeKind};
use serde_json::{Map, Value};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique name (org, app, username, entity name) is taken.
    #[error("{0} already exists")]
    Duplicate(String),
    /// The disk is full: nothing was written; retry once space is freed.
    #[error("the store's disk is full")]
    Full,
    /// The store is read-only (a read-only data dir or database): nothing was written.
    #[error("the store is read-only")]
    ReadOnly,
    /// A query ran past its time limit (`--query-timeout-secs`): nothing was changed; a
    /// narrower query may answer in time.
    #[error("the query took longer than its time limit")]
    Timeout,
    /// A query read more entities that do not match than a page may (`--max-query-rows`)
    /// before its page was full: its filter or order cannot use the index enough. Nothing was
    /// changed.
    #[error("the query read more than {0} entities that do not match for one page")]
    TooExpensive(usize),
    /// No connection to the database came free in time: the node has more work for it than
    /// it can take. Nothing was done; retry shortly.
    #[error("no connection to the database came free in time")]
    Busy,
    /// The database cannot be reached (a new connection to it failed): nothing was done;
    /// retry shortly.
    #[error("the database cannot be reached: {0}")]
    Unavailable(String),
    /// The backend failed; the request can be retried.
    #[error("storage failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// The same error again, for each write a failed group commit took with it.
    pub(crate) fn again(&self) -> StoreError {
        match self {
            StoreError::Duplicate(what) => StoreError::Duplicate(what.clone()),
            StoreError::Full => StoreError::Full,
            StoreError::ReadOnly => StoreError::ReadOnly,
            StoreError::Timeout => StoreError::Timeout,
            StoreError::TooExpensive(n) => StoreError::TooExpensive(*n),
            StoreError::Busy => StoreError::Busy,
            StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
            StoreError::Backend(e) => StoreError::Backend(e.to_string().into()),
        }
    }
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// An organization.
#[derive(Clone, Debug)]
pub struct OrgRecord {
    /// Its uuid.
    pub uuid: String,
    /// Its unique name.
    pub name: String,
    /// Organization client id (`client_credentials` grant on `/management/token`).
    pub client_id: String,
    /// Organization client secret.
    pub client_secret: String,
    /// Creation time, ms since the epoch.
    pub created: i64,
}

/// An organization administrator.
#[derive(Clone, Debug)]
pub struct AdminRecord {
    /// Its uuid.
    pub uuid: String,
    /// Unique login name.
    pub username: String,
    /// Unique email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// PHC-format password hash.
    pub password_hash: String,
    /// Creation time, ms since the epoch.
    pub created: i64,
}

/// An application inside an organization.
#[derive(Clone, Debug)]
pub struct AppRecord {
    /// Its uuid.
    pub uuid: String,
    /// The owning organization's uuid.
    pub org_uuid: String,
    /// The owning organization's name.
    pub org_name: String,
    /// Its name, unique in the organization.
    pub name: String,
    /// Application client id (`client_credentials` grant on `/{org}/{app}/token`).
    pub client_id: String,
    /// Application client secret.
    pub client_secret: String,
    /// Creation time, ms since the epoch.
    pub created: i64,
}

/// Who a token speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// The server's bootstrap superuser.
    Superuser,
    /// An organization admin (subject: admin uuid).
    Admin,
    /// An organization client (subject: org uuid).
    OrgClient,
    /// An application client (subject: app uuid).
    AppClient,
    /// An application user (subject: user uuid, scope: app uuid).
    AppUser,
}

impl TokenKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Superuser => "superuser",
            TokenKind::Admin => "admin",
            TokenKind::OrgClient => "org_client",
            TokenKind::AppClient => "app_client",
            TokenKind::AppUser => "app_user",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<TokenKind> {
        Some(match s {
            "superuser" => TokenKind::Superuser,
            "admin" => TokenKind::Admin,
            "org_client" => TokenKind::OrgClient,
            "app_client" => TokenKind::AppClient,
            "app_user" => TokenKind::AppUser,
            _ => return None,
        })
    }
}

/// An issued access token; only its SHA-256 is stored, never the token.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    /// SHA-256 of the token string.
    pub hash: [u8; 32],
    /// Whose token it is.
    pub kind: TokenKind,
    /// The principal's uuid (see [`TokenKind`]).
    pub subject: String,
    /// The app or org the token is for; for the superuser, the fingerprint of the credentials
    /// it was issued under.
    pub scope: String,
    /// Issue time, ms since the epoch.
    pub created: i64,
    /// Expiry, ms since the epoch.
    pub expires: i64,
}

/// One stored entity.
#[derive(Clone, Debug, PartialEq)]
pub struct Entity {
    /// Its uuid.
    pub uuid: String,
    /// Canonical collection name.
    pub collection: String,
    /// Its unique name in the collection (username for users, path for groups), if any.
    pub name: Option<String>,
    /// Every property, including `uuid`, `type`, `created`, `modified`.
    pub data: Map<String, Value>,
}

/// How a lookup names an entity.
#[derive(Clone, Debug)]
pub enum EntityKey<'a> {
    /// By uuid.
    Uuid(&'a str),
    /// By unique name.
    Name(&'a str),
}

/// A page request over a collection or relation.
#[derive(Clone, Debug)]
pub struct PageQuery<'a> {
    /// The `ql` filter and order, if any.
    pub query: Option<&'a Query>,
    /// Page size.
    pub limit: usize,
    /// Entities to skip (decoded from the cursor), in relations and feeds.
    pub offset: usize,
    /// In collection queries, the last entity of the previous page (its `uuid` and the
    /// values of the query's `order by` keys, decoded from the cursor): the page starts after
    /// it. Entities added or removed meanwhile move nothing else.
    pub after: Option<&'a Map<String, Value>>,
    /// Most entities that do not match a collection query reads for one page
    /// ([`StoreError::TooExpensive`]).
    pub max_rows: Option<usize>,
    /// When to give up on a query that filters or orders in memory ([`StoreError::Timeout`]).
    pub deadline: Option<std::time::Instant>,
    /// A page ends once its entities hold this many bytes of JSON (then `more` is set): one
    /// request's answer stays bounded whatever the limit and the entities' size.
    pub max_bytes: Option<usize>,
}

impl<'a> PageQuery<'a> {
    /// The first `limit` entities `query` selects, with no cursor and no bound on the rows
    /// read, the time taken or the answer's size.
    pub fn first(query: Option<&'a Query>, limit: usize) -> PageQuery<'a> {
        PageQuery {
            query,
            limit,
            offset: 0,
            after: None,
            max_rows: None,
            deadline: None,
            max_bytes: None,
        }
    }
}

/// One page of entities.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The entities, in order.
    pub entities: Vec<Entity>,
    /// True when more entities follow this page.
    pub more: bool,
    /// The uuid the next page starts after, when this one stopped before the entities it
    /// has (a pass over the collection for entities without the `order by` key is bounded
    /// per page): its cursor is this position, not its last entity's.
    pub resume_after: Option<String>,
}

/// An entity's binary data (Usergrid's assets): its bytes and their type. The entity's
/// `file-metadata` property describes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asset {
    /// The MIME type it was uploaded with.
    pub content_type: String,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Which side of a relation to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Entities the owner points at (`/users/a/following`).
    Outbound,
    /// Entities pointing at the owner (`/users/a/followers`).
    Inbound,
}

/// One entry of an application's change log.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeRecord {
    /// Position in the application's log: strictly increasing, gap-free per application.
    pub seq: u64,
    /// When it was written, ms since the epoch.
    pub created: i64,
    /// What happened.
    pub kind: ChangeKind,
    /// The entity's collection (`activities` for feed items; empty for queue messages).
    pub collection: String,
    /// The entity's or message's uuid.
    pub uuid: String,
    /// The entity's name, if any.
    pub name: Option<String>,
    /// The entity after the change (before it, for a delete), or the message.
    pub entity: Map<String, Value>,
    /// The entity before an update.
    pub previous: Option<Map<String, Value>>,
    /// The feed an activity was delivered to (owner uuid).
    pub feed_owner: Option<String>,
    /// The queue a message was posted to.
    pub queue: Option<String>,
}

/// A change with its JSON views, ready for matching.
pub struct ChangeView {
    /// The record.
    pub record: ChangeRecord,
    /// `entity` as a JSON value.
    pub entity: Value,
    /// `previous` as a JSON value.
    pub previous: Option<Value>,
}

impl ChangeView {
    /// Wraps a record.
    pub fn new(record: ChangeRecord) -> ChangeView {
        ChangeView {
            entity: Value::Object(record.entity.clone()),
            previous: record.previous.clone().map(Value::Object),
            record,
        }
    }

    /// The matcher's view of it.
    pub fn change(&self) -> Change<'_> {
        let r = &self.record;
        Change {
            seq: r.seq,
            kind: r.kind,
            collection: &r.collection,
            uuid: &r.uuid,
            name: r.name.as_deref(),
            entity: &self.entity,
            previous: self.previous.as_ref(),
            feed_owner: r.feed_owner.as_deref(),
            queue: r.queue.as_deref(),
        }
    }
}

/// Changes read from the log.
#[derive(Clone, Debug, Default)]
pub struct ChangeBatch {
    /// The changes after the asked position, in order.
    pub changes: Vec<ChangeRecord>,
    /// The lowest position whose change is still retained: asking for changes after anything
    /// below `first_retained - 1` cannot be answered completely.
    pub first_retained: u64,
    /// The newest position of the log.
    pub position: u64,
}

/// A queue message as read, with its position in the change log.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedMessage {
    /// The log position of its posting.
    pub seq: u64,
    /// The message (with `transaction` when read in one).
    pub message: Value,
}

/// How a queue read positions itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueRead {
    /// From the oldest message, without moving any pointer.
    Start,
    /// After the consumer's pointer, moving it; with a timeout, in transactions that hide the
    /// messages from that consumer until committed or timed out (then they come again).
    Consumer {
        /// Consumer id.
        consumer: String,
        /// Transaction timeout in ms; 0 for none.
        timeout_ms: u64,
    },
}

/// What the store remembers of a write sent with a client's `write_id` (see [`crate::dedup`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    /// Who sent it: [`crate::dedup`]'s name for the caller.
    pub owner: String,
    /// `METHOD path` of the write.
    pub fingerprint: String,
    /// Its answer (status, JSON body) once it finished; `None` while it runs.
    pub answer: Option<(u16, String)>,
}

/// The storage interface the service layer runs on.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether the database answers: a small read through it (a node's readiness).
    async fn ping(&self) -> StoreResult<()> {
        self.org_by_name("").await.map(|_| ())
    }
    /// Creates an organization with its first admin; `Duplicate` if either name is taken.
    async fn create_org(&self, org: &OrgRecord, admin: &AdminRecord) -> StoreResult<()>;
    /// Looks an organization up by name (case-insensitive).
    async fn org_by_name(&self, name: &str) -> StoreResult<Option<OrgRecord>>;
    /// Looks an organization up by uuid.
    async fn org_by_uuid(&self, uuid: &str) -> StoreResult<Option<OrgRecord>>;
    /// Looks an organization up by its client id.
    async fn org_by_client_id(&self, client_id: &str) -> StoreResult<Option<OrgRecord>>;
    /// Looks an admin up by username or email.
    async fn admin_by_login(&self, login: &str) -> StoreResult<Option<AdminRecord>>;
    /// Looks an admin up by uuid.
    async fn admin_by_uuid(&self, uuid: &str) -> StoreResult<Option<AdminRecord>>;
    /// The organizations an admin administers.
    async fn admin_orgs(&self, admin_uuid: &str) -> StoreResult<Vec<OrgRecord>>;
    /// Creates an application and, in the same transaction, its seed entities (roles) and
    /// their permissions `(owner uuid, permission)`.
    async fn create_app(
        &self,
        app: &AppRecord,
        seed: &[Entity],
        permissions: &[(String, String)],
    ) -> StoreResult<()>;
    /// Looks an application up by organization uuid and name.
    async fn app_by_name(&self, org_uuid: &str, name: &str) -> StoreResult<Option<AppRecord>>;
    /// Looks an application up by its client id.
    async fn app_by_client_id(&self, client_id: &str) -> StoreResult<Option<AppRecord>>;
    /// The applications of an organization.
    async fn apps_of_org(&self, org_uuid: &str) -> StoreResult<Vec<AppRecord>>;
    /// Stores an issued token.
    async fn put_token(&self, token: &TokenRecord) -> StoreResult<()>;
    /// Finds a token by the hash of its string.
    async fn token(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>>;
    /// Deletes every token of a subject but `except` (a token hash); returns how many.
    async fn revoke_tokens(&self, subject: &str, except: Option<&[u8; 32]>) -> StoreResult<u64>;
    /// Deletes one token; false if there was none.
    async fn revoke_token(&self, hash: &[u8; 32]) -> StoreResult<bool>;
    /// Inserts a new entity, with a password hash for users, and logs its creation;
    /// `Duplicate` if its name is taken.
    async fn insert_entity(
        &self,
        app: &str,
        entity: &Entity,
        secret: Option<&str>,
    ) -> StoreResult<()>;
    /// Reads one entity of a collection (`collection: None` looks a uuid up in any).
    async fn entity(
        &self,
        app: &str,
        collection: Option<&str>,
        key: EntityKey<'_>,
    ) -> StoreResult<Option<Entity>>;
    /// Finds a user by email (case-insensitive).
    async fn user_by_email(&self, app: &str, email: &str) -> StoreResult<Option<Entity>>;
    /// A user's password hash.
    async fn user_secret(&self, app: &str, uuid: &str) -> StoreResult<Option<String>>;
    /// Sets a user's password hash.
    async fn set_user_secret(&self, app: &str, uuid: &str, secret: &str) -> StoreResult<()>;
    /// Replaces an entity's name and properties and logs the update; `Duplicate` if the new
    /// name is taken.
    async fn replace_entity(&self, app: &str, entity: &Entity) -> StoreResult<()>;
    /// [`Store::replace_entity`] and, in the same write, stores `asset` as the entity's
    /// binary data (replacing any it had). False if there is no such entity.
    async fn put_asset(&self, app: &str, entity: &Entity, asset: &Asset) -> StoreResult<bool>;
    /// An entity's binary data, if it has any. Deleting the entity deletes it.
    async fn asset(&self, app: &str, entity: &str) -> StoreResult<Option<Asset>>;
    /// Deletes an entity with its relations and permissions and logs it; false if it did not
    /// exist.
    async fn delete_entity(&self, app: &str, uuid: &str) -> StoreResult<bool>;
    /// A page of a collection, filtered and ordered by the query, oldest first by default.
    async fn query(&self, app: &str, collection: &str, page: &PageQuery<'_>) -> StoreResult<Page>;
    /// Adds an activity to the feeds of `owners` and logs one feed item per owner.
    async fn deliver_to_feeds(
        &self,
        app: &str,
        activity: &Entity,
        owners: &[String],
    ) -> StoreResult<()>;
    /// The newest position of an application's change log (0 when empty).
    async fn log_position(&self, app: &str) -> StoreResult<u64>;
    /// At most `limit` changes after `after`, in order.
    async fn changes_since(&self, app: &str, after: u64, limit: usize) -> StoreResult<ChangeBatch>;
    /// Forgets changes written before `before_ms` (retention); returns how many.
    async fn prune_changes(&self, before_ms: i64) -> StoreResult<u64>;
    /// Posts messages to a queue and to its subscriber queues, logging each; returns the
    /// stored messages of `queue` itself.
    async fn queue_post(
        &self,
        app: &str,
        queue: &str,
        messages: &[Map<String, Value>],
        now: i64,
    ) -> StoreResult<Vec<Value>>;
    /// Reads messages of a queue (see [`QueueRead`]); with a consumer and timeout each message
    /// carries its `transaction` id.
    async fn queue_read(
        &self,
        app: &str,
        queue: &str,
        read: &QueueRead,
        limit: usize,
        now: i64,
    ) -> StoreResult<Vec<QueuedMessage>>;
    /// Commits (deletes) a transaction; false if it does not exist (any more).
    async fn queue_commit(&self, app: &str, queue: &str, transaction: &str) -> StoreResult<bool>;
    /// The earliest expiry of a consumer's open transactions, if any.
    async fn queue_next_expiry(
        &self,
        app: &str,
        queue: &str,
        consumer: &str,
    ) -> StoreResult<Option<i64>>;
    /// The subscriber queues of a queue.
    async fn queue_subscribers(&self, app: &str, queue: &str) -> StoreResult<Vec<String>>;
    /// Adds or removes a subscriber queue; false if nothing changed.
    async fn queue_subscribe(
        &self,
        app: &str,
        queue: &str,
        subscriber: &str,
        add: bool,
    ) -> StoreResult<bool>;
    /// The queues of an application that have ever had a message.
    async fn queues(&self, app: &str) -> StoreResult<Vec<String>>;
    /// Adds `source -relation-> target`; false if it already existed.
    async fn add_relation(
        &self,
        app: &str,
        source: &str,
        relation: &str,
        target: &str,
    ) -> StoreResult<bool>;
    /// Removes `source -relation-> target`; false if it did not exist.
    async fn remove_relation(
        &self,
        app: &str,
        source: &str,
        relation: &str,
        target: &str,
    ) -> StoreResult<bool>;
    /// A page of the entities related to `owner` by `relation`, in the given direction.
    async fn related(
        &self,
        app: &str,
        owner: &str,
        relation: &str,
        direction: Direction,
        page: &PageQuery<'_>,
    ) -> StoreResult<Page>;
    /// The uuids related to `owner` by `relation` (for permission and fan-out lookups).
    async fn related_uuids(
        &self,
        app: &str,
        owner: &str,
        relation: &str,
        direction: Direction,
    ) -> StoreResult<Vec<String>>;
    /// For each of `entities`, every relation name leading out of it and into it, each once:
    /// `(entity, direction, relation)`, in the order of `entities`, then outbound first, then
    /// by name (for an entity's `metadata.connections` and `connecting`).
    async fn relation_names(
        &self,
        app: &str,
        entities: &[String],
    ) -> StoreResult<Vec<(String, Direction, String)>>;
    /// The permissions granted directly to a user, group or role.
    async fn permissions(&self, app: &str, owner: &str) -> StoreResult<Vec<String>>;
    /// Grants a permission; false if it was already granted.
    async fn add_permission(&self, app: &str, owner: &str, permission: &str) -> StoreResult<bool>;
    /// Revokes a permission; false if it was not granted.
    async fn remove_permission(
        &self,
        app: &str,
        owner: &str,
        permission: &str,
    ) -> StoreResult<bool>;
    /// Records that a write with this `write_id` starts, unless one was recorded before:
    /// `None` when it is new (run it, then [`finish_write`](Store::finish_write) or
    /// [`release_write`](Store::release_write)), else what is remembered of the first.
    async fn claim_write(
        &self,
        app: &str,
        write_id: &str,
        owner: &str,
        fingerprint: &str,
        now: i64,
    ) -> StoreResult<Option<WriteRecord>>;
    /// Remembers a claimed write's answer.
    async fn finish_write(
        &self,
        app: &str,
        write_id: &str,
        status: u16,
        body: &str,
    ) -> StoreResult<()>;
    /// Forgets a claimed write that changed nothing, so that a repeat runs it.
    async fn release_write(&self, app: &str, write_id: &str) -> StoreResult<()>;
    /// Forgets writes recorded before `before_ms`, and all but the newest `keep`; returns how
    /// many.
    async fn prune_writes(&self, before_ms: i64, keep: u64) -> StoreResult<u64>;
}
