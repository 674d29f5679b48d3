//! `rag-eval`: answer quality on the development set, product by product,
//! through the chat turn the worker runs for every message, with the
//! bands the service ships (`config/default.toml`).
//!
//! ```text
//! cargo run --release -p supportrag-bench --bin rag-eval            # fit products
//! cargo run --release -p supportrag-bench --bin rag-eval -- --holdout  # and the held-out one
//! cargo run --release -p supportrag-bench --bin rag-eval -- --fit   # refit the confidence model
//! cargo run --release -p supportrag-bench --bin rag-eval -- --misses taskflow
//! ```
//!
//! `--fit` never loads the held-out product: it cross-validates over the
//! fit products (fit on all but one, measure on that one, rotate), then
//! fits on all of them and prints the model and band thresholds to put in
//! `rag/src/confidence.rs` and `config/default.toml`.

use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use rag::confidence::Model;
use rag::dictionary::Dictionary;
use rag::glossary::Glossary;
use rag::text::Analyzer;
use shared::chat::answer_policy::Thresholds;
use supportrag_bench::RedisServer;
use supportrag_bench::devset::{self, Expected, Figures, Outcome, ProductBase, Role};
use supportrag_bench::fit::{self, Example};

#[derive(Parser)]
#[command(about = "Answer quality on the development set")]
struct Args {
    /// Cross-validate and refit the confidence model on the fit products.
    #[arg(long)]
    fit: bool,
    /// Print the questions of this product the turn got wrong (never use
    /// it on the held-out product while tuning).
    #[arg(long)]
    misses: Option<String>,
    /// Print how this question is analysed (terms, glossary alternatives,
    /// dictionary translations) and stop.
    #[arg(long)]
    explain: Option<String>,
    /// Also run the held-out product. Its figure is the one reported, once
    /// fitting is done; while tuning, leave it out.
    #[arg(long)]
    holdout: bool,
    /// The RU↔EN dictionary's folder (`retrieval.dictionary_dir`); an
    /// empty value runs without it.
    #[arg(long, default_value = "/usr/share/dictd")]
    dictionary_dir: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = devset::devset_dir();
    let dictionary = (!args.dictionary_dir.is_empty())
        .then(|| Dictionary::load_optional(Some(Path::new(&args.dictionary_dir))))
        .flatten();
    if dictionary.is_none() {
        eprintln!("rag-eval: no RU↔EN dictionary; cross-lingual figures will be lower");
    }
    let analyzer = Arc::new(Analyzer::with_dictionary(
        Glossary::builtin(),
        dictionary.map(Arc::new),
    ));
    if let Some(question) = &args.explain {
        for group in analyzer.query(question).groups {
            println!(
                "{:<16} alternatives {:?} translations {:?}",
                group.term, group.alternatives, group.translations
            );
        }
        return Ok(());
    }
    let thresholds = devset::shipped_thresholds()?;
    let redis = RedisServer::start()?;
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut names = Vec::new();
    for product in devset::products(&dir)? {
        if product.role == Role::Holdout && (args.fit || !args.holdout) {
            continue;
        }
        let base = ProductBase::load(&redis, &dir, &product, &analyzer).await?;
        outcomes.extend(base.ask_all(&dir, &product, &thresholds).await?);
        names.push((product.name.clone(), product.role));
    }
    if args.fit {
        cross_validate(&outcomes, &names, thresholds.hand_over_below());
        return Ok(());
    }
    print_table(&outcomes, &names, &thresholds);
    for (label, role) in [
        ("fit products", Role::Fit),
        ("held-out product", Role::Holdout),
    ] {
        let chosen: Vec<&Outcome> = outcomes.iter().filter(|o| o.role == role).collect();
        if !chosen.is_empty() {
            print_reliability(label, &chosen);
        }
    }
    if let Some(name) = &args.misses {
        print_misses(&outcomes, name);
    }
    Ok(())
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".to_owned(), |x| format!("{:.2}", x))
}

/// A table row: its name, its figure and issue 10's target for it.
type Row = (&'static str, fn(&Figures) -> Option<f64>, &'static str);

fn print_table(outcomes: &[Outcome], names: &[(String, Role)], thresholds: &Thresholds) {
    let of = |pick: &dyn Fn(&Outcome) -> bool| {
        Figures::of(&outcomes.iter().filter(|o| pick(o)).collect::<Vec<_>>())
    };
    let mut columns: Vec<(String, Figures)> = names
        .iter()
        .map(|(n, role)| {
            let label = match role {
                Role::Fit => format!("{n} (fit)"),
                Role::Holdout => format!("{n} (HELD OUT)"),
            };
            (label, of(&|o| &o.product == n))
        })
        .collect();
    columns.push(("all fit".to_owned(), of(&|o| o.role == Role::Fit)));
    let rows: [Row; 12] = [
        (
            "right article first, same language",
            |f| f.same_language_first,
            "≥ 0.95",
        ),
        (
            "right article first, cross-lingual",
            |f| f.cross_lingual_first,
            "≥ 0.6",
        ),
        (
            "answerable handed over",
            |f| f.answerable_handed_over,
            "≤ 0.05",
        ),
        (
            "answerable answered with an offer",
            |f| f.answerable_offered,
            "",
        ),
        (
            "off-topic handed over",
            |f| f.off_topic_handed_over,
            "≥ 0.95",
        ),
        ("near-miss handed over", |f| f.near_miss_handed_over, ""),
        (
            "requests for a person honoured",
            |f| f.person_requests_honoured,
            "1.00",
        ),
        ("key facts in the answer", |f| f.facts_in_answer, "≥ 0.8"),
        (
            "… when answered from the right article",
            |f| f.facts_when_right,
            "",
        ),
        ("AUC correct vs off-topic", |f| f.auc_off_topic, "≥ 0.97"),
        ("AUC correct vs near-miss", |f| f.auc_near_miss, ""),
        ("turn p99, ms", |f| f.p99_ms, ""),
    ];
    println!(
        "\nbands: hand over below {:.2}, offer a person below {:.2}\n",
        thresholds.hand_over_below(),
        thresholds.offer_below()
    );
    print!("| measure |");
    for (label, _) in &columns {
        print!(" {label} |");
    }
    println!(" target |");
    println!("|---|{}---|", "---|".repeat(columns.len()));
    print!("| questions |");
    for (_, f) in &columns {
        print!(" {} |", f.questions);
    }
    println!(" |");
    for (name, get, target) in rows {
        print!("| {name} |");
        for (_, f) in &columns {
            print!(" {} |", pct(get(f)));
        }
        println!(" {target} |");
    }
}

/// What a confidence figure means: per band of confidence, how many
/// questions (requests for a person left out) and how many of them the
/// right article answers.
fn print_reliability(label: &str, outcomes: &[&Outcome]) {
    const EDGES: [f64; 7] = [0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0];
    println!("\nreliability, {label}:\n");
    println!("| confidence | questions | answerable | right article first |");
    println!("|---|---|---|---|");
    for pair in EDGES.windows(2) {
        let last = pair[1] >= 1.0;
        let inside: Vec<&&Outcome> = outcomes
            .iter()
            .filter(|o| o.expected != Expected::Person)
            .filter(|o| o.confidence >= pair[0] && (o.confidence < pair[1] || last))
            .collect();
        let n = inside.len();
        let share = |k: usize| {
            if n == 0 {
                "–".to_owned()
            } else {
                format!("{:.2}", k as f64 / n as f64)
            }
        };
        let answerable = inside
            .iter()
            .filter(|o| matches!(o.expected, Expected::Answer { .. }))
            .count();
        let right = inside.iter().filter(|o| o.right_article()).count();
        println!(
            "| {:.2}–{:.2} | {n} | {} | {} |",
            pair[0],
            pair[1],
            share(answerable),
            share(right)
        );
    }
}

fn print_misses(outcomes: &[Outcome], product: &str) {
    println!("\nmisses in {product}:");
    for o in outcomes.iter().filter(|o| o.product == product) {
        let wrong = match &o.expected {
            Expected::Answer { doc, .. } => {
                { !o.right_article() || o.handed_over() || o.facts_found() < 1.0 }
                    .then(|| format!("want {doc}"))
            }
            Expected::OffTopic { .. } => (!o.handed_over()).then(|| "off-topic".to_owned()),
            Expected::Person => (!o.handed_over()).then(|| "person".to_owned()),
        };
        if let Some(want) = wrong {
            let f = &o.features;
            println!(
                "{want:<28} got {:<28} conf {:.2} [n {:.2} c {:.2} ic {:.2} k {:.2} m {:.2} a {:.2}] facts {:.2} {:?} unknown {:?}\n    {}",
                o.first_source.as_deref().unwrap_or("-"),
                o.confidence,
                f.top_norm,
                f.coverage,
                f.idf_coverage,
                f.known,
                f.margin,
                f.agreement,
                o.facts_found(),
                o.handover,
                o.unknown,
                o.question
            );
        }
    }
}

/// Answerable and off-topic questions as training examples.
fn examples<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> Vec<Example> {
    outcomes
        .filter_map(|o| match o.expected {
            Expected::Answer { .. } => Some(Example {
                features: o.features.clone(),
                answerable: true,
            }),
            Expected::OffTopic { .. } => Some(Example {
                features: o.features.clone(),
                answerable: false,
            }),
            Expected::Person => None,
        })
        .collect()
}

fn scores(model: &Model, examples: &[Example], answerable: bool) -> Vec<f64> {
    examples
        .iter()
        .filter(|e| e.answerable == answerable)
        .map(|e| model.confidence(&e.features))
        .collect()
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Cross-validates, fits on every fit product, and moves the fitted
/// intercept so the escalation cut lands on `escalation` (the shipped
/// `chat.escalation_threshold`): the threshold keeps its documented
/// default, and only the model changes.
fn cross_validate(outcomes: &[Outcome], names: &[(String, Role)], escalation: f64) {
    const LAMBDAS: [f64; 4] = [0.0001, 0.001, 0.01, 0.1];
    let all = examples(outcomes.iter());
    println!("\nAUC of each feature alone, answerable vs off-topic, all fit products:");
    for (d, name) in rag::confidence::NAMES.iter().enumerate() {
        let column = |answerable: bool| -> Vec<f64> {
            all.iter()
                .filter(|e| e.answerable == answerable)
                .map(|e| e.features.vector()[d])
                .collect()
        };
        println!(
            "  {name:<14} {}",
            pct(devset::auc(&column(true), &column(false)))
        );
    }
    let mut errors = Vec::new();
    for lambda in LAMBDAS {
        println!("\nλ = {lambda}: leave one product out");
        println!("| left out | AUC | answerable handed over | off-topic handed over | bands |");
        println!("|---|---|---|---|---|");
        let mut total_error = 0.0;
        for (left_out, _) in names {
            let train = examples(outcomes.iter().filter(|o| &o.product != left_out));
            let test = examples(outcomes.iter().filter(|o| &o.product == left_out));
            let model = fit::fit(&train, lambda);
            let bands = fit::bands(
                &scores(&model, &train, true),
                &scores(&model, &train, false),
            );
            let (pos, neg) = (scores(&model, &test, true), scores(&model, &test, false));
            let handed = pos.iter().filter(|p| **p < bands.escalation).count() as f64
                / pos.len().max(1) as f64;
            let caught = neg.iter().filter(|p| **p < bands.escalation).count() as f64
                / neg.len().max(1) as f64;
            total_error += handed + (1.0 - caught);
            println!(
                "| {left_out} | {} | {handed:.2} | {caught:.2} | {:.2} / {:.2} |",
                pct(devset::auc(&pos, &neg)),
                bands.escalation,
                bands.offer
            );
        }
        let error = total_error / names.len() as f64;
        println!("mean error (handed + answered off-topic) per fold: {error:.3}");
        errors.push((lambda, error));
    }
    // Within a hundredth of the best, the weakest regularisation: strong
    // regularisation squeezes every confidence towards the middle, and
    // users read the figure.
    let least = errors.iter().map(|e| e.1).fold(f64::INFINITY, f64::min);
    let lambda = errors
        .iter()
        .find(|e| e.1 <= least + 0.01)
        .map_or(LAMBDAS[0], |e| e.0);
    let mut model = fit::fit(&all, lambda);
    let fitted = fit::bands(&scores(&model, &all, true), &scores(&model, &all, false));
    let shift = logit(escalation) - logit(fitted.escalation);
    model.bias += shift;
    let bands = fit::Bands {
        escalation,
        offer: sigmoid(logit(fitted.offer) + shift),
    };
    println!(
        "\nchosen λ = {lambda}; on all fit products:\n\
         pub const MODEL: Model = Model {{\n    bias: {:.3},\n    weights: [{}],\n}};\n\
         chat.escalation_threshold = {:.2}\nchat.offer_person_threshold = {:.2}",
        model.bias,
        model
            .weights
            .iter()
            .map(|w| format!("{w:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        bands.escalation,
        bands.offer
    );
}
