//! Progress: bars (overall and the running asset's steps) on a terminal, plain
//! log lines on stderr otherwise (CI logs, render-farm job logs).
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes.
pub enum Progress {
    /// `indicatif` bars on a terminal.
    Bars { multi: MultiProgress, overall: ProgressBar, asset: Option<ProgressBar> },
    /// One line per event; `unit` names what `step` counts.
    Plain { total: usize, done: usize, last_quarter: usize, unit: &'static str },
}

impl Progress {
    /// Bars when stderr is a terminal, else plain lines.
    pub fn new(total: usize) -> Self {
        if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(total as u64));
            overall.set_style(ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} assets {elapsed_precise}").expect("template").progress_chars("=> "));
            overall.set_prefix("bake");
            Self::Bars { multi, overall, asset: None }
        } else {
            Self::Plain { total, done: 0, last_quarter: 0, unit: "step" }
        }
    }

    /// A line that does not disturb the bars.
    pub fn log(&self, line: &str) {
        match self {
            Self::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
            Self::Plain { .. } => eprintln!("kiln-bake: {line}"),
        }
    }

    /// An asset starts; `doing` says what happens first ("generating").
    pub fn start(&mut self, name: &str, doing: &str) {
        match self {
            Self::Bars { multi, asset, .. } => {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(ProgressStyle::with_template("{prefix:>8} [{bar:30}] step {pos}/{len}").expect("template").progress_chars("=> "));
                bar.set_prefix(name.chars().take(8).collect::<String>());
                *asset = Some(bar);
            }
            Self::Plain { total, done, last_quarter, unit } => {
                *last_quarter = 0;
                *unit = "step";
                eprintln!("kiln-bake: [{}/{}] {name}: {doing}", *done + 1, total);
            }
        }
    }

    /// The running asset's upscale starts: `step` now counts tiles.
    pub fn upscaling(&mut self, name: &str) {
        match self {
            Self::Bars { asset: Some(bar), .. } => {
                bar.set_style(ProgressStyle::with_template("{prefix:>8} [{bar:30}] tile {pos}/{len}").expect("template").progress_chars("=> "));
                bar.set_position(0);
            }
            Self::Bars { .. } => {}
            Self::Plain { last_quarter, unit, .. } => {
                *last_quarter = 0;
                *unit = "tile";
                eprintln!("kiln-bake:        {name}: upscaling");
            }
        }
    }

    /// The running asset finished `step` of `total` denoising steps (or,
    /// once [`Progress::upscaling`], tiles).
    pub fn step(&mut self, name: &str, step: u32, total: u32) {
        match self {
            Self::Bars { asset: Some(bar), .. } => {
                bar.set_length(total as u64);
                bar.set_position(step as u64);
            }
            Self::Bars { .. } => {}
            // Plain logs get a line per quarter, not per step.
            Self::Plain { last_quarter, unit, .. } => {
                let quarter = (step * 4).checked_div(total).unwrap_or(0) as usize;
                if quarter > *last_quarter {
                    *last_quarter = quarter;
                    eprintln!("kiln-bake:        {name}: {unit} {step}/{total}");
                }
            }
        }
    }

    /// An asset ended (baked, skipped or failed); `line` says how.
    pub fn finish(&mut self, line: &str) {
        match self {
            Self::Bars { multi, overall, asset } => {
                if let Some(bar) = asset.take() {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                let _ = multi.println(line);
                overall.inc(1);
            }
            Self::Plain { total, done, .. } => {
                *done += 1;
                eprintln!("kiln-bake: [{done}/{total}] {line}");
            }
        }
    }

    /// Clears the bars.
    pub fn close(&self) {
        if let Self::Bars { overall, .. } = self {
            overall.finish_and_clear();
        }
    }
}
