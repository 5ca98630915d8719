//! Usergrid's English inflector: collection names are plural, entity types singular.
//!
//! `POST /book` and `POST /books` both write the `books` collection of type `book`, as Usergrid
//! does (its `Schema` uses a Rails-style inflector; these are the same rules).

const UNCOUNTABLE: &[&str] = &[
    "equipment",
    "information",
    "rice",
    "money",
    "species",
    "series",
    "fish",
    "sheep",
    "data",
    "analytics",
    "news",
];

const IRREGULAR: &[(&str, &str)] = &[
    ("person", "people"),
    ("man", "men"),
    ("child", "children"),
    ("sex", "sexes"),
    ("move", "moves"),
    ("stadium", "stadiums"),
];

fn is_vowel_or_y(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y')
}

/// The char before a suffix of `suffix_len` bytes, if any.
fn before(word: &str, suffix_len: usize) -> Option<char> {
    word[..word.len() - suffix_len].chars().next_back()
}

fn stem(word: &str, suffix_len: usize) -> &str {
    &word[..word.len() - suffix_len]
}

/// The plural of an (ASCII, lower-case) English noun.
pub fn pluralize(word: &str) -> String {
    let w = word.to_ascii_lowercase();
    if w.is_empty() || UNCOUNTABLE.contains(&w.as_str()) {
        return w;
    }
    for (one, many) in IRREGULAR {
        if w == *one || w == *many {
            return (*many).to_owned();
        }
        if let Some(prefix) = w.strip_suffix(one).filter(|_| one.len() > 3) {
            return format!("{prefix}{many}");
        }
    }
    if w == "ox" {
        return "oxen".into();
    }
    if w.ends_with("quiz") {
        return format!("{w}zes");
    }
    for (sing, plur) in [
        ("matrix", "matrices"),
        ("vertex", "vertices"),
        ("index", "indices"),
    ] {
        if let Some(prefix) = w.strip_suffix(sing) {
            return format!("{prefix}{plur}");
        }
    }
    if w == "mouse" || w == "louse" {
        return format!("{}ice", &w[..1]);
    }
    if w.ends_with('x') || w.ends_with("ch") || w.ends_with("ss") || w.ends_with("sh") {
        return format!("{w}es");
    }
    if w.ends_with('y') && (w.ends_with("quy") || before(&w, 1).is_some_and(|c| !is_vowel_or_y(c)))
    {
        return format!("{}ies", stem(&w, 1));
    }
    if w.ends_with("hive") {
        return format!("{w}s");
    }
    if w.ends_with("fe") && before(&w, 2).is_some_and(|c| c != 'f') {
        return format!("{}ves", stem(&w, 2));
    }
    if w.ends_with("lf") || w.ends_with("rf") {
        return format!("{}ves", stem(&w, 1));
    }
    if w.ends_with("sis") {
        return format!("{}ses", stem(&w, 3));
    }
    if w.ends_with("tum") || w.ends_with("ium") {
        return format!("{}a", stem(&w, 2));
    }
    if w.ends_with("buffalo") || w.ends_with("tomato") {
        return format!("{w}es");
    }
    if w.ends_with("bus") {
        return format!("{w}es");
    }
    if w.ends_with("alias") || w.ends_with("status") {
        return format!("{w}es");
    }
    if w.ends_with("octopus") || w.ends_with("virus") {
        return format!("{}i", stem(&w, 2));
    }
    if w == "axis" || w == "testis" {
        return format!("{}es", stem(&w, 2));
    }
    if w.ends_with('s') {
        return w;
    }
    format!("{w}s")
}

/// The singular of an (ASCII, lower-case) English noun: the entity type of a collection.
pub fn singularize(word: &str) -> String {
    let w = word.to_ascii_lowercase();
    if w.is_empty() || UNCOUNTABLE.contains(&w.as_str()) {
        return w;
    }
    for (one, many) in IRREGULAR {
        if w == *one || w == *many {
            return (*one).to_owned();
        }
        if let Some(prefix) = w.strip_suffix(many).filter(|_| many.len() > 3) {
            return format!("{prefix}{one}");
        }
    }
    if w == "oxen" || w == "ox" {
        return "ox".into();
    }
    if let Some(prefix) = w.strip_suffix("quizzes") {
        return format!("{prefix}quiz");
    }
    for (sing, plur) in [
        ("matrix", "matrices"),
        ("vertex", "vertices"),
        ("index", "indices"),
    ] {
        if let Some(prefix) = w.strip_suffix(plur) {
            return format!("{prefix}{sing}");
        }
    }
    if w == "mice" || w == "lice" {
        return format!("{}ouse", &w[..1]);
    }
    for keep in [
        "alias", "status", "bus", "octopus", "virus", "ss", "sis", "database",
    ] {
        if w.ends_with(keep) {
            return w;
        }
    }
    for strip_es in ["aliases", "statuses", "buses"] {
        if w.ends_with(strip_es) {
            return stem(&w, 2).to_owned();
        }
    }
    if w.ends_with("octopi") || w.ends_with("viri") {
        return format!("{}us", stem(&w, 1));
    }
    if w.ends_with("crises") || w.ends_with("testes") || w == "axes" {
        return format!("{}is", stem(&w, 2));
    }
    if w.ends_with("shoes") {
        return stem(&w, 1).to_owned();
    }
    if w.ends_with("oes") {
        return stem(&w, 2).to_owned();
    }
    if w.ends_with("xes") || w.ends_with("ches") || w.ends_with("sses") || w.ends_with("shes") {
        return stem(&w, 2).to_owned();
    }
    if w.ends_with("movies") {
        return stem(&w, 1).to_owned();
    }
    if w.ends_with("ies")
        && (w.ends_with("quies") || before(&w, 3).is_some_and(|c| !is_vowel_or_y(c)))
    {
        return format!("{}y", stem(&w, 3));
    }
    if w.ends_with("hives") || w.ends_with("tives") {
        return stem(&w, 1).to_owned();
    }
    if w.ends_with("lves") || w.ends_with("rves") {
        return format!("{}f", stem(&w, 3));
    }
    if w.ends_with("ves") && before(&w, 3).is_some_and(|c| c != 'f') {
        return format!("{}fe", stem(&w, 3));
    }
    if w.ends_with("ses") && w.len() > 4 {
        let base = stem(&w, 3);
        if [
            "analy", "ba", "diagno", "parenthe", "progno", "synop", "the",
        ]
        .iter()
        .any(|s| base.ends_with(s))
        {
            return format!("{base}sis");
        }
    }
    if (w.ends_with("ta") || w.ends_with("ia")) && w.len() > 3 {
        return format!("{}um", stem(&w, 1));
    }
    if let Some(s) = w.strip_suffix('s') {
        return s.to_owned();
    }
    w
}

/// The canonical collection name for what a path calls a collection (`Book` → `books`).
pub fn collection_name(segment: &str) -> String {
    pluralize(&singularize(segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_common_nouns() {
        for (one, many) in [
            ("book", "books"),
            ("user", "users"),
            ("group", "groups"),
            ("activity", "activities"),
            ("person", "people"),
            ("box", "boxes"),
            ("church", "churches"),
            ("wife", "wives"),
            ("wolf", "wolves"),
            ("status", "statuses"),
            ("bus", "buses"),
            ("tomato", "tomatoes"),
            ("quiz", "quizzes"),
            ("matrix", "matrices"),
            ("mouse", "mice"),
            ("octopus", "octopi"),
            ("analysis", "analyses"),
            ("key", "keys"),
            ("day", "days"),
            ("sheep", "sheep"),
            ("data", "data"),
            ("device", "devices"),
            ("role", "roles"),
            ("message", "messages"),
            ("class", "classes"),
            ("movie", "movies"),
            ("hive", "hives"),
            ("medium", "media"),
        ] {
            assert_eq!(pluralize(one), many, "plural of {one}");
            assert_eq!(singularize(many), one, "singular of {many}");
            assert_eq!(collection_name(one), many, "collection of {one}");
            assert_eq!(collection_name(many), many, "collection of {many}");
        }
    }
}
