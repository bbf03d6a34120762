//! Output helpers: data lines on stdout that end quietly when the reader goes away
//! (`cargo xtask verify … | head`), and long lists cut to a readable length.

use std::io::Write;

/// Writes one line to stdout; a closed pipe ends the process quietly (exit 0).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if out.write_fmt(args).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// `println!` for data: stops quietly on a closed pipe.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::output::line(format_args!($($t)*)) };
}

/// One item per line, at most `max`, then "…and N more".
pub fn capped(items: &[String], max: usize, indent: &str) -> String {
    let mut s: Vec<String> = items.iter().take(max).map(|i| format!("{indent}{i}")).collect();
    if items.len() > max {
        s.push(format!("{indent}…and {} more", items.len() - max));
    }
    s.join("\n")
}
