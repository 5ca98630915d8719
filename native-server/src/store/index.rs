//! The property index both SQL stores keep for every entity, and what a `ql` query asks of it:
//! pure functions, written once, that turn an entity into index rows and a query into the
//! index lookups that answer it. The stores only run the SQL; `search` drives them.
//!
//! Every top-level and nested property (dotted: `author.name`) gets rows, so any property is
//! queryable with no index to declare. A row holds one value in the form the query language
//! compares it ([`gridsocket_core::query::compare_values`] and `Expr::matches` are the
//! reference): its kind, then a number (numbers as `f64`, booleans as 0 and 1) or a string
//! (lower-cased char by char), the other column holding a fixed filler so that rows compare
//! as tuples. An array's elements each get a row (an array matches if any element does),
//! marked as not the property's own value, and the property itself gets an `other` row, which
//! is how `order by` ranks an array. Words of string values go to a second table, for
//! `contains`. A name with a dot in it gets no rows: no dotted lookup reaches it.
//!
//! A lookup never misses an entity the query matches, and may select some it does not: the
//! stores check every entity they read against the query itself. That is what lets numbers be
//! compared as `f64`, long strings be cut to [`MAX_TEXT`] chars, and `within` be a latitude
//! band.

use gridsocket_core::query::{CmpOp, Expr, Literal};
use serde_json::{Map, Value};

/// Chars of a string (or word) the index keeps: enough to order and find any value, and a
/// long text costs the index no more than a short one. Cutting is monotonic (`a <= b` implies
/// `cut(a) <= cut(b)`), so a range on cut values selects every value of the range.
pub const MAX_TEXT: usize = 100;

/// Properties with no index rows: every entity of a collection has the same `type`, and the
/// entity rows are already ordered by `uuid`.
pub const UNINDEXED: &[&str] = &["uuid", "type"];

/// Properties every entity has, set by the server: an `order by` on them has no entities
/// without a value to look for.
pub const ALWAYS_SET: &[&str] = &["uuid", "type", "created", "modified"];

/// How the query language ranks a value in `order by`: numbers, strings, booleans, anything
/// else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A JSON number.
    Number = 0,
    /// A JSON string.
    String = 1,
    /// `true` or `false`.
    Bool = 2,
    /// An object, an array or `null`.
    Other = 3,
}

/// Where a value sits in the index: rows compare as `(kind, num, text)` tuples, which is the
/// query language's order of values (all values of kind other are equal).
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    /// What it is.
    pub kind: Kind,
    /// Numbers, and booleans as 0 or 1; 0 otherwise.
    pub num: f64,
    /// Strings lower-cased char by char and cut to [`MAX_TEXT`]; empty otherwise.
    pub text: String,
}

impl SortKey {
    /// The key of a value as it stands (an array or object as kind other).
    pub fn of(value: &Value) -> SortKey {
        scalar_key(value).unwrap_or(SortKey {
            kind: Kind::Other,
            num: 0.0,
            text: String::new(),
        })
    }

    /// True when the text was cut: other values may share the key and still differ.
    pub fn is_cut(&self) -> bool {
        self.text.chars().count() >= MAX_TEXT
    }

    /// The order of keys in the index.
    pub fn order(&self, other: &SortKey) -> std::cmp::Ordering {
        // As SQL compares: -0 equals 0 (and JSON has no NaN).
        let num = self.num.partial_cmp(&other.num);
        self.kind
            .cmp(&other.kind)
            .then(num.unwrap_or(std::cmp::Ordering::Equal))
            .then_with(|| self.text.cmp(&other.text))
    }
}

/// One value of one property of an entity.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexRow {
    /// Dotted property name.
    pub name: String,
    /// Its value.
    pub key: SortKey,
    /// True for the property's own value; false for an element of an array it holds.
    pub direct: bool,
}

/// The lower-case form the query language compares strings in: each char lower-cased on its
/// own (so that a comparison of two lower-cased strings is the query language's comparison),
/// cut to [`MAX_TEXT`] chars.
pub fn lower(s: &str) -> String {
    cut(s.chars().flat_map(char::to_lowercase))
}

fn cut(chars: impl Iterator<Item = char>) -> String {
    chars.take(MAX_TEXT).collect()
}

/// The index rows of an entity's properties, each distinct row once.
pub fn index_rows(data: &Map<String, Value>) -> Vec<IndexRow> {
    let mut out = Rows::default();
    for (name, value) in data {
        if !UNINDEXED.contains(&name.as_str()) && !name.contains('.') {
            walk(name, value, &mut out);
        }
    }
    out.rows
}

/// Rows collected once each (an array may hold a value many times).
#[derive(Default)]
struct Rows {
    rows: Vec<IndexRow>,
    seen: std::collections::HashSet<(String, Kind, u64, String, bool)>,
}

fn walk(name: &str, value: &Value, out: &mut Rows) {
    push(out, name, SortKey::of(value), true);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if !k.contains('.') {
                    walk(&format!("{name}.{k}"), v, out);
                }
            }
        }
        Value::Array(items) => elements(name, items, out),
        _ => {}
    }
}

fn push(out: &mut Rows, name: &str, mut key: SortKey, direct: bool) {
    // -0 and 0 are one value to the databases' keys (a second row of it would be refused).
    if key.num == 0.0 {
        key.num = 0.0;
    }
    let id = (
        name.to_owned(),
        key.kind,
        key.num.to_bits(),
        key.text.clone(),
        direct,
    );
    if out.seen.insert(id) {
        out.rows.push(IndexRow {
            name: name.to_owned(),
            key,
            direct,
        });
    }
}

/// An array's elements, arrays in it flattened (the query language looks into them), objects
/// in it not (a dotted name never reaches into an array).
fn elements(name: &str, items: &[Value], out: &mut Rows) {
    for item in items {
        match item {
            Value::Array(inner) => elements(name, inner, out),
            v => {
                if let Some(key) = scalar_key(v) {
                    push(out, name, key, false);
                }
            }
        }
    }
}

fn scalar_key(value: &Value) -> Option<SortKey> {
    let (kind, num, text) = match value {
        Value::Number(n) => (Kind::Number, n.as_f64()?, String::new()),
        Value::String(s) => (Kind::String, 0.0, lower(s)),
        Value::Bool(b) => (Kind::Bool, if *b { 1.0 } else { 0.0 }, String::new()),
        _ => return None,
    };
    Some(SortKey { kind, num, text })
}

/// The words of an entity's string values, per dotted property, each once: what `contains`
/// matches (lower-cased, split at every char that is not a letter or digit), cut to
/// [`MAX_TEXT`] chars.
pub fn words(data: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Words::default();
    for (name, value) in data {
        if !UNINDEXED.contains(&name.as_str()) && !name.contains('.') {
            words_of(name, value, &mut out);
        }
    }
    out.words
}

#[derive(Default)]
struct Words {
    words: Vec<(String, String)>,
    seen: std::collections::HashSet<(String, String)>,
}

fn words_of(name: &str, value: &Value, out: &mut Words) {
    match value {
        Value::String(s) => {
            let text = s.to_lowercase();
            for w in text
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                let word = (name.to_owned(), cut(w.chars()));
                if out.seen.insert(word.clone()) {
                    out.words.push(word);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                if !item.is_object() {
                    words_of(name, item, out);
                }
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                if !k.contains('.') {
                    words_of(&format!("{name}.{k}"), v, out);
                }
            }
        }
        _ => {}
    }
}

/// The smallest string greater than every string that starts with `prefix`, for a prefix
/// match as an index range `[prefix, end)`; `None` when there is none (the range is open).
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        // Skip the surrogate gap: those are not chars.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A range of index values of one property, both ends included unless said.
#[derive(Clone, Debug, PartialEq)]
pub enum Range {
    /// Rows of this kind (a number or a boolean) with `num` in the range.
    Num {
        /// [`Kind::Number`] or [`Kind::Bool`].
        kind: Kind,
        /// Lowest value, if any.
        lo: Option<f64>,
        /// Highest value, if any.
        hi: Option<f64>,
    },
    /// String rows with `text` in the range.
    Text {
        /// Lowest value, if any.
        lo: Option<String>,
        /// Highest value, if any, and whether it is included.
        hi: Option<(String, bool)>,
    },
    /// Words from `lo`, up to `hi` (excluded) if any.
    Word {
        /// Lowest word.
        lo: String,
        /// The first word past the range, if any.
        hi: Option<String>,
        /// True when the range is the one word `lo`.
        exact: bool,
    },
}

/// One index read: the entities with a row of `name` in `range`.
#[derive(Clone, Debug, PartialEq)]
pub struct Leaf {
    /// Dotted property name.
    pub name: String,
    /// The values.
    pub range: Range,
}

impl Leaf {
    /// True when the range is a single value: its entities come out of the index in uuid
    /// order.
    pub fn is_single(&self) -> bool {
        match &self.range {
            Range::Num { lo, hi, .. } => lo.is_some() && lo == hi,
            Range::Text { lo, hi } => {
                matches!((lo, hi), (Some(l), Some((h, true))) if l == h)
            }
            Range::Word { exact, .. } => *exact,
        }
    }
}

/// The index reads a filter needs: entities selected by a leaf, by all or by any of a list.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// One index read.
    Leaf(Leaf),
    /// Entities every one selects.
    And(Vec<Lookup>),
    /// Entities any one selects.
    Or(Vec<Lookup>),
}

impl Lookup {
    /// The lookups of a filter, or `None` when the index cannot narrow it (`not`, a property
    /// without rows, a prefix the index cannot range over): then every entity is a candidate.
    pub fn of(expr: &Expr) -> Option<Lookup> {
        match expr {
            Expr::And(a, b) => {
                let mut parts = Vec::new();
                for part in [a, b].into_iter().filter_map(|e| Lookup::of(e)) {
                    match part {
                        Lookup::And(inner) => parts.extend(inner),
                        other => parts.push(other),
                    }
                }
                let parts = merge_ranges(parts);
                match parts.len() {
                    0 => None,
                    1 => parts.into_iter().next(),
                    _ => Some(Lookup::And(parts)),
                }
            }
            Expr::Or(a, b) => Some(Lookup::Or(vec![Lookup::of(a)?, Lookup::of(b)?])),
            Expr::Not(_) => None,
            Expr::Compare {
                property,
                op,
                value,
            } => compare(property, *op, value).map(Lookup::Leaf),
            Expr::Contains { property, text } => {
                indexed(property)?;
                let range = match text.strip_suffix('*') {
                    Some(prefix) => {
                        let lo = prefix.to_lowercase();
                        Range::Word {
                            hi: prefix_end(&cut(lo.chars())),
                            lo: cut(lo.chars()),
                            exact: false,
                        }
                    }
                    None => Range::Word {
                        lo: cut(text.to_lowercase().chars()),
                        hi: None,
                        exact: true,
                    },
                };
                Some(Lookup::Leaf(Leaf {
                    name: property.clone(),
                    range,
                }))
            }
            Expr::Within {
                property,
                meters,
                latitude,
                ..
            } => {
                indexed(property)?;
                // A great-circle distance is at least the radius times the difference in
                // latitude, so the points within reach lie in a band of latitudes; points with
                // no real latitude (beyond the poles) are checked one by one.
                const EARTH_RADIUS_M: f64 = 6_371_008.8;
                let reach = (meters / EARTH_RADIUS_M).to_degrees() * (1.0 + 1e-9) + 1e-9;
                let name = format!("{property}.latitude");
                let band = |lo, hi| {
                    Lookup::Leaf(Leaf {
                        name: name.clone(),
                        range: Range::Num {
                            kind: Kind::Number,
                            lo,
                            hi,
                        },
                    })
                };
                Some(Lookup::Or(vec![
                    band(Some(latitude - reach), Some(latitude + reach)),
                    band(Some(90.0), None),
                    band(None, Some(-90.0)),
                ]))
            }
        }
    }

    /// The single-value reads every match must pass (the parts of a top-level `and`).
    pub fn singles(&self) -> Vec<&Leaf> {
        match self {
            Lookup::Leaf(leaf) if leaf.is_single() => vec![leaf],
            Lookup::And(parts) => parts.iter().flat_map(Lookup::singles).collect(),
            _ => Vec::new(),
        }
    }

    /// The ranges of `name` every match must be in (the parts of a top-level `and`).
    pub fn ranges_of<'a>(&'a self, name: &str) -> Vec<&'a Range> {
        match self {
            Lookup::Leaf(leaf) if leaf.name == name => vec![&leaf.range],
            Lookup::And(parts) => parts.iter().flat_map(|p| p.ranges_of(name)).collect(),
            _ => Vec::new(),
        }
    }
}

/// Joins the ranges of one property that must all hold (`n >= 5 and n < 9`) into one, so that
/// a narrow range made of two wide ones is read as narrow.
fn merge_ranges(parts: Vec<Lookup>) -> Vec<Lookup> {
    let mut out: Vec<Lookup> = Vec::with_capacity(parts.len());
    for part in parts {
        let merged = match &part {
            Lookup::Leaf(leaf) => out.iter_mut().any(|o| match o {
                Lookup::Leaf(o) if o.name == leaf.name => both(&mut o.range, &leaf.range),
                _ => false,
            }),
            _ => false,
        };
        if !merged {
            out.push(part);
        }
    }
    out
}

/// Narrows `a` to what it and `b` both hold, when they are ranges of one kind; false (and
/// `a` unchanged) otherwise.
fn both(a: &mut Range, b: &Range) -> bool {
    match (a, b) {
        (
            Range::Num { kind, lo, hi },
            Range::Num {
                kind: k2,
                lo: lo2,
                hi: hi2,
            },
        ) if kind == k2 => {
            *lo = match (*lo, *lo2) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            };
            *hi = match (*hi, *hi2) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
            true
        }
        (Range::Text { lo, hi }, Range::Text { lo: lo2, hi: hi2 }) => {
            *lo = match (lo.take(), lo2) {
                (Some(x), Some(y)) => Some(if x >= *y { x } else { y.clone() }),
                (x, y) => x.or_else(|| y.clone()),
            };
            *hi = match (hi.take(), hi2) {
                (Some(x), Some(y)) => Some(match x.0.cmp(&y.0) {
                    std::cmp::Ordering::Less => x,
                    std::cmp::Ordering::Greater => y.clone(),
                    std::cmp::Ordering::Equal => (x.0, x.1 && y.1),
                }),
                (x, y) => x.or_else(|| y.clone()),
            };
            true
        }
        _ => false,
    }
}

fn indexed(property: &str) -> Option<()> {
    let top = property.split('.').next().unwrap_or(property);
    (!UNINDEXED.contains(&top)).then_some(())
}

fn compare(property: &str, op: CmpOp, value: &Literal) -> Option<Leaf> {
    indexed(property)?;
    let num = |kind, x: f64| {
        // Strict bounds are kept as inclusive ones: `f64` may round two numbers together.
        let (lo, hi) = match op {
            CmpOp::Eq => (Some(x), Some(x)),
            CmpOp::Lt | CmpOp::Lte => (None, Some(x)),
            CmpOp::Gt | CmpOp::Gte => (Some(x), None),
        };
        Range::Num { kind, lo, hi }
    };
    let text = |s: &str| {
        let l = lower(s);
        match op {
            CmpOp::Eq => Range::Text {
                lo: Some(l.clone()),
                hi: Some((l, true)),
            },
            CmpOp::Lt | CmpOp::Lte => Range::Text {
                lo: None,
                hi: Some((l, true)),
            },
            CmpOp::Gt | CmpOp::Gte => Range::Text {
                lo: Some(l),
                hi: None,
            },
        }
    };
    let range = match value {
        Literal::Int(i) => num(Kind::Number, *i as f64),
        Literal::Float(f) => num(Kind::Number, *f),
        Literal::Bool(b) => num(Kind::Bool, if *b { 1.0 } else { 0.0 }),
        Literal::Uuid(u) => text(u),
        Literal::String(s) => match s.strip_suffix('*') {
            Some(prefix) if op == CmpOp::Eq => {
                // The query language lower-cases a prefix as a whole string, which treats a
                // final sigma apart; the index lower-cases char by char.
                if prefix.contains(['Σ', 'σ', 'ς']) {
                    return None;
                }
                let lo = lower(prefix);
                let hi = if prefix.chars().count() >= MAX_TEXT {
                    Some((lo.clone(), true))
                } else {
                    prefix_end(&lo).map(|h| (h, false))
                };
                Range::Text { lo: Some(lo), hi }
            }
            _ => text(s),
        },
    };
    Some(Leaf {
        name: property.to_owned(),
        range,
    })
}

/// A value bound to a statement of the index's SQL.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A string.
    Text(String),
    /// A number.
    Real(f64),
    /// A kind.
    Int(i32),
}

/// The SQL both stores index with: the tables, and the condition that selects a leaf's rows
/// (with parameters numbered from `first`, written `{mark}N`: `?N` for SQLite, `$N` for
/// PostgreSQL). The row values go in columns `num` and `str`, so that the same text works on
/// both.
pub struct LeafSql {
    /// `props` or `words`.
    pub table: &'static str,
    /// The condition on the table aliased `p`.
    pub condition: String,
    /// Its parameters.
    pub args: Vec<Arg>,
}

impl Leaf {
    /// The condition that selects this leaf's rows.
    pub fn sql(&self, first: usize, mark: char) -> LeafSql {
        let mut args = vec![Arg::Text(self.name.clone())];
        let param = |arg: Arg, args: &mut Vec<Arg>| {
            args.push(arg);
            format!("{mark}{}", first + args.len() - 1)
        };
        let mut condition = format!("p.name = {mark}{first}");
        let table = match &self.range {
            Range::Num { kind, lo, hi } => {
                let k = param(Arg::Int(*kind as i32), &mut args);
                condition.push_str(&format!(" AND p.kind = {k}"));
                if self.is_single() {
                    let v = param(Arg::Real(lo.unwrap_or_default()), &mut args);
                    condition.push_str(&format!(" AND p.num = {v} AND p.str = ''"));
                } else {
                    if let Some(lo) = lo {
                        let v = param(Arg::Real(*lo), &mut args);
                        condition.push_str(&format!(" AND p.num >= {v}"));
                    }
                    if let Some(hi) = hi {
                        let v = param(Arg::Real(*hi), &mut args);
                        condition.push_str(&format!(" AND p.num <= {v}"));
                    }
                }
                "props"
            }
            Range::Text { lo, hi } => {
                let k = param(Arg::Int(Kind::String as i32), &mut args);
                condition.push_str(&format!(" AND p.kind = {k} AND p.num = 0"));
                if self.is_single() {
                    let v = param(Arg::Text(lo.clone().unwrap_or_default()), &mut args);
                    condition.push_str(&format!(" AND p.str = {v}"));
                } else {
                    if let Some(lo) = lo {
                        let v = param(Arg::Text(lo.clone()), &mut args);
                        condition.push_str(&format!(" AND p.str >= {v}"));
                    }
                    if let Some((hi, included)) = hi {
                        let v = param(Arg::Text(hi.clone()), &mut args);
                        let op = if *included { "<=" } else { "<" };
                        condition.push_str(&format!(" AND p.str {op} {v}"));
                    }
                }
                "props"
            }
            Range::Word { lo, hi, exact } => {
                let v = param(Arg::Text(lo.clone()), &mut args);
                if *exact {
                    condition.push_str(&format!(" AND p.word = {v}"));
                } else {
                    condition.push_str(&format!(" AND p.word >= {v}"));
                    if let Some(hi) = hi {
                        let v = param(Arg::Text(hi.clone()), &mut args);
                        condition.push_str(&format!(" AND p.word < {v}"));
                    }
                }
                "words"
            }
        };
        LeafSql {
            table,
            condition,
            args,
        }
    }
}

/// The start condition on `(kind, num, str, uuid)` of a walk by value, and its order, in
/// either direction.
fn walk_sql(
    from: Option<&super::search::From>,
    desc: bool,
    first: usize,
    mark: char,
) -> (String, String, Vec<Arg>) {
    let (op, dir) = if desc { ("<", " DESC") } else { (">", "") };
    let order = format!("p.kind{dir}, p.num{dir}, p.str{dir}, p.uuid{dir}");
    let Some(from) = from else {
        return (String::new(), order, Vec::new());
    };
    let mut args = vec![
        Arg::Int(from.key.kind as i32),
        Arg::Real(from.key.num),
        Arg::Text(from.key.text.clone()),
    ];
    let p = |i: usize| format!("{mark}{}", first + i);
    let condition = match &from.uuid {
        Some(uuid) => {
            args.push(Arg::Text(uuid.clone()));
            format!(
                " AND (p.kind, p.num, p.str, p.uuid) {op} ({}, {}, {}, {})",
                p(0),
                p(1),
                p(2),
                p(3)
            )
        }
        None => format!(
            " AND (p.kind, p.num, p.str) {op}= ({}, {}, {})",
            p(0),
            p(1),
            p(2)
        ),
    };
    (condition, order, args)
}

/// One statement of the index's reads: its text, with parameters `{mark}1…` (`?` for SQLite,
/// `$` for PostgreSQL), and their values in order.
pub struct Statement {
    /// The SQL.
    pub sql: String,
    /// The parameters.
    pub args: Vec<Arg>,
}

/// The entity columns every walk selects, from `entities e`.
const ENTITY: &str = "e.uuid, e.collection, e.name, e.data";

fn text(s: &str) -> Arg {
    Arg::Text(s.to_owned())
}

/// The reads of [`IndexReads`](super::search::IndexReads), written once for both stores.
impl Statement {
    /// Uuids of entities with a row in `leaf`, at most `cap + 1`.
    pub fn leaf_uuids(
        app: &str,
        collection: &str,
        leaf: &Leaf,
        cap: usize,
        mark: char,
    ) -> Statement {
        let l = leaf.sql(3, mark);
        let mut args = vec![text(app), text(collection)];
        args.extend(l.args);
        Statement {
            sql: format!(
                "SELECT p.uuid FROM {} p WHERE p.app = {mark}1 AND p.collection = {mark}2 AND {} \
                 LIMIT {}",
                l.table,
                l.condition,
                cap + 1
            ),
            args,
        }
    }

    /// Up to `n` entities in uuid order after `after`, with a row in `single` if given.
    pub fn by_uuid(
        app: &str,
        collection: &str,
        single: Option<&Leaf>,
        after: Option<&str>,
        desc: bool,
        n: usize,
        mark: char,
    ) -> Statement {
        let (op, dir) = if desc { ("<", "DESC") } else { (">", "") };
        let mut args = vec![text(app), text(collection)];
        let on = if single.is_some() { "p" } else { "e" };
        let from = after.map_or(String::new(), |a| {
            args.push(text(a));
            format!("AND {on}.uuid {op} {mark}3")
        });
        let sql = match single {
            None => format!(
                "SELECT {ENTITY} FROM entities e WHERE e.app = {mark}1 AND e.collection = {mark}2 \
                 {from} ORDER BY e.uuid {dir} LIMIT {n}"
            ),
            Some(leaf) => {
                let l = leaf.sql(args.len() + 1, mark);
                args.extend(l.args);
                format!(
                    "SELECT {ENTITY} FROM {} p JOIN entities e ON e.app = p.app AND e.uuid = p.uuid \
                     WHERE p.app = {mark}1 AND p.collection = {mark}2 {from} AND {} \
                     ORDER BY p.uuid {dir} LIMIT {n}",
                    l.table, l.condition
                )
            }
        };
        Statement { sql, args }
    }

    /// Up to `n` entities with a value of `name` of their own, in index order from `from`.
    pub fn by_value(
        app: &str,
        collection: &str,
        name: &str,
        from: Option<&super::search::From>,
        desc: bool,
        n: usize,
        mark: char,
    ) -> Statement {
        let (start, order, rest) = walk_sql(from, desc, 4, mark);
        let mut args = vec![text(app), text(collection), text(name)];
        args.extend(rest);
        Statement {
            sql: format!(
                "SELECT {ENTITY} FROM props p JOIN entities e ON e.app = p.app AND e.uuid = p.uuid \
                 WHERE p.app = {mark}1 AND p.collection = {mark}2 AND p.name = {mark}3 \
                 AND p.direct = 1 {start} ORDER BY {order} LIMIT {n}"
            ),
            args,
        }
    }

    /// The next `n` entities of the collection in uuid order after `after`, each read whole
    /// if it has no value of `name` of its own, else as its uuid alone (a NULL `data`).
    pub fn missing(
        app: &str,
        collection: &str,
        name: &str,
        after: Option<&str>,
        desc: bool,
        n: usize,
        mark: char,
    ) -> Statement {
        let (op, dir) = if desc { ("<", "DESC") } else { (">", "") };
        let mut args = vec![text(app), text(collection), text(name)];
        let from = after.map_or(String::new(), |a| {
            args.push(text(a));
            format!("AND e.uuid {op} {mark}4")
        });
        Statement {
            sql: format!(
                "SELECT e.uuid, e.collection, e.name, CASE WHEN NOT EXISTS (SELECT 1 FROM props p \
                 WHERE p.app = e.app AND p.uuid = e.uuid AND p.name = {mark}3 AND p.direct = 1) \
                 THEN e.data END FROM entities e WHERE e.app = {mark}1 AND e.collection = {mark}2 \
                 {from} ORDER BY e.uuid {dir} LIMIT {n}"
            ),
            args,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(v: Value) -> Vec<IndexRow> {
        index_rows(v.as_object().expect("object"))
    }

    #[test]
    fn zero_and_minus_zero_are_one_row() {
        let v: Value = serde_json::from_str(r#"{"zs": [0.0, -0.0, 0], "z": -0.0}"#).expect("json");
        let r = rows(v);
        let zs: Vec<_> = r.iter().filter(|x| x.name == "zs" && !x.direct).collect();
        assert_eq!(zs.len(), 1, "{zs:?}");
        assert!(zs[0].key.num.is_sign_positive());
        let z: Vec<_> = r.iter().filter(|x| x.name == "z").collect();
        assert!(z[0].key.num.is_sign_positive());
    }

    #[test]
    fn every_property_and_element_has_a_row() {
        let r = rows(json!({
            "uuid": "u", "type": "book",
            "price": 9.5, "title": "Dune", "ok": true, "gone": null,
            "tags": ["SF", 3, ["deep"], {"x": 1}, 3],
            "author": {"name": "Frank", "born": 1920, "a.b": 1},
            "dotted.name": 1
        }));
        let find = |name: &str, direct: bool| {
            r.iter()
                .filter(|x| x.name == name && x.direct == direct)
                .map(|x| x.key.clone())
                .collect::<Vec<_>>()
        };
        assert!(find("uuid", true).is_empty() && find("type", true).is_empty());
        assert_eq!(find("price", true)[0].num, 9.5);
        assert_eq!(find("title", true)[0].text, "dune");
        let ok = &find("ok", true)[0];
        assert_eq!((ok.kind, ok.num), (Kind::Bool, 1.0));
        assert_eq!(find("gone", true)[0].kind, Kind::Other);
        assert_eq!(
            find("tags", true)[0].kind,
            Kind::Other,
            "an array ranks as other"
        );
        let elements = find("tags", false);
        assert_eq!(
            elements.len(),
            3,
            "SF, 3 once and deep; never the object: {elements:?}"
        );
        assert_eq!(find("author", true)[0].kind, Kind::Other);
        assert_eq!(find("author.name", true)[0].text, "frank");
        assert_eq!(find("author.born", true)[0].num, 1920.0);
        assert!(find("author.a.b", true).is_empty() && find("dotted.name", true).is_empty());
    }

    #[test]
    fn words_are_what_contains_matches() {
        let data = json!({"text": "Hello, hello world!", "tags": ["Big-Data"], "n": 3});
        assert_eq!(
            words(data.as_object().expect("object")),
            [
                ("text".to_owned(), "hello".to_owned()),
                ("text".to_owned(), "world".to_owned()),
                ("tags".to_owned(), "big".to_owned()),
                ("tags".to_owned(), "data".to_owned()),
            ]
        );
    }

    #[test]
    fn long_text_is_cut() {
        let long = "A".repeat(500);
        let key = SortKey::of(&json!(long));
        assert_eq!(key.text, "a".repeat(MAX_TEXT));
        assert!(key.is_cut() && !SortKey::of(&json!("short")).is_cut());
    }

    #[test]
    fn a_prefix_is_a_range() {
        assert_eq!(prefix_end("abc").as_deref(), Some("abd"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
    }

    fn lookup(ql: &str) -> Option<Lookup> {
        let q = gridsocket_core::query::Query::parse(ql).expect("ql");
        Lookup::of(q.filter.as_ref().expect("filter"))
    }

    #[test]
    fn filters_become_index_reads() {
        let leaf = |name: &str, range| {
            Lookup::Leaf(Leaf {
                name: name.into(),
                range,
            })
        };
        assert_eq!(
            lookup("n > 3"),
            Some(leaf(
                "n",
                Range::Num {
                    kind: Kind::Number,
                    lo: Some(3.0),
                    hi: None
                }
            ))
        );
        assert_eq!(
            lookup("name = 'Al*'"),
            Some(leaf(
                "name",
                Range::Text {
                    lo: Some("al".into()),
                    hi: Some(("am".into(), false))
                }
            ))
        );
        assert_eq!(
            lookup("text contains 'Big'"),
            Some(leaf(
                "text",
                Range::Word {
                    lo: "big".into(),
                    hi: None,
                    exact: true
                }
            ))
        );
        assert_eq!(lookup("not n = 1"), None);
        assert_eq!(lookup("uuid = 5"), None);
        assert_eq!(lookup("n = 1 or not m = 2"), None);
        let both = lookup("n = 1 and not m = 2 and k = 'x'").expect("lookup");
        assert_eq!(both.singles().len(), 2);
        assert!(lookup("name = 'Σx*'").is_none());
        assert_eq!(
            lookup("n >= 5 and k = 1 and n < 9"),
            Some(Lookup::And(vec![
                leaf(
                    "n",
                    Range::Num {
                        kind: Kind::Number,
                        lo: Some(5.0),
                        hi: Some(9.0)
                    }
                ),
                leaf(
                    "k",
                    Range::Num {
                        kind: Kind::Number,
                        lo: Some(1.0),
                        hi: Some(1.0)
                    }
                ),
            ])),
            "two ranges of one property are one"
        );
        assert!(
            matches!(lookup("loc within 10 of 1, 2"), Some(Lookup::Or(bands)) if bands.len() == 3)
        );
    }
}
