//! Tokens of the query language, each with its byte offset.

use super::{CmpOp, QueryError, QueryErrorKind};
use crate::path::is_uuid;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Uuid(String),
    Op(CmpOp),
    AndOp,
    OrOp,
    LParen,
    RParen,
    Comma,
    Star,
    LBrace,
    RBrace,
    Colon,
    End,
}

impl Tok {
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("{s:?}"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Int(n) => n.to_string(),
            Tok::Float(n) => n.to_string(),
            Tok::Uuid(u) => u.clone(),
            Tok::Op(op) => format!("'{op}'"),
            Tok::AndOp => "'&&'".into(),
            Tok::OrOp => "'||'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Star => "'*'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Colon => "':'".into(),
            Tok::End => "end of query".into(),
        }
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
}

/// Splits a query into tokens; the last one is always [`Tok::End`].
pub(super) fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, QueryError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |position, kind| QueryError { position, kind };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        // A bare UUID may start with a digit or a letter: try it before numbers and names.
        if c.is_ascii_hexdigit()
            && src.get(i..i + 36).is_some_and(is_uuid)
            && b.get(i + 36).is_none_or(|n| !is_ident_char(*n))
        {
            out.push((start, Tok::Uuid(src[i..i + 36].to_ascii_lowercase())));
            i += 36;
            continue;
        }
        let tok = match c {
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'*' => {
                i += 1;
                Tok::Star
            }
            b'{' => {
                i += 1;
                Tok::LBrace
            }
            b'}' => {
                i += 1;
                Tok::RBrace
            }
            b':' => {
                i += 1;
                Tok::Colon
            }
            b'=' => {
                i += if b.get(i + 1) == Some(&b'=') { 2 } else { 1 };
                Tok::Op(CmpOp::Eq)
            }
            b'<' | b'>' => {
                let eq = b.get(i + 1) == Some(&b'=');
                i += if eq { 2 } else { 1 };
                Tok::Op(match (c, eq) {
                    (b'<', false) => CmpOp::Lt,
                    (b'<', true) => CmpOp::Lte,
                    (_, false) => CmpOp::Gt,
                    (_, true) => CmpOp::Gte,
                })
            }
            b'&' if b.get(i + 1) == Some(&b'&') => {
                i += 2;
                Tok::AndOp
            }
            b'|' if b.get(i + 1) == Some(&b'|') => {
                i += 2;
                Tok::OrOp
            }
            b'\'' | b'"' => {
                let quote = c;
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(&ch) = b.get(i) else {
                        return Err(err(start, QueryErrorKind::UnterminatedString));
                    };
                    if ch == quote {
                        i += 1;
                        break;
                    }
                    if ch == b'\\' {
                        let Some(next) = src[i + 1..].chars().next() else {
                            return Err(err(start, QueryErrorKind::UnterminatedString));
                        };
                        s.push(match next {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                        i += 1 + next.len_utf8();
                        continue;
                    }
                    // Copy one whole UTF-8 character.
                    let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                    s.push(ch);
                    i += ch.len_utf8();
                }
                Tok::Str(s)
            }
            b'-' | b'0'..=b'9' if c != b'-' || b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                let mut float = false;
                while i < b.len() {
                    match b[i] {
                        b'0'..=b'9' => i += 1,
                        b'.' if !float && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                            float = true;
                            i += 1;
                        }
                        b'e' | b'E'
                            if b.get(i + 1).is_some_and(|n| {
                                n.is_ascii_digit() || *n == b'-' || *n == b'+'
                            }) =>
                        {
                            float = true;
                            i += 2;
                        }
                        _ => break,
                    }
                }
                let text = &src[start..i];
                if float {
                    let v: f64 = text
                        .parse()
                        .map_err(|_| err(start, QueryErrorKind::NumberOutOfRange))?;
                    if !v.is_finite() {
                        return Err(err(start, QueryErrorKind::NumberOutOfRange));
                    }
                    Tok::Float(v)
                } else {
                    Tok::Int(
                        text.parse()
                            .map_err(|_| err(start, QueryErrorKind::NumberOutOfRange))?,
                    )
                }
            }
            c if is_ident_start(c) => {
                while i < b.len() && is_ident_char(b[i]) {
                    i += 1;
                }
                Tok::Ident(src[start..i].to_owned())
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                return Err(err(start, QueryErrorKind::UnexpectedChar(ch)));
            }
        };
        out.push((start, tok));
    }
    out.push((src.len(), Tok::End));
    Ok(out)
}
