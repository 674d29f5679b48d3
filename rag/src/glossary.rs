//! RU↔EN support glossary, so a Russian question finds an English document
//! and the other way round without a translation model.
//!
//! The file format is Elasticsearch's synonym format, so operators can reuse
//! files they already maintain:
//!
//! - `a, b, c` — equivalents: each term gets the others as alternatives;
//! - `a, b => c, d` — one way: `a` and `b` get `c` and `d`, not the reverse;
//! - `#` starts a comment; blank lines are ignored.
//!
//! Entries are stored normalised (lowercase, `ё`→`е`, single spaces) but not
//! stemmed: stemming belongs to the [`crate::text::Analyzer`], which turns the
//! glossary into stem alternatives when it is built.

/// The glossary shipped with the service.
const BUILTIN: &str = include_str!("../data/glossary.txt");

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GlossaryError {
    #[error("glossary line {line}: {reason}")]
    Line { line: usize, reason: String },
}

/// One line of the file: every entry of `from` has every entry of `to`
/// (other than itself) as an alternative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) from: Vec<String>,
    pub(crate) to: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Glossary {
    rules: Vec<Rule>,
}

impl Glossary {
    pub fn builtin() -> Self {
        // The shipped file is checked by a unit test, so an error here means
        // a broken build; degrade to no glossary rather than panic.
        Self::parse(BUILTIN).unwrap_or_else(|e| {
            tracing::error!(error = %e, "builtin glossary does not parse; cross-lingual search is off");
            Self::default()
        })
    }

    pub fn parse(text: &str) -> Result<Self, GlossaryError> {
        let mut rules = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fail = |reason: &str| GlossaryError::Line {
                line,
                reason: reason.to_owned(),
            };
            let mut sides = content.split("=>");
            let left = parse_side(sides.next().unwrap_or("")).map_err(|r| fail(&r))?;
            let rule = match (sides.next(), sides.next()) {
                (None, _) => {
                    if left.len() < 2 {
                        return Err(fail("an equivalence needs at least two terms"));
                    }
                    Rule {
                        from: left.clone(),
                        to: left,
                    }
                }
                (Some(right), None) => {
                    let right = parse_side(right).map_err(|r| fail(&r))?;
                    Rule {
                        from: left,
                        to: right,
                    }
                }
                (Some(_), Some(_)) => return Err(fail("more than one `=>`")),
            };
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    /// Adds `other`'s entries; alternatives accumulate, nothing is removed,
    /// so an operator's file can only widen the builtin one.
    pub fn extend(&mut self, other: Glossary) {
        self.rules.extend(other.rules);
    }

    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

fn parse_side(side: &str) -> Result<Vec<String>, String> {
    let mut terms = Vec::new();
    for (i, term) in side.split(',').enumerate() {
        let term = normalise(term);
        if term.is_empty() {
            return Err(format!("term {} is empty", i + 1));
        }
        if let Some(c) = term
            .chars()
            .find(|c| !(c.is_alphanumeric() || matches!(c, ' ' | '-' | '\'' | '’' | '.')))
        {
            return Err(format!("term {:?} contains {c:?}", term));
        }
        terms.push(term);
    }
    Ok(terms)
}

fn normalise(term: &str) -> String {
    term.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .replace('ё', "е")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses_and_is_substantial() {
        let g = Glossary::parse(BUILTIN).expect("builtin glossary parses");
        assert!(g.rules.len() >= 150, "{} rules", g.rules.len());
    }

    #[test]
    fn equivalents_and_one_way_rules() {
        let g = Glossary::parse("# c\n\nPassword, Пароль # tail\nlogin => вход, авторизация\n")
            .expect("parses");
        assert_eq!(g.rules.len(), 2);
        assert_eq!(g.rules[0].from, vec!["password", "пароль"]);
        assert_eq!(g.rules[1].from, vec!["login"]);
        assert_eq!(g.rules[1].to, vec!["вход", "авторизация"]);
    }

    #[test]
    fn errors_name_the_line() {
        let err = Glossary::parse("a, b\n\n# x\nc, , d\n").expect_err("empty term");
        assert_eq!(
            err,
            GlossaryError::Line {
                line: 4,
                reason: "term 2 is empty".into()
            }
        );
        assert!(err.to_string().contains("line 4"), "{err}");

        let err = Glossary::parse("lonely\n").expect_err("single term");
        assert!(err.to_string().starts_with("glossary line 1:"), "{err}");

        let err = Glossary::parse("a, b\na => b => c\n").expect_err("double arrow");
        assert!(err.to_string().starts_with("glossary line 2:"), "{err}");

        let err = Glossary::parse("a; b, c\n").expect_err("bad char");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn extend_accumulates() {
        let mut g = Glossary::parse("a, b\n").expect("parses");
        g.extend(Glossary::parse("a, c\n").expect("parses"));
        assert_eq!(g.rules.len(), 2);
    }
}
