//! Human-readable figures: durations, rates and byte counts, sized for a terminal.

pub fn duration(seconds: f64) -> String {
    if seconds >= 100.0 {
        format!("{seconds:.0} s")
    } else if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else if seconds >= 1e-3 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{:.0} µs", seconds * 1e6)
    }
}

/// A count with thousands separators.
pub fn count(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[0])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// One row of a per-op profile table.
pub struct OpLine<'a> {
    pub op: &'a str,
    pub calls: u64,
    pub seconds: f64,
    pub flops: f64,
}

/// The per-op table (op, calls, time, time %, FLOPs, FLOP/s) of the first `top` rows, and a
/// line that says how many were left out.
pub fn print_op_table<'a>(
    title: &str,
    ops: impl ExactSizeIterator<Item = OpLine<'a>>,
    total_seconds: f64,
    top: usize,
) {
    println!(
        "\n{:<30} {:>9} {:>10} {:>7} {:>12} {:>11}",
        title, "calls", "time", "time %", "FLOPs", "FLOP/s"
    );
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let len = ops.len();
    for o in ops.take(top) {
        println!(
            "{:<30} {:>9} {:>10} {:>7} {:>12} {:>11}",
            o.op,
            count(o.calls as f64),
            duration(o.seconds),
            percent(ratio(o.seconds, total_seconds)),
            si(o.flops),
            si(ratio(o.flops, o.seconds))
        );
    }
    if len > top {
        println!("… {} more ops (--top N, or --json)", len - top);
    }
}

/// A progress bar on stderr for `len` steps; indicatif hides it when stderr is not a terminal.
/// Set by a command that drives others (`corpus`) and shows its own progress instead.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Hides every spinner and progress bar made after this call.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    if quiet() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_readable() {
        assert_eq!(count(1234567.4), "1,234,567");
        assert_eq!(count(999.0), "999");
        assert_eq!(duration(0.0123), "12.3 ms");
        assert_eq!(duration(2.5), "2.50 s");
        assert_eq!(duration(0.000_05), "50 µs");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(percent(0.0734), "7.3%");
    }
}

/// Summary statistics of repeated timings, in the manner of hyperfine.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Stats {
    pub median: f64,
    pub mean: f64,
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stats {
    pub fn new(samples: &[f64]) -> Self {
        assert!(!samples.is_empty(), "statistics of no samples");
        let n = samples.len();
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Self {
            median,
            mean,
            stddev: var.sqrt(),
            min: sorted[0],
            max: sorted[n - 1],
            n,
        }
    }

    /// `median (mean ± σ, min … max)`.
    pub fn display(&self) -> String {
        format!(
            "{} median  ({} ± {}, {} … {})",
            duration(self.median),
            duration(self.mean),
            duration(self.stddev),
            duration(self.min),
            duration(self.max)
        )
    }
}

#[cfg(test)]
mod stats_tests {
    use super::Stats;

    #[test]
    fn median_and_spread() {
        let s = Stats::new(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!(s.median, 2.5);
        assert_eq!((s.min, s.max, s.n), (1.0, 10.0, 4));
        assert!((s.mean - 4.0).abs() < 1e-12);
        assert!((s.stddev - (50.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }
}

/// A spinner on stderr for work of unknown length; hidden when stderr is not a terminal.
pub fn spinner(what: &str) -> indicatif::ProgressBar {
    if quiet() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .expect("the template is valid"),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A quantity with an SI prefix: 1.23 G, 456 M.
pub fn si(v: f64) -> String {
    const PREFIXES: [(f64, &str); 5] =
        [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, p) in PREFIXES {
        if v.abs() >= scale {
            return format!("{:.2} {p}", v / scale);
        }
    }
    format!("{v:.0}")
}
