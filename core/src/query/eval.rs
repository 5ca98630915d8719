//! Evaluating a filter against an entity's JSON, and the value order used by `order by`.

use super::{CmpOp, Expr, Literal};
use serde_json::Value;
use std::cmp::Ordering;

/// Finds a dotted property (`location.latitude`) in an entity.
pub fn lookup<'a>(entity: &'a Value, dotted: &str) -> Option<&'a Value> {
    let mut cur = entity;
    for part in dotted.split('.') {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// The order of values in `order by`: numbers, then strings (case-insensitively, so `Bob` and
/// `bob` are equal), then booleans, then anything else (objects, arrays, `null`, all equal); a
/// missing value sorts last. [`Query::compare`](super::Query::compare) builds on it.
pub fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            _ => 3,
        }
    }
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
            (Value::String(x), Value::String(y)) => cmp_ci(x, y),
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            _ => rank(a).cmp(&rank(b)),
        },
    }
}

fn cmp_ci(a: &str, b: &str) -> Ordering {
    a.chars()
        .flat_map(char::to_lowercase)
        .cmp(b.chars().flat_map(char::to_lowercase))
}

fn op_holds(op: CmpOp, ord: Ordering) -> bool {
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Lte => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Gte => ord != Ordering::Less,
    }
}

fn compare_scalar(actual: &Value, op: CmpOp, lit: &Literal) -> bool {
    match (actual, lit) {
        (Value::Array(items), _) => items.iter().any(|v| compare_scalar(v, op, lit)),
        (Value::Number(n), Literal::Int(i)) => match n.as_i64() {
            Some(a) => op_holds(op, a.cmp(i)),
            None => n
                .as_f64()
                .and_then(|a| a.partial_cmp(&(*i as f64)))
                .is_some_and(|o| op_holds(op, o)),
        },
        (Value::Number(n), Literal::Float(f)) => n
            .as_f64()
            .and_then(|a| a.partial_cmp(f))
            .is_some_and(|o| op_holds(op, o)),
        (Value::String(s), Literal::String(pat)) => {
            if op == CmpOp::Eq
                && let Some(prefix) = pat.strip_suffix('*')
            {
                return s.to_lowercase().starts_with(&prefix.to_lowercase());
            }
            op_holds(op, cmp_ci(s, pat))
        }
        (Value::String(s), Literal::Uuid(u)) => op_holds(op, cmp_ci(s, u)),
        (Value::Bool(a), Literal::Bool(b)) => op_holds(op, a.cmp(b)),
        _ => false,
    }
}

fn contains_word(actual: &Value, word: &str) -> bool {
    match actual {
        Value::Array(items) => items.iter().any(|v| contains_word(v, word)),
        Value::String(s) => {
            let (needle, prefix) = match word.strip_suffix('*') {
                Some(p) => (p.to_lowercase(), true),
                None => (word.to_lowercase(), false),
            };
            s.to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .any(|w| {
                    if prefix {
                        w.starts_with(&needle)
                    } else {
                        w == needle
                    }
                })
        }
        _ => false,
    }
}

fn distance_meters(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_008.8;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().atan2((1.0 - a).sqrt())
}

impl Expr {
    /// True when the entity satisfies this expression. A missing property never compares true.
    pub fn matches(&self, entity: &Value) -> bool {
        match self {
            Expr::And(a, b) => a.matches(entity) && b.matches(entity),
            Expr::Or(a, b) => a.matches(entity) || b.matches(entity),
            Expr::Not(inner) => !inner.matches(entity),
            Expr::Compare {
                property,
                op,
                value,
            } => lookup(entity, property).is_some_and(|v| compare_scalar(v, *op, value)),
            Expr::Contains { property, text } => {
                lookup(entity, property).is_some_and(|v| contains_word(v, text))
            }
            Expr::Within {
                property,
                meters,
                latitude,
                longitude,
            } => lookup(entity, property).is_some_and(|loc| {
                let lat = loc.get("latitude").and_then(Value::as_f64);
                let lon = loc.get("longitude").and_then(Value::as_f64);
                match (lat, lon) {
                    (Some(lat), Some(lon)) => {
                        distance_meters(lat, lon, *latitude, *longitude) <= *meters
                    }
                    _ => false,
                }
            }),
        }
    }
}
