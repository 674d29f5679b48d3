//! Intent classifier: TF-IDF centroids and cosine similarity.
//!
//! Naive Bayes was tried first and always forces one of the known labels;
//! centroids with a similarity floor can say "none" for a text about
//! something else, which is what the service needs to route it.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::text::{Analyzer, TermCaches};

const BUILTIN: &str = include_str!("../data/intents.toml");
/// Below this cosine an intent is not reported.
const MIN_SCORE: f64 = 0.1;
const MAX_RESULTS: usize = 3;
/// Weight of a text term no intent mentions. It must count in the norm (a
/// long text about something else should not look like an intent because
/// of one shared word), but less than a distinctive intent term, or long
/// documents would score near zero against every intent.
const UNKNOWN_TERM_IDF: f64 = 1.0;

#[derive(Clone, Debug, Deserialize)]
pub struct IntentDef {
    pub intent: String,
    pub category: String,
    pub examples: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Classification {
    pub intent: String,
    pub confidence: f64,
    pub category: String,
}

#[derive(thiserror::Error, Debug)]
pub enum ClassifierError {
    #[error("intents file: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("intents file: intent {intent:?}: {reason}")]
    Invalid { intent: String, reason: String },
}

#[derive(Deserialize)]
struct IntentsFile {
    intent: Vec<IntentDef>,
}

struct Centroid {
    intent: String,
    category: String,
    /// Unit vector.
    weights: HashMap<String, f64>,
}

pub struct Classifier {
    analyzer: Arc<Analyzer>,
    idf: HashMap<String, f64>,
    centroids: Vec<Centroid>,
    /// Analysed words, kept across documents (one cache per concurrent
    /// call): stemming the start of every ingested document anew was the
    /// costliest step of ingesting a small one.
    caches: TermCaches,
}

impl Classifier {
    pub fn builtin(analyzer: Arc<Analyzer>) -> Self {
        // The shipped file is checked by a unit test; never panic at run time.
        Self::from_toml(BUILTIN, analyzer.clone()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "builtin intents do not parse; classification is off");
            Self {
                analyzer,
                idf: HashMap::new(),
                centroids: Vec::new(),
                caches: TermCaches::default(),
            }
        })
    }

    pub fn from_toml(text: &str, analyzer: Arc<Analyzer>) -> Result<Self, ClassifierError> {
        let file: IntentsFile = toml::from_str(text)?;
        let examples: Vec<Vec<Vec<String>>> = file
            .intent
            .iter()
            .map(|def| def.examples.iter().map(|e| analyzer.terms(e)).collect())
            .collect();
        for (def, terms) in file.intent.iter().zip(&examples) {
            if terms.iter().all(Vec::is_empty) {
                return Err(ClassifierError::Invalid {
                    intent: def.intent.clone(),
                    reason: "no example has a searchable word".into(),
                });
            }
        }
        // Document frequency over intents, not examples: a word every
        // example of one intent repeats is that intent's signature.
        let mut df: HashMap<&str, usize> = HashMap::new();
        for intent in &examples {
            let mut seen: Vec<&str> = intent.iter().flatten().map(String::as_str).collect();
            seen.sort_unstable();
            seen.dedup();
            for term in seen {
                *df.entry(term).or_default() += 1;
            }
        }
        let n = examples.len() as f64;
        let idf: HashMap<String, f64> = df
            .into_iter()
            .map(|(t, d)| (t.to_owned(), (1.0 + n / d as f64).ln()))
            .collect();

        let mut centroids = Vec::with_capacity(file.intent.len());
        for (def, intent) in file.intent.into_iter().zip(&examples) {
            let mut sum: HashMap<String, f64> = HashMap::new();
            for example in intent {
                for (term, w) in tfidf(&idf, example) {
                    *sum.entry(term).or_default() += w;
                }
            }
            centroids.push(Centroid {
                intent: def.intent,
                category: def.category,
                weights: unit(sum),
            });
        }
        Ok(Self {
            analyzer,
            idf,
            centroids,
            caches: TermCaches::default(),
        })
    }

    pub fn classify(&self, text: &str) -> Vec<Classification> {
        let mut cache = self.caches.take();
        let terms = self.analyzer.terms_cached(text, &mut cache);
        self.caches.give_back(cache);
        let vector = unit(tfidf(&self.idf, &terms));
        let mut scored: Vec<(f64, &Centroid)> = self
            .centroids
            .iter()
            .map(|c| {
                let dot: f64 = vector
                    .iter()
                    .filter_map(|(t, w)| c.weights.get(t).map(|cw| cw * w))
                    .sum();
                (dot, c)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let best = scored.first().map_or(0.0, |s| s.0);
        let found: Vec<Classification> = scored
            .iter()
            .take_while(|(score, _)| *score >= MIN_SCORE)
            .take(MAX_RESULTS)
            .map(|(score, c)| Classification {
                intent: c.intent.clone(),
                confidence: round2(*score),
                category: c.category.clone(),
            })
            .collect();
        if found.is_empty() {
            return vec![Classification {
                intent: "none".into(),
                confidence: round2(1.0 - best),
                category: "none".into(),
            }];
        }
        found
    }
}

/// Sublinear term frequency × idf.
fn tfidf(idf: &HashMap<String, f64>, terms: &[String]) -> HashMap<String, f64> {
    let mut tf: HashMap<&str, f64> = HashMap::new();
    for term in terms {
        *tf.entry(term).or_default() += 1.0;
    }
    tf.into_iter()
        .map(|(t, f)| {
            let w = idf.get(t).copied().unwrap_or(UNKNOWN_TERM_IDF);
            (t.to_owned(), (1.0 + f.ln()) * w)
        })
        .collect()
}

fn unit(mut v: HashMap<String, f64>) -> HashMap<String, f64> {
    let norm = v.values().map(|w| w * w).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.values_mut().for_each(|w| *w /= norm);
    }
    v
}

fn round2(x: f64) -> f64 {
    (x.clamp(0.0, 1.0) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glossary::Glossary;

    fn classifier() -> Classifier {
        let analyzer = Arc::new(Analyzer::new(Glossary::builtin()));
        Classifier::from_toml(BUILTIN, analyzer).expect("builtin intents parse")
    }

    #[test]
    fn builtin_has_ten_intents() {
        let c = classifier();
        assert!(c.centroids.len() >= 10, "{}", c.centroids.len());
    }

    #[test]
    fn billing_document_is_billing() {
        let c = classifier();
        let doc = "Invoices and billing. Every month we issue an invoice for your subscription \
            and charge the card on file. You can download past invoices as PDF from the Billing \
            page, change the payment method, and add your company details and VAT number so they \
            appear on the invoice. If a payment fails we retry the charge three times.";
        let result = c.classify(doc);
        assert_eq!(result[0].intent, "billing", "{result:?}");
        assert_eq!(result[0].category, "finance");
        assert!(result.len() <= 3);
        let ru = c.classify("Как скачать счёт за прошлый месяц и изменить способ оплаты?");
        assert_eq!(ru[0].intent, "billing", "{ru:?}");
    }

    #[test]
    fn unrelated_text_is_none() {
        let c = classifier();
        let recipe = "Borscht recipe: simmer beets, cabbage, carrots and onions in beef stock, \
            add tomato paste and dill, serve hot with sour cream and rye bread.";
        let result = c.classify(recipe);
        assert_eq!(result.len(), 1, "{result:?}");
        assert_eq!(result[0].intent, "none");
        assert_eq!(result[0].category, "none");
        assert!(result[0].confidence > 0.9, "{result:?}");
        assert_eq!(c.classify("")[0].intent, "none");
    }

    #[test]
    fn bad_files_are_errors() {
        let analyzer = Arc::new(Analyzer::new(Glossary::default()));
        assert!(Classifier::from_toml("[[intent]]\nintent = 1\n", analyzer.clone()).is_err());
        let err = Classifier::from_toml(
            "[[intent]]\nintent = \"x\"\ncategory = \"y\"\nexamples = [\"the\"]\n",
            analyzer,
        )
        .err()
        .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("\"x\"")));
    }
}
