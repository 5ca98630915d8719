//! Recursive-descent parser for the query grammar (Usergrid's `CpQueryFilter.g`).

use super::lexer::{Tok, tokenize};
use super::{
    CmpOp, Expr, Literal, OrderBy, Query, QueryError, QueryErrorKind, QueryLimits, Select,
};

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
    terms: usize,
    limits: QueryLimits,
}

pub(super) fn parse(src: &str, limits: QueryLimits) -> Result<Query, QueryError> {
    let mut p = Parser {
        toks: tokenize(src)?,
        pos: 0,
        depth: 0,
        terms: 0,
        limits,
    };
    let mut query = Query::default();
    if p.eat_kw("select") {
        query.select = p.select()?;
    }
    let had_where = p.eat_kw("where");
    if had_where || !(p.at_end() || p.at_kw("order")) {
        query.filter = Some(p.or_expr()?);
    }
    if p.eat_kw("order") {
        p.expect_kw("by")?;
        loop {
            let property = p.ident("a property name")?;
            let descending = if p.eat_kw("desc") {
                true
            } else {
                p.eat_kw("asc");
                false
            };
            query.order.push(OrderBy {
                property,
                descending,
            });
            if query.order.len() > p.limits.max_order {
                return Err(QueryError {
                    position: p.offset(),
                    kind: QueryErrorKind::TooManyOrderKeys(p.limits.max_order),
                });
            }
            if !p.eat(&Tok::Comma) {
                break;
            }
        }
    }
    if !p.at_end() {
        return Err(p.expected("end of query"));
    }
    Ok(query)
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].1
    }

    fn offset(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].0
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn at_end(&self) -> bool {
        *self.peek() == Tok::End
    }

    fn at_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.at_kw(kw);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        let hit = self.peek() == tok;
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expected(&self, expected: &'static str) -> QueryError {
        QueryError {
            position: self.offset(),
            kind: QueryErrorKind::Expected {
                expected,
                found: self.peek().describe(),
            },
        }
    }

    fn expect_kw(&mut self, kw: &'static str) -> Result<(), QueryError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.expected(kw))
        }
    }

    fn expect(&mut self, tok: Tok, what: &'static str) -> Result<(), QueryError> {
        if self.eat(&tok) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn ident(&mut self, what: &'static str) -> Result<String, QueryError> {
        match self.peek() {
            Tok::Ident(s) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn too_complex(&self) -> QueryError {
        QueryError {
            position: self.offset(),
            kind: QueryErrorKind::TooComplex {
                max_depth: self.limits.max_depth,
                max_terms: self.limits.max_terms,
            },
        }
    }

    fn select(&mut self) -> Result<Select, QueryError> {
        if self.eat(&Tok::Star) {
            return Ok(Select::All);
        }
        if self.eat(&Tok::LBrace) {
            let mut pairs = Vec::new();
            loop {
                let to = self.ident("a property name")?;
                self.expect(Tok::Colon, "':'")?;
                let from = self.ident("a property name")?;
                pairs.push((to, from));
                if pairs.len() > self.limits.max_terms {
                    return Err(self.too_complex());
                }
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
            self.expect(Tok::RBrace, "'}'")?;
            return Ok(Select::Rename(pairs));
        }
        let mut fields = vec![self.ident("'*', '{' or a property name")?];
        while self.eat(&Tok::Comma) {
            fields.push(self.ident("a property name")?);
            if fields.len() > self.limits.max_terms {
                return Err(self.too_complex());
            }
        }
        Ok(Select::Fields(fields))
    }

    fn or_expr(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.and_expr()?;
        while self.eat(&Tok::OrOp) || self.eat_kw("or") {
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.not_expr()?;
        while self.eat(&Tok::AndOp) || self.eat_kw("and") {
            let right = self.not_expr()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not_expr(&mut self) -> Result<Expr, QueryError> {
        if self.eat_kw("not") {
            self.depth += 1;
            if self.depth > self.limits.max_depth {
                return Err(self.too_complex());
            }
            let inner = self.not_expr()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.operation()
    }

    fn operation(&mut self) -> Result<Expr, QueryError> {
        if self.eat(&Tok::LParen) {
            self.depth += 1;
            if self.depth > self.limits.max_depth {
                return Err(self.too_complex());
            }
            let inner = self.or_expr()?;
            self.expect(Tok::RParen, "')'")?;
            self.depth -= 1;
            return Ok(inner);
        }
        self.terms += 1;
        if self.terms > self.limits.max_terms {
            return Err(self.too_complex());
        }
        let property = self.ident("a property name or '('")?;
        if self.eat_kw("contains") {
            return match self.bump() {
                Tok::Str(text) => Ok(Expr::Contains { property, text }),
                _ => {
                    self.pos -= 1;
                    Err(self.expected("a string after 'contains'"))
                }
            };
        }
        if self.eat_kw("within") {
            let meters = self.number()?;
            self.expect_kw("of")?;
            let latitude = self.number()?;
            self.expect(Tok::Comma, "','")?;
            let longitude = self.number()?;
            return Ok(Expr::Within {
                property,
                meters,
                latitude,
                longitude,
            });
        }
        let op = match self.peek() {
            Tok::Op(op) => Some(*op),
            Tok::Ident(s) => match s.to_ascii_lowercase().as_str() {
                "eq" => Some(CmpOp::Eq),
                "lt" => Some(CmpOp::Lt),
                "lte" => Some(CmpOp::Lte),
                "gt" => Some(CmpOp::Gt),
                "gte" => Some(CmpOp::Gte),
                _ => None,
            },
            _ => None,
        };
        let Some(op) = op else {
            return Err(self.expected("an operator (=, <, <=, >, >=, contains, within)"));
        };
        self.pos += 1;
        let value = self.literal()?;
        Ok(Expr::Compare {
            property,
            op,
            value,
        })
    }

    fn number(&mut self) -> Result<f64, QueryError> {
        match self.peek() {
            Tok::Int(n) => {
                let n = *n as f64;
                self.pos += 1;
                Ok(n)
            }
            Tok::Float(f) => {
                let f = *f;
                self.pos += 1;
                Ok(f)
            }
            _ => Err(self.expected("a number")),
        }
    }

    fn literal(&mut self) -> Result<Literal, QueryError> {
        let lit = match self.peek() {
            Tok::Str(s) => Literal::String(s.clone()),
            Tok::Int(n) => Literal::Int(*n),
            Tok::Float(f) => Literal::Float(*f),
            Tok::Uuid(u) => Literal::Uuid(u.clone()),
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Tok::Ident(s) if s.eq_ignore_ascii_case("false") => Literal::Bool(false),
            _ => return Err(self.expected("a string, number, boolean or uuid")),
        };
        self.pos += 1;
        Ok(lit)
    }
}
