//! How sure retrieval is that the knowledge base answers the question; the
//! service escalates to a human below its threshold (0.35).
//!
//! Raw BM25 scores are not comparable across queries (they grow with the
//! number and rarity of query terms), so the features are normalised to
//! [0, 1] before a logistic combination.

use serde::Serialize;

/// Retrieval features of one search, each in [0, 1] (`groups` is a count).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Features {
    /// Top score / the best score this query could reach (every group
    /// matched with the best possible term frequency).
    pub top_norm: f64,
    /// Share of query groups the top chunk matched.
    pub coverage: f64,
    /// (top − best chunk of another document) / top: how clearly one
    /// document wins.
    pub margin: f64,
    pub groups: usize,
}

// Fitted by L2-regularised logistic regression (λ = 0.003, batch gradient
// descent) on the features printed by `tests/quality.rs`: 36 answerable
// questions (label 1) and 16 off-topic ones (label 0) over the 8-document
// corpus in `tests/corpus/`. The fitted intercept (−3.39) was then moved so
// that the 0.35 escalation threshold sits in the middle of the gap between
// the best off-topic and the worst answerable question (in logit space):
// off-topic then reach at most 0.28, answerable at least 0.43. Refit when
// the features, the analyzer or the glossary change much.
const BIAS: f64 = -4.3;
const W_TOP_NORM: f64 = 3.7;
const W_COVERAGE: f64 = 5.3;
const W_MARGIN: f64 = 1.1;

pub fn confidence(f: &Features) -> f64 {
    if f.groups == 0 || f.top_norm <= 0.0 {
        return 0.0;
    }
    let z = BIAS
        + W_TOP_NORM * f.top_norm.clamp(0.0, 1.0)
        + W_COVERAGE * f.coverage.clamp(0.0, 1.0)
        + W_MARGIN * f.margin.clamp(0.0, 1.0);
    let p = 1.0 / (1.0 + (-z).exp());
    if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_found_is_zero() {
        assert_eq!(confidence(&Features::default()), 0.0);
        let no_groups = Features {
            top_norm: 1.0,
            coverage: 1.0,
            margin: 1.0,
            groups: 0,
        };
        assert_eq!(confidence(&no_groups), 0.0);
    }

    #[test]
    fn monotone_and_bounded() {
        let weak = Features {
            top_norm: 0.1,
            coverage: 0.3,
            margin: 0.0,
            groups: 3,
        };
        let strong = Features {
            top_norm: 0.6,
            coverage: 1.0,
            margin: 0.5,
            groups: 3,
        };
        let (w, s) = (confidence(&weak), confidence(&strong));
        assert!((0.0..=1.0).contains(&w) && (0.0..=1.0).contains(&s));
        assert!(s > w, "{s} > {w}");
        let nan = Features {
            top_norm: f64::NAN,
            ..strong
        };
        assert_eq!(confidence(&nan), 0.0);
    }
}
