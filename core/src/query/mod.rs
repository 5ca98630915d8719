//! The Usergrid query language: `select … where … order by …`.
//!
//! [`Query::parse`] turns a `ql` string into a [`Query`]; [`Expr::matches`] evaluates the filter
//! against an entity's JSON, which is how both the store answers `ql` reads and the subscription
//! matcher decides whether a change concerns a filtered subscription.

mod eval;
mod lexer;
mod parser;

pub use eval::{compare_values, lookup};

use std::fmt;

/// Deepest nesting of parentheses and `not` a query may have, by default.
pub const MAX_DEPTH: usize = 32;
/// Most comparisons (and selected fields) a query may have, by default.
pub const MAX_TERMS: usize = 128;
/// Most `order by` keys a query may have, by default.
pub const MAX_ORDER: usize = 8;

/// How complex a query may be: it bounds the parser's recursion and the cost of matching one
/// entity, whoever wrote the query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Deepest nesting of parentheses and `not`.
    pub max_depth: usize,
    /// Most comparisons, and most selected fields.
    pub max_terms: usize,
    /// Most `order by` keys.
    pub max_order: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_depth: MAX_DEPTH,
            max_terms: MAX_TERMS,
            max_order: MAX_ORDER,
        }
    }
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Query {
    /// Which properties to return.
    pub select: Select,
    /// The `where` expression; `None` matches everything.
    pub filter: Option<Expr>,
    /// `order by` keys, most significant first.
    pub order: Vec<OrderBy>,
}

/// The `select` clause.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Select {
    /// `select *` (or no select): whole entities.
    #[default]
    All,
    /// `select a, b.c`: a list of value rows.
    Fields(Vec<String>),
    /// `select {name: source, …}`: objects with renamed properties.
    Rename(Vec<(String, String)>),
}

/// One `order by` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderBy {
    /// Dotted property name.
    pub property: String,
    /// `desc`.
    pub descending: bool,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`, `eq`
    Eq,
    /// `<`, `lt`
    Lt,
    /// `<=`, `lte`
    Lte,
    /// `>`, `gt`
    Gt,
    /// `>=`, `gte`
    Gte,
}

/// A literal on the right of an operator.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// `'text'`; a trailing `*` on an equality means "starts with".
    String(String),
    /// `42`, `-7`
    Int(i64),
    /// `1.5`, `2e3`
    Float(f64),
    /// `true`, `false`
    Bool(bool),
    /// A bare UUID.
    Uuid(String),
}

/// A filter expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Both sides match.
    And(Box<Expr>, Box<Expr>),
    /// Either side matches.
    Or(Box<Expr>, Box<Expr>),
    /// The inner expression does not match.
    Not(Box<Expr>),
    /// `prop op literal`.
    Compare {
        /// Dotted property name.
        property: String,
        /// The operator.
        op: CmpOp,
        /// The right-hand side.
        value: Literal,
    },
    /// `prop contains 'word'`: a whole-word match, `word*` for a word prefix.
    Contains {
        /// Dotted property name.
        property: String,
        /// The word (or prefix with a trailing `*`).
        text: String,
    },
    /// `prop within meters of lat, lon`: the property's `latitude`/`longitude` is that close.
    Within {
        /// Dotted property name of a location object.
        property: String,
        /// Radius in meters.
        meters: f64,
        /// Latitude of the centre.
        latitude: f64,
        /// Longitude of the centre.
        longitude: f64,
    },
}

/// A query that cannot be parsed, with the byte offset where it went wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{kind} at position {position}")]
pub struct QueryError {
    /// Byte offset into the `ql` string.
    pub position: usize,
    /// What went wrong.
    pub kind: QueryErrorKind,
}

/// What is wrong with a query.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryErrorKind {
    /// A `'` string has no closing quote.
    #[error("unterminated string")]
    UnterminatedString,
    /// A character that starts no token.
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    /// A number that does not fit.
    #[error("number out of range")]
    NumberOutOfRange,
    /// The parser wanted something else here.
    #[error("expected {expected}, found {found}")]
    Expected {
        /// What would have been accepted.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// More `order by` keys than the [`QueryLimits`] allow.
    #[error("order by has more than {0} keys")]
    TooManyOrderKeys(usize),
    /// Nesting deeper or more comparisons than the [`QueryLimits`] allow.
    #[error("query too complex (at most {max_depth} levels and {max_terms} comparisons)")]
    TooComplex {
        /// The nesting allowed.
        max_depth: usize,
        /// The comparisons allowed.
        max_terms: usize,
    },
}

impl Query {
    /// Parses a `ql` string within the default [`QueryLimits`]. An empty string is the query
    /// that matches everything.
    pub fn parse(ql: &str) -> Result<Query, QueryError> {
        parser::parse(ql, QueryLimits::default())
    }

    /// Parses a `ql` string within the given limits.
    pub fn parse_with(ql: &str, limits: QueryLimits) -> Result<Query, QueryError> {
        parser::parse(ql, limits)
    }

    /// True when the entity passes the `where` clause.
    pub fn matches(&self, entity: &serde_json::Value) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(entity))
    }

    /// Sorts entities by [`Query::compare`].
    pub fn sort(&self, entities: &mut [serde_json::Value]) {
        entities.sort_by(|a, b| self.compare(a, b));
    }

    /// The order of a query's answer, a total order on entities: by each `order by` key in
    /// turn, then by `uuid`. A key's missing values come last whichever its direction, as in
    /// Elasticsearch's default (`missing: _last`), which Usergrid 2 answered `order by` with;
    /// ties (the same value, or both missing) go by `uuid` in the first key's direction, so
    /// `order by created desc` lists the newest first among equals too, and an index walked
    /// backwards yields exactly this order.
    pub fn compare(&self, a: &serde_json::Value, b: &serde_json::Value) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        for key in &self.order {
            let (x, y) = (lookup(a, &key.property), lookup(b, &key.property));
            let ord = match (x, y) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(_), Some(_)) if key.descending => compare_values(x, y).reverse(),
                (Some(_), Some(_)) => compare_values(x, y),
            };
            if ord.is_ne() {
                return ord;
            }
        }
        fn uuid(v: &serde_json::Value) -> Option<&str> {
            v.get("uuid").and_then(serde_json::Value::as_str)
        }
        let ord = uuid(a).cmp(&uuid(b));
        if self.order.first().is_some_and(|k| k.descending) {
            ord.reverse()
        } else {
            ord
        }
    }

    /// What the `select` clause makes of one entity: the entity itself for `*`, a row of values
    /// for a field list, an object for a renaming select.
    pub fn project(&self, entity: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match &self.select {
            Select::All => entity.clone(),
            Select::Fields(fields) => Value::Array(
                fields
                    .iter()
                    .map(|f| lookup(entity, f).cloned().unwrap_or(Value::Null))
                    .collect(),
            ),
            Select::Rename(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(to, from)| {
                        (
                            to.clone(),
                            lookup(entity, from).cloned().unwrap_or(Value::Null),
                        )
                    })
                    .collect(),
            ),
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "=",
            CmpOp::Lt => "<",
            CmpOp::Lte => "<=",
            CmpOp::Gt => ">",
            CmpOp::Gte => ">=",
        })
    }
}

#[cfg(test)]
mod tests;
