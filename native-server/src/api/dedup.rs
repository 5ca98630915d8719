//! Writes sent again: each write applied once per application and client-chosen `write_id`.
//!
//! A client whose socket drops while a write is in flight cannot know whether it ran. The
//! JavaScript client gives every write a `write_id` and sends it again, with the same id, once
//! it is connected again (to this node or another). Here the first frame with a given
//! `(application, write_id)` claims the id in the store before the write runs, and its answer
//! is remembered; a repeat runs nothing and gets the first answer, byte for byte. A repeat that
//! arrives while the first still runs waits for it (up to [`WAIT_FOR_FIRST`]).
//!
//! Records live in the store (SQLite or PostgreSQL), so the rule holds across nodes and
//! restarts. They are kept for [`KEEP_FOR`], at most [`MAX_RECORDS`] of them: a client never
//! sends a write again after its own request timeout has passed. A write that failed without
//! changing anything (status 5xx, such as a store failure) is forgotten, so its repeat runs.
//! The contract is in `docs/PROTOCOL.md`, "Writes sent again".

use super::{Api, ApiResponse, Caller, Principal, now_ms};
use crate::store::{AppRecord, WriteRecord};
use gridsocket_core::route::AppRoute;
use gridsocket_core::{ApiRequest, ResourcePath};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// How long a write's answer is remembered.
pub const KEEP_FOR: Duration = Duration::from_secs(3600);
/// Most answers remembered; the oldest beyond this are forgotten first.
pub const MAX_RECORDS: u64 = 100_000;
/// How long a repeat waits for the first send of its write to finish, then is answered 409
/// `write_in_progress`.
pub const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);
/// How often old records are pruned (at most; pruning runs when writes come).
const PRUNE_EVERY_MS: i64 = 60_000;

static LAST_PRUNE: AtomicI64 = AtomicI64::new(0);

/// Executes a request from a socket: with a `write_id`, as described in the module docs;
/// without one, as any request.
pub async fn execute(
    api: &Api,
    app: &AppRecord,
    caller: &Caller,
    request: ApiRequest,
    write_id: Option<String>,
    started: Instant,
) -> ApiResponse {
    let Some(write_id) = write_id.filter(|_| remembered(caller, &request)) else {
        return api.handle_app(app, caller, request, started).await;
    };
    prune_now_and_then(api);
    let store = api.store().clone();
    let owner = owner_of(caller.principal());
    let fingerprint = format!("{} {}", request.method.as_str(), request.path);
    let give_up = started + WAIT_FOR_FIRST;
    loop {
        let claim = store
            .claim_write(&app.uuid, &write_id, &owner, &fingerprint, now_ms())
            .await;
        match claim {
            Ok(None) => break,
            Ok(Some(WriteRecord {
                owner: first_owner,
                fingerprint: first_fingerprint,
                answer,
            })) => {
                if first_owner != owner || first_fingerprint != fingerprint {
                    return refusal(
                        409,
                        "write_id_conflict",
                        "this write_id was used for another write; use a new id per write",
                        started,
                    );
                }
                if let Some((status, body)) = answer {
                    return ApiResponse {
                        status,
                        body,
                        retry_after: None,
                    };
                }
                if Instant::now() >= give_up {
                    return refusal(
                        409,
                        "write_in_progress",
                        "the first send of this write has not finished; its outcome is unknown",
                        started,
                    );
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "store failure claiming a write id");
                return refusal(
                    500,
                    "internal_error",
                    "internal error; nothing was written",
                    started,
                );
            }
        }
    }
    let response = api.handle_app(app, caller, request, started).await;
    // The answer goes out now; a repeat arriving before it is stored waits for it. Shutdown
    // waits for it to be stored.
    let (app, status, body) = (app.uuid.clone(), response.status, response.body.clone());
    api.spawn_lasting(async move {
        let stored = if status >= 500 {
            store.release_write(&app, &write_id).await
        } else {
            store.finish_write(&app, &write_id, status, &body).await
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "store failure remembering a write's answer");
        }
    });
    response
}

/// Whether a request's answer is remembered under its `write_id`. A read's is not, nor:
/// - a guest's: guests are not one caller, so another guest's write with the same id would
///   be taken for a repeat and get the first guest's answer (a token, from a login);
/// - an answer that carries credentials (a token, an application's secret), which the record
///   would keep in the store in the clear. A repeat of a login logs in again.
fn remembered(caller: &Caller, request: &ApiRequest) -> bool {
    let credentials = || {
        ResourcePath::parse(&request.path)
            .ok()
            .and_then(|path| AppRoute::parse(&path, request.method).ok())
            .is_some_and(|route| route.answers_with_credentials())
    };
    !request.is_read_only() && !matches!(caller.principal(), Principal::Guest) && !credentials()
}

/// The caller's identity as recorded with a write: a repeat must come from the same one.
fn owner_of(principal: &Principal) -> String {
    match principal {
        Principal::Superuser => "superuser".into(),
        Principal::Admin { uuid, .. } => format!("admin:{uuid}"),
        Principal::OrgClient { org } => format!("org:{org}"),
        Principal::AppClient { app } => format!("app:{app}"),
        Principal::AppUser { uuid, .. } => format!("user:{uuid}"),
        Principal::Guest => "guest".into(),
    }
}

fn refusal(status: u16, error: &str, description: &str, started: Instant) -> ApiResponse {
    let body = serde_json::json!({
        "error": error,
        "error_description": description,
        "timestamp": now_ms(),
        "duration": started.elapsed().as_millis() as u64,
    });
    ApiResponse {
        status,
        body: body.to_string(),
        retry_after: None,
    }
}

/// Forgets old records, at most once a minute per process, in the background.
fn prune_now_and_then(api: &Api) {
    let now = now_ms();
    let last = LAST_PRUNE.load(Ordering::Relaxed);
    if now - last < PRUNE_EVERY_MS
        || LAST_PRUNE
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let store = api.store().clone();
    tokio::spawn(async move {
        let before = now - KEEP_FOR.as_millis() as i64;
        if let Err(e) = store.prune_writes(before, MAX_RECORDS).await {
            tracing::warn!(error = %e, "could not prune remembered writes");
        }
    });
}
