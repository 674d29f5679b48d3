//! Progress of a long run: a bar on a terminal, plain lines otherwise (so
//! logs and CI output stay readable).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub enum Progress {
    Bar(ProgressBar),
    Lines {
        total: u64,
        shown: Option<u64>,
        verb: &'static str,
    },
}

impl Progress {
    /// `verb` says what the count counts ("replayed").
    pub fn new(total: u64, verb: &'static str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::Lines {
                total,
                shown: None,
                verb,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        // The template is a literal; should it ever be refused, the default
        // style still shows the count.
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} ({elapsed}, eta {eta})")
        {
            bar.set_style(style);
        }
        bar.set_message(verb);
        Self::Bar(bar)
    }

    pub fn set(&mut self, done: u64) {
        match self {
            Self::Bar(bar) => bar.set_position(done),
            Self::Lines { total, shown, verb } => {
                if *shown != Some(done) {
                    eprintln!("{verb} {done}/{total}");
                    *shown = Some(done);
                }
            }
        }
    }

    pub fn finish(mut self, done: u64) {
        self.set(done);
        if let Self::Bar(bar) = self {
            bar.finish();
        }
    }
}
