//! The results: a readable table and the JSON form.

use std::fmt::Write as _;

use serde::Serialize;

/// One workload's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Workload {
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) framework: f64,
    pub(crate) baseline: Option<f64>,
    pub(crate) ratio: Option<f64>,
    pub(crate) target: Option<f64>,
    pub(crate) higher_is_better: bool,
    /// What the baseline is, and other figures (p50 of a latency).
    pub(crate) note: String,
}

impl Workload {
    /// A workload compared with a baseline; the ratio is framework / baseline.
    pub(crate) fn compared(
        name: &str,
        unit: &'static str,
        framework: f64,
        baseline: f64,
        target: Option<f64>,
        higher_is_better: bool,
        note: impl Into<String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            unit,
            framework,
            baseline: Some(baseline),
            ratio: (baseline > 0.0).then(|| framework / baseline),
            target,
            higher_is_better,
            note: note.into(),
        }
    }

    /// A figure with nothing to compare it with.
    pub(crate) fn measured(
        name: &str,
        unit: &'static str,
        value: f64,
        note: impl Into<String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            unit,
            framework: value,
            baseline: None,
            ratio: None,
            target: None,
            higher_is_better: false,
            note: note.into(),
        }
    }

    /// Whether the ratio meets the target; `None` without a target.
    pub(crate) fn meets_target(&self) -> Option<bool> {
        let target = self.target?;
        let ratio = self.ratio?;
        Some(if self.higher_is_better {
            ratio >= target
        } else {
            ratio <= target
        })
    }
}

#[derive(Serialize)]
struct Report<'a> {
    workloads: &'a [Workload],
}

pub(crate) fn json(workloads: &[Workload]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&Report { workloads })
}

pub(crate) fn table(workloads: &[Workload]) -> String {
    let mut out = format!(
        "{:<20} {:>12} {:>12} {:>8} {:>9} {:<5} {:<9} {}\n",
        "workload", "framework", "baseline", "ratio", "target", "met", "unit", "note"
    );
    for w in workloads {
        let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        let target = w.target.map_or_else(
            || "-".to_owned(),
            |t| format!("{}{t}", if w.higher_is_better { ">=" } else { "<=" }),
        );
        let met = match w.meets_target() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<20} {:>12.1} {:>12} {:>8} {:>9} {:<5} {:<9} {}",
            w.name,
            w.framework,
            w.baseline
                .map_or_else(|| "-".to_owned(), |b| format!("{b:.1}")),
            num(w.ratio),
            target,
            met,
            w.unit,
            w.note
        );
    }
    out
}
