//! The property index both SQL stores keep for every entity, and what a `ql` query asks of it:
//! pure functions, written once, that turn an entity into index rows and a query into the
//! index lookups that answer it. The stores only run the SQL.
//!
//! Every top-level and nested property (dotted: `author.name`) gets rows, so any property is
//! queryable with no index to declare. A row holds one value in the form the query language
//! compares it ([`gridsocket_core::query::compare_values`] and `Expr::matches` are the
//! reference): numbers as `f64`; strings lower-cased, char by char, for comparison, and as
//! written for the tie-break of `order by`; booleans as 0 and 1. An array's elements each get a
//! row (an array matches if any element does), marked as not the property's own value, and the
//! property itself gets an `other` row, which is how `order by` ranks an array. Words of string
//! values go to a second table, for `contains`.

use serde_json::{Map, Value};

/// How the query language ranks a value in `order by`: numbers, strings, booleans, anything
/// else; a missing value after all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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

/// The rank of a property the entity does not have, after every [`Kind`].
pub const MISSING: i64 = 4;

/// One value of one property of an entity.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexRow {
    /// Dotted property name.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Numbers, and booleans as 0 or 1.
    pub num: Option<f64>,
    /// Strings, lower-cased char by char (as the query language compares them).
    pub lower: Option<String>,
    /// Strings as written (the tie-break between strings equal but for case).
    pub raw: Option<String>,
    /// True for the property's own value; false for an element of an array it holds.
    pub direct: bool,
}

/// The lower-case form the query language compares strings in: each char lower-cased on its
/// own (so that a comparison of two lower-cased strings is the query language's comparison).
pub fn lower(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// The index rows of an entity's properties.
pub fn index_rows(data: &Map<String, Value>) -> Vec<IndexRow> {
    let mut out = Vec::new();
    for (name, value) in data {
        walk(name, value, &mut out);
    }
    out
}

fn walk(name: &str, value: &Value, out: &mut Vec<IndexRow>) {
    match value {
        Value::Object(map) => {
            out.push(row(name, Kind::Other, true));
            for (k, v) in map {
                walk(&format!("{name}.{k}"), v, out);
            }
        }
        Value::Array(items) => {
            out.push(row(name, Kind::Other, true));
            elements(name, items, out);
        }
        scalar => {
            if let Some(r) = scalar_row(name, scalar, true) {
                out.push(r);
            } else {
                out.push(row(name, Kind::Other, true));
            }
        }
    }
}

/// An array's elements, arrays in it flattened (the query language looks into them), objects
/// in it not (a dotted name never reaches into an array).
fn elements(name: &str, items: &[Value], out: &mut Vec<IndexRow>) {
    for item in items {
        match item {
            Value::Array(inner) => elements(name, inner, out),
            v => {
                if let Some(r) = scalar_row(name, v, false) {
                    out.push(r);
                }
            }
        }
    }
}

fn row(name: &str, kind: Kind, direct: bool) -> IndexRow {
    IndexRow {
        name: name.to_owned(),
        kind,
        num: None,
        lower: None,
        raw: None,
        direct,
    }
}

fn scalar_row(name: &str, value: &Value, direct: bool) -> Option<IndexRow> {
    let mut r = row(name, Kind::Other, direct);
    match value {
        Value::Number(n) => {
            r.kind = Kind::Number;
            r.num = Some(n.as_f64()?);
        }
        Value::String(s) => {
            r.kind = Kind::String;
            r.lower = Some(lower(s));
            r.raw = Some(s.clone());
        }
        Value::Bool(b) => {
            r.kind = Kind::Bool;
            r.num = Some(if *b { 1.0 } else { 0.0 });
        }
        _ => return None,
    }
    Some(r)
}

/// The words of an entity's string values, per dotted property, each once: what `contains`
/// matches (lower-cased, split at every char that is not a letter or digit).
pub fn words(data: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in index_rows(data) {
        if r.kind != Kind::String {
            continue;
        }
        let text = r.raw.as_deref().unwrap_or_default().to_lowercase();
        for w in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            if !out.iter().any(|(n, x)| *n == r.name && x == w) {
                out.push((r.name.clone(), w.to_owned()));
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(v: Value) -> Vec<IndexRow> {
        index_rows(v.as_object().expect("object"))
    }

    #[test]
    fn every_property_and_element_has_a_row() {
        let r = rows(json!({
            "price": 9.5, "title": "Dune", "ok": true, "gone": null,
            "tags": ["SF", 3, ["deep"], {"x": 1}],
            "author": {"name": "Frank", "born": 1920}
        }));
        let find = |name: &str, direct: bool| {
            r.iter()
                .filter(|x| x.name == name && x.direct == direct)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(find("price", true)[0].num, Some(9.5));
        let title = &find("title", true)[0];
        assert_eq!(
            (title.lower.as_deref(), title.raw.as_deref()),
            (Some("dune"), Some("Dune"))
        );
        assert_eq!(
            (find("ok", true)[0].kind, find("ok", true)[0].num),
            (Kind::Bool, Some(1.0))
        );
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
            "SF, 3 and deep; never the object: {elements:?}"
        );
        assert_eq!(find("author", true)[0].kind, Kind::Other);
        assert_eq!(find("author.name", true)[0].lower.as_deref(), Some("frank"));
        assert_eq!(find("author.born", true)[0].num, Some(1920.0));
    }

    #[test]
    fn words_are_what_contains_matches() {
        let w = words(
            json!({"text": "Hello, hello world!", "tags": ["Big-Data"], "n": 3})
                .as_object()
                .expect("object"),
        );
        assert_eq!(
            w,
            [
                ("text".to_owned(), "hello".to_owned()),
                ("text".to_owned(), "world".to_owned()),
                ("tags".to_owned(), "big".to_owned()),
                ("tags".to_owned(), "data".to_owned()),
            ]
        );
    }

    #[test]
    fn a_prefix_is_a_range() {
        assert_eq!(prefix_end("abc").as_deref(), Some("abd"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
    }
}
