//! How a collection query is answered, decided once for every store: which index reads it
//! makes, in what order it reads entities, and when it stops. A store implements the few
//! reads of [`IndexReads`] in its own SQL; this chooses among them.
//!
//! Every entity read is checked against the query itself ([`Query::matches`]) and placed by
//! [`Query::compare`], so the index only has to select a superset in the right order. The
//! paths, cheapest first:
//! 1. **A few candidates.** When the filter's index reads select at most [`CANDIDATES`]
//!    entities, those are read (with no `order by`, only as many as the page needs, in uuid
//!    order from the cursor), checked and sorted in memory. A filter of one single value
//!    alone skips this for path 3, which reads only a page of the index.
//! 2. **An `order by`.** The first key's index is walked in order from the cursor (or from
//!    the filter's range on that key), then, past its end, the entities without that key,
//!    found by a pass over the collection that is bounded per page ([`MISSING_PASS`]).
//! 3. **A single value.** With no `order by`, a filter part `k = v` (or `contains 'w'`) is
//!    walked: the index holds its entities in uuid order.
//! 4. **Everything else** walks the collection in uuid order.
//!
//! A walk that has read the page's `max_rows` entities that do not match gives up with
//! [`StoreError::TooExpensive`] before its next read: a query the index cannot narrow is
//! bounded, never a way to make the server read a whole collection.

use super::index::{ALWAYS_SET, Kind, Leaf, Lookup, Range, SortKey};
use super::rows::field;
use super::{Entity, Page, PageQuery, StoreError, StoreResult};
use async_trait::async_trait;
use futures_util::future::BoxFuture;
use gridsocket_core::query::Query;
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Most entities one page passes over looking for those without an `order by` key.
const MISSING_PASS: usize = 20_000;

/// Most entities a query's index reads may select for them to be read, checked and sorted
/// in memory.
pub const CANDIDATES: usize = 1000;

/// The largest batch a walk reads at once.
const MAX_BATCH: usize = 1024;

/// Where a walk over one property's index starts.
#[derive(Clone, Debug)]
pub struct From {
    /// The value.
    pub key: SortKey,
    /// Strictly after this uuid among entities with that value; every entity with that
    /// value (included) when `None`.
    pub uuid: Option<String>,
}

/// The reads a store offers the search. Each answers entities of one collection of one app.
#[async_trait]
pub trait IndexReads: Sync {
    /// Uuids of entities with a row in `leaf`: at most `cap + 1` rows (so that more than `cap`
    /// shows), possibly with repeats.
    async fn leaf_uuids(
        &self,
        app: &str,
        collection: &str,
        leaf: &Leaf,
        cap: usize,
    ) -> StoreResult<Vec<String>>;

    /// These entities, in any order.
    async fn entities_in(
        &self,
        app: &str,
        collection: &str,
        uuids: &[String],
    ) -> StoreResult<Vec<Entity>>;

    /// Up to `n` entities in uuid order (descending if `desc`) strictly after `after`; with
    /// `single`, only those with a row in that single-value leaf (repeats possible).
    async fn by_uuid(
        &self,
        app: &str,
        collection: &str,
        single: Option<&Leaf>,
        after: Option<&str>,
        desc: bool,
        n: usize,
    ) -> StoreResult<Vec<Entity>>;

    /// Up to `n` entities with a value of `name` of their own, in index order (`(kind, num,
    /// text, uuid)`, or its reverse if `desc`), from `from`.
    async fn by_value(
        &self,
        app: &str,
        collection: &str,
        name: &str,
        from: Option<&From>,
        desc: bool,
        n: usize,
    ) -> StoreResult<Vec<Entity>>;

    /// Passes the next `n` entities of the collection in uuid order (descending if `desc`)
    /// strictly after `after`: answers those among them without a value of `name`, and the
    /// last one's uuid if there were `n` (more may follow).
    async fn missing(
        &self,
        app: &str,
        collection: &str,
        name: &str,
        after: Option<&str>,
        desc: bool,
        n: usize,
    ) -> StoreResult<(Vec<Entity>, Option<String>)>;
}

/// Answers a page of a collection query from the store's index.
pub async fn query<R: IndexReads>(
    reads: &R,
    app: &str,
    collection: &str,
    page: &PageQuery<'_>,
) -> StoreResult<Page> {
    let default = Query::default();
    let mut run = Run {
        query: page.query.unwrap_or(&default),
        after: page.after.map(|a| Value::Object(a.clone())),
        need: page.limit.saturating_add(1),
        found: Vec::new(),
        read: 0,
        resume: None,
        page,
    };
    let lookup = run.query.filter.as_ref().and_then(Lookup::of);
    // A filter that is one `k = v` (or `contains 'w'`) alone, with no `order by`, is the
    // single-value walk at once: the index holds exactly its matches in uuid order, so a page
    // reads a page of index rows, where the candidates would read every match (1,000 at 1M
    // entities, and a table read per row when the index is not yet vacuumed).
    let lone_single = run.query.order.is_empty()
        && matches!(&lookup, Some(Lookup::Leaf(leaf)) if leaf.is_single());
    if !lone_single
        && let Some(lookup) = &lookup
        && let Some(uuids) = candidates(reads, app, collection, lookup).await?
    {
        if run.query.order.is_empty() {
            // In uuid order: only as many as the page needs, from the cursor on.
            let mut rest: &[String] = match run.after_uuid() {
                Some(after) => &uuids[uuids.partition_point(|u| *u <= after)..],
                None => &uuids,
            };
            while run.found.len() < run.need && !rest.is_empty() {
                let (chunk, tail) = rest.split_at(run.batch().min(rest.len()));
                rest = tail;
                let entities = reads.entities_in(app, collection, chunk).await?;
                run.count(entities.len())?;
                for e in entities {
                    run.offer(e);
                }
            }
        } else {
            let entities = reads.entities_in(app, collection, &uuids).await?;
            run.count(entities.len())?;
            for e in entities {
                run.offer(e);
            }
        }
    } else if let Some(first) = run.query.order.first() {
        run.ordered(
            reads,
            app,
            collection,
            lookup.as_ref(),
            &first.property,
            first.descending,
        )
        .await?;
    } else {
        let single = lookup.as_ref().and_then(|l| l.singles().into_iter().next());
        run.by_uuid(reads, app, collection, single, false).await?;
    }
    Ok(run.finish())
}

/// The uuids a lookup selects, sorted, when they are at most [`CANDIDATES`].
fn candidates<'a, R: IndexReads>(
    reads: &'a R,
    app: &'a str,
    collection: &'a str,
    lookup: &'a Lookup,
) -> BoxFuture<'a, StoreResult<Option<Vec<String>>>> {
    Box::pin(async move {
        Ok(match lookup {
            Lookup::Leaf(leaf) => {
                let mut uuids = reads.leaf_uuids(app, collection, leaf, CANDIDATES).await?;
                if uuids.len() > CANDIDATES {
                    None
                } else {
                    uuids.sort();
                    uuids.dedup();
                    Some(uuids)
                }
            }
            Lookup::And(parts) => {
                // Any part narrows the whole; all the narrow ones together narrow it most.
                let mut set: Option<Vec<String>> = None;
                for part in parts {
                    if let Some(found) = candidates(reads, app, collection, part).await? {
                        set = Some(match set {
                            None => found,
                            Some(s) => s
                                .into_iter()
                                .filter(|u| found.binary_search(u).is_ok())
                                .collect(),
                        });
                    }
                }
                set
            }
            Lookup::Or(parts) => {
                let mut all = Vec::new();
                for part in parts {
                    match candidates(reads, app, collection, part).await? {
                        Some(found) => all.extend(found),
                        None => return Ok(None),
                    }
                    if all.len() > CANDIDATES {
                        return Ok(None);
                    }
                }
                all.sort();
                all.dedup();
                Some(all)
            }
        })
    })
}

/// One query being answered.
struct Run<'a> {
    query: &'a Query,
    /// The last entity of the previous page (its order keys and uuid), from the cursor.
    after: Option<Value>,
    /// The page and one more (which says that more follow).
    need: usize,
    /// Matches so far, as JSON, with the entity they came from.
    found: Vec<(Value, Entity)>,
    /// Entities read so far.
    read: usize,
    /// Where the next page starts when this one stopped before its end (see `ordered`).
    resume: Option<String>,
    page: &'a PageQuery<'a>,
}

impl Run<'_> {
    /// Counts entities read, and stops a query that has read too many that did not match
    /// (before this read: a page of many matches is never too expensive), or run too long.
    fn count(&mut self, n: usize) -> StoreResult<()> {
        let wasted = self.read.saturating_sub(self.found.len());
        if let Some(max) = self.page.max_rows
            && wasted > max
        {
            return Err(StoreError::TooExpensive(max));
        }
        self.read = self.read.saturating_add(n);
        if self
            .page
            .deadline
            .is_some_and(|d| std::time::Instant::now() > d)
        {
            return Err(StoreError::Timeout);
        }
        Ok(())
    }

    /// How many entities the next read of a walk asks for: a page's worth first (most pages
    /// are found in one read), more as matches prove scarce.
    fn batch(&self) -> usize {
        let missing = self.need.saturating_sub(self.found.len()).max(1);
        if self.read == 0 {
            missing.min(MAX_BATCH)
        } else {
            (missing * 4).clamp(64, MAX_BATCH)
        }
    }

    fn after_uuid(&self) -> Option<String> {
        let after = self.after.as_ref()?;
        after.get("uuid")?.as_str().map(str::to_owned)
    }

    /// Keeps an entity that matches and comes after the cursor; false if it did not.
    fn offer(&mut self, mut e: Entity) -> bool {
        let value = Value::Object(std::mem::take(&mut e.data));
        let keep = self.query.matches(&value)
            && self
                .after
                .as_ref()
                .is_none_or(|a| self.query.compare(&value, a) == Ordering::Greater);
        if keep {
            self.found.push((value, e));
        }
        keep
    }

    /// Walks the collection in uuid order from the cursor (only entities with a row in
    /// `single`, if given) until the page is full or the collection ends.
    async fn by_uuid<R: IndexReads>(
        &mut self,
        reads: &R,
        app: &str,
        collection: &str,
        single: Option<&Leaf>,
        desc: bool,
    ) -> StoreResult<()> {
        let mut after = self.after_uuid();
        while self.found.len() < self.need {
            let n = self.batch();
            let batch = reads
                .by_uuid(app, collection, single, after.as_deref(), desc, n)
                .await?;
            self.count(batch.len())?;
            let done = batch.len() < n;
            after = batch.last().map(|e| e.uuid.clone()).or(after);
            for e in batch {
                self.offer(e);
            }
            if done {
                break;
            }
        }
        Ok(())
    }

    /// Walks the first key's index in order, then the entities without that key.
    async fn ordered<R: IndexReads>(
        &mut self,
        reads: &R,
        app: &str,
        collection: &str,
        lookup: Option<&Lookup>,
        name: &str,
        desc: bool,
    ) -> StoreResult<()> {
        if matches!(name, "uuid" | "type") {
            // Entities are kept in uuid order, and every `type` of a collection is the same:
            // ties go by uuid in the key's direction.
            return self.by_uuid(reads, app, collection, None, desc).await;
        }
        let one_key = self.query.order.len() == 1;
        let cursor = self.after.as_ref().map(|a| lookup_key(a, name));
        // Where the walk starts: after the cursor, or where the filter's range on this key
        // starts, whichever is later.
        let mut from = match &cursor {
            Some(Some((key, uuid))) => Some(From {
                uuid: (one_key && !key.is_cut()).then(|| uuid.clone()),
                key: key.clone(),
            }),
            _ => None,
        };
        if let Some(start) = lookup.and_then(|l| range_start(l, name, desc))
            && from.as_ref().is_none_or(|f| later(&start, &f.key, desc))
        {
            from = Some(From {
                key: start,
                uuid: None,
            });
        }
        // A cursor past every value (on an entity without the key) skips the walk.
        let mut walking = !matches!(cursor, Some(None));
        // With more keys than one, or values cut in the index, entities with the same first
        // value are read to the last: the later keys decide their order.
        let mut boundary: Option<SortKey> = None;
        while walking {
            let n = self.batch();
            let batch = reads
                .by_value(app, collection, name, from.as_ref(), desc, n)
                .await?;
            self.count(batch.len())?;
            walking = batch.len() == n;
            for e in batch {
                let key = SortKey::of(field(&e.data, name).unwrap_or(&Value::Null));
                if let Some(b) = &boundary
                    && key.order(b) != Ordering::Equal
                {
                    walking = false;
                    break;
                }
                from = Some(From {
                    uuid: Some(e.uuid.clone()),
                    key: key.clone(),
                });
                if self.offer(e) && self.found.len() >= self.need {
                    if one_key && !key.is_cut() {
                        walking = false;
                        break;
                    }
                    boundary.get_or_insert(key);
                }
            }
        }
        if self.found.len() >= self.need || ALWAYS_SET.contains(&name) {
            return Ok(());
        }
        // After a cursor on an entity without the key, one key orders the rest by uuid.
        let mut after = match cursor {
            Some(None) if one_key => self.after_uuid(),
            _ => None,
        };
        // Which entities lack the key only a pass over the collection tells: it goes at most
        // MISSING_PASS entities a page (or the page's `max_rows`, if fewer). With one key,
        // the page then ends where the pass stopped, and its cursor goes on from there; with
        // more (the entities without the first key are sorted by the others), the entities
        // passed count as read, so the whole pass is bounded by the page's `max_rows`.
        let budget = self
            .page
            .max_rows
            .map_or(MISSING_PASS, |m| m.min(MISSING_PASS));
        let mut passed = 0usize;
        loop {
            if one_key && passed >= budget {
                self.resume = after;
                return Ok(());
            }
            let n = self.batch().max(64);
            let (batch, last) = reads
                .missing(app, collection, name, after.as_deref(), desc, n)
                .await?;
            passed = passed.saturating_add(n);
            self.count(if one_key { batch.len() } else { n })?;
            let done = last.is_none();
            after = last.or(after);
            for e in batch {
                self.offer(e);
            }
            if done || (one_key && self.found.len() >= self.need) {
                return Ok(());
            }
        }
    }

    /// The page: matches in the query's order, cut to the limit and the byte budget.
    fn finish(mut self) -> Page {
        let query = self.query;
        self.found.sort_by(|a, b| query.compare(&a.0, &b.0));
        let more = self.found.len() > self.page.limit;
        self.found.truncate(self.page.limit);
        let max_bytes = self.page.max_bytes.unwrap_or(usize::MAX);
        let (mut bytes, mut entities, mut cut) = (0usize, Vec::new(), false);
        for (value, mut e) in self.found {
            if bytes >= max_bytes {
                cut = true;
                break;
            }
            if let Value::Object(data) = value {
                bytes = bytes.saturating_add(gridsocket_core::wire::json_size(&data));
                e.data = data;
            }
            entities.push(e);
        }
        // A page cut short by its bytes goes on after its last entity, before any resume.
        let resume_after = self.resume.filter(|_| !cut);
        Page {
            entities,
            more: more || cut || resume_after.is_some(),
            resume_after,
        }
    }
}

/// The cursor's value of the first key (`None` when it has none) and its uuid.
fn lookup_key(after: &Value, name: &str) -> Option<(SortKey, String)> {
    let uuid = after.get("uuid")?.as_str()?.to_owned();
    Some((
        SortKey::of(gridsocket_core::query::lookup(after, name)?),
        uuid,
    ))
}

/// Where the filter's range on `name` starts in a walk's direction, if a top-level part of
/// it bounds that side.
fn range_start(lookup: &Lookup, name: &str, desc: bool) -> Option<SortKey> {
    let key = |kind, num, text: &str| SortKey {
        kind,
        num,
        text: text.to_owned(),
    };
    let mut best: Option<SortKey> = None;
    for range in lookup.ranges_of(name) {
        let start = match (range, desc) {
            (
                Range::Num {
                    kind, lo: Some(lo), ..
                },
                false,
            ) => key(*kind, *lo, ""),
            (
                Range::Num {
                    kind, hi: Some(hi), ..
                },
                true,
            ) => key(*kind, *hi, ""),
            (Range::Num { kind, .. }, false) => key(*kind, f64::NEG_INFINITY, ""),
            (Range::Num { kind, .. }, true) => key(*kind, f64::INFINITY, "\u{10FFFF}"),
            (Range::Text { lo: Some(lo), .. }, false) => key(Kind::String, 0.0, lo),
            (Range::Text { lo: None, .. }, false) => key(Kind::String, 0.0, ""),
            (
                Range::Text {
                    hi: Some((hi, _)), ..
                },
                true,
            ) => key(Kind::String, 0.0, hi),
            (Range::Text { hi: None, .. }, true) => continue,
            (Range::Word { .. }, _) => continue,
        };
        if best.as_ref().is_none_or(|b| later(&start, b, desc)) {
            best = Some(start);
        }
    }
    best
}

/// True when `a` comes after `b` in a walk's direction.
fn later(a: &SortKey, b: &SortKey, desc: bool) -> bool {
    let ord = a.order(b);
    if desc {
        ord == Ordering::Less
    } else {
        ord == Ordering::Greater
    }
}

/// The cursor of a page that ends with `last`: its order keys and uuid, which is all a
/// keyset needs to go on from there.
pub fn position(query: Option<&Query>, last: &Entity) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("uuid".into(), Value::String(last.uuid.clone()));
    for key in query.map(|q| q.order.as_slice()).unwrap_or_default() {
        if let Some(v) = field(&last.data, &key.property) {
            set_dotted(&mut out, &key.property, v.clone());
        }
    }
    out
}

/// Sets a dotted property (`a.b`) in an object, making the objects on the way.
pub fn set_dotted(map: &mut Map<String, Value>, dotted: &str, value: Value) {
    match dotted.split_once('.') {
        None => {
            map.insert(dotted.to_owned(), value);
        }
        Some((first, rest)) => {
            let inner = map
                .entry(first.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !inner.is_object() {
                *inner = Value::Object(Map::new());
            }
            if let Value::Object(inner) = inner {
                set_dotted(inner, rest, value);
            }
        }
    }
}
