//! The success-rate and latency chart of a webhook, drawn on the server as
//! inline SVG from its recent delivery attempts (no script, so it also
//! passes the console's Content-Security-Policy).

use chrono::{DateTime, Utc};
use maud::{Markup, html};

/// One delivery attempt, as the chart needs it.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub at: DateTime<Utc>,
    pub success: bool,
    pub latency_ms: u64,
}

/// Attempts that fell in one slice of the charted time.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bucket {
    attempts: u32,
    success_pct: f64,
    mean_latency_ms: f64,
}

const BUCKETS: usize = 12;
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 12.0;

/// Splits the span from the first to the last attempt into equal slices.
fn buckets(points: &[Point]) -> Vec<Option<Bucket>> {
    let (Some(first), Some(last)) = (
        points.iter().map(|p| p.at).min(),
        points.iter().map(|p| p.at).max(),
    ) else {
        return Vec::new();
    };
    let span_ms = (last - first).num_milliseconds().max(1) as f64;
    let mut sums = vec![(0u32, 0u32, 0u64); BUCKETS];
    for p in points {
        let offset = (p.at - first).num_milliseconds() as f64;
        let i = ((offset / span_ms) * BUCKETS as f64) as usize;
        let slot = &mut sums[i.min(BUCKETS - 1)];
        slot.0 += 1;
        slot.1 += u32::from(p.success);
        slot.2 = slot.2.saturating_add(p.latency_ms);
    }
    sums.into_iter()
        .map(|(attempts, ok, latency)| {
            (attempts > 0).then(|| Bucket {
                attempts,
                success_pct: f64::from(ok) * 100.0 / f64::from(attempts),
                mean_latency_ms: latency as f64 / f64::from(attempts),
            })
        })
        .collect()
}

/// Both charts, or a sentence when there is nothing to draw.
pub fn charts(points: &[Point]) -> Markup {
    let buckets = buckets(points);
    if buckets.is_empty() {
        return html! { p.muted { "No delivery attempts yet." } };
    }
    let max_latency = buckets
        .iter()
        .flatten()
        .map(|b| b.mean_latency_ms)
        .fold(1.0, f64::max);
    html! {
        figure {
            (line_chart("Success rate (%)", &buckets, 100.0, |b| b.success_pct, "#2a9d8f"))
            figcaption.muted { "Share of attempts that succeeded, in "
                (BUCKETS) " equal slices of the last " (points.len()) " attempts." }
        }
        figure {
            (line_chart("Mean latency (ms)", &buckets, max_latency, |b| b.mean_latency_ms, "#1d3557"))
            figcaption.muted { "Mean response time per slice; highest " (max_latency.round()) " ms." }
        }
    }
}

fn line_chart(
    title: &str,
    buckets: &[Option<Bucket>],
    max: f64,
    value: impl Fn(&Bucket) -> f64,
    colour: &str,
) -> Markup {
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let step = plot_w / (buckets.len().max(2) - 1) as f64;
    let coords: Vec<(f64, f64, &Bucket)> = buckets
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let b = b.as_ref()?;
            let x = LEFT + step * i as f64;
            let y = TOP + plot_h * (1.0 - (value(b) / max).clamp(0.0, 1.0));
            Some((x, y, b))
        })
        .collect();
    let line = coords
        .iter()
        .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    let view_box = format!("0 0 {WIDTH} {HEIGHT}");
    html! {
        svg.chart viewBox=(view_box) role="img" aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
            title { (title) }
            line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_h) stroke="#9aa5b1" {}
            line x1=(LEFT) y1=(TOP + plot_h) x2=(WIDTH - 8.0) y2=(TOP + plot_h) stroke="#9aa5b1" {}
            text x="4" y=(TOP + 4.0) font-size="11" fill="#5c6773" { (max.round()) }
            text x="4" y=(TOP + plot_h) font-size="11" fill="#5c6773" { "0" }
            text x=(LEFT) y=(HEIGHT - 6.0) font-size="11" fill="#5c6773" { "older" }
            text x=(WIDTH - 50.0) y=(HEIGHT - 6.0) font-size="11" fill="#5c6773" { "newer" }
            polyline points=(line) fill="none" stroke=(colour) stroke-width="2" {}
            @for (x, y, b) in &coords {
                circle cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="3" fill=(colour) {
                    title { (format!("{:.1}", value(b))) " (" (b.attempts) " attempts)" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn at(secs: i64, success: bool, latency_ms: u64) -> Point {
        Point {
            at: DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(secs),
            success,
            latency_ms,
        }
    }

    #[test]
    fn first_and_last_slices_hold_the_ends_of_the_span() {
        let got = buckets(&[at(0, false, 100), at(0, true, 300), at(120, true, 50)]);
        assert_eq!(got.len(), BUCKETS);
        let first = got[0].expect("attempts at the start");
        assert_eq!(first.attempts, 2);
        assert_eq!(first.success_pct, 50.0);
        assert_eq!(first.mean_latency_ms, 200.0);
        let last = got[BUCKETS - 1].expect("attempt at the end");
        assert_eq!(last.success_pct, 100.0);
        assert!(got[1..BUCKETS - 1].iter().all(Option::is_none));
    }

    #[test]
    fn nothing_to_draw_says_so() {
        assert!(buckets(&[]).is_empty());
        assert!(charts(&[]).into_string().contains("No delivery attempts"));
        let drawn = charts(&[at(0, true, 10)]).into_string();
        assert!(
            drawn.contains("<svg") && drawn.contains("polyline"),
            "{drawn}"
        );
    }
}
