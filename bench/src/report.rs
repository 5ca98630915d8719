//! Results: one row per measured figure, printed as a table and written as JSON.

use serde::Serialize;
use std::fmt::Write as _;

/// A goal a figure is held against.
#[derive(Clone, Copy, Debug, Serialize)]
pub enum Goal {
    /// The figure must be at least this.
    AtLeast(f64),
    /// The figure must be at most this.
    AtMost(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(g) => value >= g,
            Goal::AtMost(g) => value <= g,
        }
    }

    fn text(self) -> String {
        match self {
            Goal::AtLeast(g) => format!(">= {}", human(g)),
            Goal::AtMost(g) => format!("<= {}", human(g)),
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `rr`, `fanout`, `idle`.
    pub scenario: String,
    /// What was run (`ws C=16 depth=1`).
    pub setup: String,
    /// What was measured (`requests/s`, `p99 ms`).
    pub metric: String,
    /// The figure.
    pub value: f64,
    /// The goal, where the project set one.
    pub goal: Option<Goal>,
    /// Whether the goal was met (`None` without a goal).
    pub met: Option<bool>,
    /// Which side's CPU bounded the run, with both sides' use.
    pub limited_by: String,
    /// A correctness figure (lost or duplicated events, dropped sockets): missing its goal
    /// fails the run, where a missed speed goal is only reported.
    pub must_hold: bool,
}

impl Row {
    /// A row; `met` is computed from the goal.
    pub fn new(
        scenario: &str,
        setup: impl Into<String>,
        metric: &str,
        value: f64,
        goal: Option<Goal>,
        limited_by: &str,
    ) -> Row {
        Row {
            scenario: scenario.into(),
            setup: setup.into(),
            metric: metric.into(),
            value,
            goal,
            met: goal.map(|g| g.met(value)),
            limited_by: limited_by.into(),
            must_hold: false,
        }
    }

    /// A correctness count that must be zero (lost or duplicated events): the run fails
    /// otherwise.
    pub fn must_be_zero(
        scenario: &str,
        setup: impl Into<String>,
        metric: &str,
        count: u64,
        limited_by: &str,
    ) -> Row {
        Row::new(
            scenario,
            setup,
            metric,
            count as f64,
            Some(Goal::AtMost(0.0)),
            limited_by,
        )
        .must_hold()
    }

    /// Marks the row as a correctness figure: the run fails when it misses its goal.
    pub fn must_hold(mut self) -> Row {
        self.must_hold = true;
        self
    }

    /// True for a correctness figure that missed its goal.
    pub fn is_broken(&self) -> bool {
        self.must_hold && self.met == Some(false)
    }
}

/// Formats a figure for people: integers with thousands separators, small numbers with
/// three significant digits.
pub fn human(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.abs() >= 1000.0 {
        let n = v.round() as i64;
        let digits = n.abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    } else if v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The rows as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "setup",
        "metric",
        "value",
        "goal",
        "met",
        "limited by",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.setup.clone(),
                r.metric.clone(),
                human(r.value),
                r.goal.map(Goal::text).unwrap_or_default(),
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => String::new(),
                },
                r.limited_by.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: &[&str]| {
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            let sep = if i + 1 == cols.len() { "" } else { "  " };
            let _ = write!(out, "{c:<w$}{sep}");
        }
        out.push('\n');
    };
    line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(
        &mut out,
        &rule.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for row in &cells {
        line(
            &mut out,
            &row.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(human(1234567.0), "1,234,567");
        assert_eq!(human(12.34), "12.3");
        assert_eq!(human(0.5), "0.500");
        assert_eq!(human(64.0), "64");
    }

    #[test]
    fn goals_are_judged() {
        let r = Row::new(
            "rr",
            "ws",
            "requests/s",
            60_000.0,
            Some(Goal::AtLeast(50_000.0)),
            "",
        );
        assert_eq!(r.met, Some(true));
        let r = Row::new(
            "fanout",
            "x",
            "p99 ms",
            120.0,
            Some(Goal::AtMost(100.0)),
            "",
        );
        assert_eq!(r.met, Some(false));
        assert!(table(&[r]).contains("NO"));
    }
}
