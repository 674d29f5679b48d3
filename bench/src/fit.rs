//! Fitting the confidence model and the answer bands on labelled
//! questions: L2-regularised logistic regression (batch gradient descent,
//! both classes weighted equally whatever their counts) and thresholds
//! chosen from the fitted probabilities.

use rag::confidence::{DIMENSIONS, Features, Model};

/// One labelled question: its retrieval features and whether the
/// knowledge base answers it.
pub struct Example {
    pub features: Features,
    pub answerable: bool,
}

const STEPS: usize = 20_000;
const LEARNING_RATE: f64 = 0.5;

pub fn fit(examples: &[Example], lambda: f64) -> Model {
    let positives = examples.iter().filter(|e| e.answerable).count().max(1) as f64;
    let negatives = examples.iter().filter(|e| !e.answerable).count().max(1) as f64;
    let rows: Vec<([f64; DIMENSIONS], f64, f64)> = examples
        .iter()
        .map(|e| {
            let (label, weight) = if e.answerable {
                (1.0, 0.5 / positives)
            } else {
                (0.0, 0.5 / negatives)
            };
            (e.features.vector(), label, weight)
        })
        .collect();
    let mut model = Model {
        bias: 0.0,
        weights: [0.0; DIMENSIONS],
    };
    for _ in 0..STEPS {
        let mut grad_bias = 0.0;
        let mut grad = [0.0; DIMENSIONS];
        for (x, label, weight) in &rows {
            let z = model.bias + model.weights.iter().zip(x).map(|(w, x)| w * x).sum::<f64>();
            let error = (1.0 / (1.0 + (-z).exp()) - label) * weight;
            grad_bias += error;
            for (g, x) in grad.iter_mut().zip(x) {
                *g += error * x;
            }
        }
        model.bias -= LEARNING_RATE * grad_bias;
        for (w, g) in model.weights.iter_mut().zip(grad) {
            *w -= LEARNING_RATE * (g + lambda * *w);
        }
    }
    model
}

/// The two band thresholds, from the probabilities of answerable and
/// off-topic questions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bands {
    /// Below it the turn is handed over: where the sum of the two error
    /// rates (answerable handed over + off-topic answered) is smallest;
    /// the middle of the widest such gap.
    pub escalation: f64,
    /// At or above it the answer goes without an offer of a person: the
    /// lowest value above `escalation` that at most [`OFFER_LEAK`] of the
    /// off-topic questions reach.
    pub offer: f64,
}

/// Share of off-topic questions allowed into the confident band.
pub const OFFER_LEAK: f64 = 0.01;

pub fn bands(answerable: &[f64], off_topic: &[f64]) -> Bands {
    let mut cuts: Vec<f64> = answerable.iter().chain(off_topic).copied().collect();
    cuts.push(0.0);
    cuts.push(1.0);
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();
    let error = |t: f64| {
        let handed =
            answerable.iter().filter(|p| **p < t).count() as f64 / answerable.len().max(1) as f64;
        let answered =
            off_topic.iter().filter(|p| **p >= t).count() as f64 / off_topic.len().max(1) as f64;
        handed + answered
    };
    let mut best = (f64::INFINITY, 0.0, 0.0);
    for pair in cuts.windows(2) {
        let t = (pair[0] + pair[1]) / 2.0;
        let e = error(t);
        let gap = pair[1] - pair[0];
        if e < best.0 - 1e-12 || ((e - best.0).abs() <= 1e-12 && gap > best.2) {
            best = (e, t, gap);
        }
    }
    let escalation = best.1;
    let mut above: Vec<f64> = off_topic
        .iter()
        .copied()
        .filter(|p| *p >= escalation)
        .collect();
    above.sort_by(f64::total_cmp);
    let allowed = (OFFER_LEAK * off_topic.len() as f64).floor() as usize;
    let offer = if above.len() <= allowed {
        escalation
    } else {
        // Just above the highest off-topic score that must stay below.
        (above[above.len() - 1 - allowed] + 1e-3).min(1.0)
    };
    Bands {
        escalation,
        offer: offer.max(escalation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(x: f64, answerable: bool) -> Example {
        Example {
            features: Features {
                top_norm: x,
                coverage: x,
                idf_coverage: x,
                known: x,
                margin: x,
                agreement: x,
                passage: x,
                groups: 2,
            },
            answerable,
        }
    }

    #[test]
    fn separable_classes_are_separated() {
        let examples: Vec<Example> = [0.1, 0.15, 0.2, 0.25]
            .iter()
            .map(|x| example(*x, false))
            .chain([0.7, 0.8, 0.9].iter().map(|x| example(*x, true)))
            .collect();
        let model = fit(&examples, 0.001);
        for e in &examples {
            let p = model.confidence(&e.features);
            assert_eq!(p > 0.5, e.answerable, "{p}");
        }
    }

    #[test]
    fn bands_split_where_the_errors_are_fewest() {
        let bands = bands(&[0.6, 0.7, 0.8, 0.9], &[0.1, 0.2, 0.3, 0.65]);
        assert!(
            bands.escalation > 0.3 && bands.escalation < 0.6,
            "{bands:?}"
        );
        assert!(bands.offer > 0.65, "{bands:?}");
    }
}
