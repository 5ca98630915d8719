use super::*;
use serde_json::json;

fn q(s: &str) -> Query {
    Query::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn parses_the_grammar() {
    let query = q(
        "select * where price < 10 and (genre = 'sf' or not author eq 'x') order by price desc, title",
    );
    assert_eq!(query.select, Select::All);
    assert_eq!(query.order.len(), 2);
    assert!(query.order[0].descending);
    assert!(!query.order[1].descending);
    assert!(matches!(query.filter, Some(Expr::And(..))));
    assert_eq!(q("name='fred'").filter, q("where name = 'fred'").filter);
    assert_eq!(q("").filter, None);
    assert_eq!(q("order by name").order[0].property, "name");
    assert_eq!(
        q("select a, b.c").select,
        Select::Fields(vec!["a".into(), "b.c".into()])
    );
    assert_eq!(
        q("select {n: name}").select,
        Select::Rename(vec![("n".into(), "name".into())])
    );
    assert!(matches!(
        q("SELECT * WHERE a GTE 1 && b LT 2.5 || c = true").filter,
        Some(Expr::Or(..))
    ));
    let u = q("owner = 6E2C0E2A-0000-11E0-8000-000000000001");
    assert!(matches!(
        u.filter,
        Some(Expr::Compare {
            value: Literal::Uuid(_),
            ..
        })
    ));
    assert!(matches!(
        q("location within 1000 of 37.77, -122.41").filter,
        Some(Expr::Within { .. })
    ));
}

#[test]
fn reports_errors_with_position() {
    let e = Query::parse("select * where price <").unwrap_err();
    assert_eq!(e.position, 22);
    assert!(e.to_string().contains("position 22"), "{e}");
    let e = Query::parse("name = 'open").unwrap_err();
    assert_eq!(e.kind, QueryErrorKind::UnterminatedString);
    assert_eq!(e.position, 7);
    let e = Query::parse("a = 1 b").unwrap_err();
    assert_eq!(e.position, 6);
    assert!(matches!(
        Query::parse("a # 1").unwrap_err().kind,
        QueryErrorKind::UnexpectedChar('#')
    ));
    assert!(matches!(
        Query::parse("a = 99999999999999999999").unwrap_err().kind,
        QueryErrorKind::NumberOutOfRange
    ));
    let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
    assert_eq!(
        Query::parse(&deep).unwrap_err().kind,
        QueryErrorKind::TooComplex {
            max_depth: 32,
            max_terms: 128
        }
    );
    let nots = format!("{}a = 1", "not ".repeat(10_000));
    assert_eq!(
        Query::parse(&nots).unwrap_err().kind,
        QueryErrorKind::TooComplex {
            max_depth: 32,
            max_terms: 128
        }
    );
    assert!(Query::parse("name contains 3").is_err());
    assert!(Query::parse("order name").is_err());
}

#[test]
fn evaluates_filters() {
    let book = json!({"title": "Dune Messiah", "price": 9.5, "pages": 256, "tags": ["sf", "classic"],
                      "author": {"name": "Frank Herbert"}, "available": true,
                      "location": {"latitude": 37.7749, "longitude": -122.4194}});
    let yes = |s: &str| assert!(q(s).matches(&book), "{s} should match");
    let no = |s: &str| assert!(!q(s).matches(&book), "{s} should not match");
    yes("price < 10");
    no("price > 10");
    yes("pages = 256 and price >= 9.5");
    yes("pages <= 256");
    no("pages lt 256");
    yes("author.name = 'frank herbert'");
    yes("title = 'Dune*'");
    no("title = 'Messiah*'");
    yes("tags = 'sf'");
    yes("title contains 'messiah'");
    yes("title contains 'mess*'");
    no("title contains 'mess'");
    yes("available = true");
    no("missing = 1");
    yes("not missing = 1");
    yes("location within 1000 of 37.78, -122.42");
    no("location within 10 of 40.0, -74.0");
    yes("(price > 100 or pages > 100) and not title = 'x'");
}

#[test]
fn sorts_and_projects() {
    let mut v = vec![
        json!({"n": "b", "p": 2}),
        json!({"n": "A", "p": 3}),
        json!({"p": 1}),
    ];
    q("order by n").sort(&mut v);
    assert_eq!(v[0]["n"], "A");
    assert_eq!(v[2].get("n"), None);
    q("order by p desc").sort(&mut v);
    assert_eq!(v[0]["p"], 3);
    q("order by n desc").sort(&mut v);
    assert_eq!(v[0]["n"], "b");
    assert_eq!(
        v[2].get("n"),
        None,
        "missing comes last in either direction"
    );
    q("order by p desc").sort(&mut v);
    assert_eq!(q("select n, p").project(&v[0]), json!(["A", 3]));
    assert_eq!(q("select {name: n}").project(&v[0]), json!({"name": "A"}));
}

#[test]
fn ties_go_by_uuid_in_the_first_keys_direction() {
    let mut v = vec![
        json!({"uuid": "b", "n": "x"}),
        json!({"uuid": "c", "n": "X"}),
        json!({"uuid": "a", "n": "x"}),
        json!({"uuid": "d"}),
        json!({"uuid": "e"}),
    ];
    let order = |v: &[serde_json::Value]| v.iter().map(|e| e["uuid"].clone()).collect::<Vec<_>>();
    q("order by n").sort(&mut v);
    assert_eq!(
        order(&v),
        json!(["a", "b", "c", "d", "e"]).as_array().unwrap().clone()
    );
    q("order by n desc").sort(&mut v);
    assert_eq!(
        order(&v),
        json!(["c", "b", "a", "e", "d"]).as_array().unwrap().clone()
    );
    q("").sort(&mut v);
    assert_eq!(
        order(&v),
        json!(["a", "b", "c", "d", "e"]).as_array().unwrap().clone()
    );
}

#[test]
fn order_keys_and_selected_fields_are_bounded() {
    let keys = |n: usize| {
        (0..n)
            .map(|i| format!("f{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    assert!(Query::parse(&format!("select * order by {}", keys(8))).is_ok());
    let err = Query::parse(&format!("select * order by {}", keys(9))).unwrap_err();
    assert!(
        matches!(err.kind, QueryErrorKind::TooManyOrderKeys(8)),
        "{err:?}"
    );
    assert!(Query::parse(&format!("select {}", keys(128))).is_ok());
    assert!(Query::parse(&format!("select {}", keys(4000))).is_err());
    let renames = (0..200)
        .map(|i| format!("a{i}:b{i}"))
        .collect::<Vec<_>>()
        .join(",");
    assert!(Query::parse(&format!("select {{{renames}}}")).is_err());
}
