//! The epochs of a run folder (`metrics.jsonl`), as the report's curves and the plan's time estimate read
//! them, and how durations are written.

use std::path::Path;

/// One line of `metrics.jsonl`, as far as the report and the progress view need it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochLine {
    pub epoch: usize,
    /// Total training loss (`losses.total`, else the sum of the losses).
    pub loss: Option<f64>,
    /// The selection metric's value, when the epoch was evaluated.
    pub criterion: Option<f64>,
    pub secs: Option<f64>,
}

/// The epochs of a run folder's `metrics.jsonl` (empty when absent; unreadable lines are skipped).
pub fn read_epochs(run: &Path) -> Vec<EpochLine> {
    let Ok(text) = std::fs::read_to_string(run.join(crate::execute::METRICS_FILE)) else { return Vec::new() };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let losses = v["losses"].as_object();
            let loss = losses.and_then(|m| {
                m.get("total").and_then(|x| x.as_f64()).or_else(|| {
                    let values: Vec<f64> = m.values().filter_map(|x| x.as_f64()).collect();
                    (!values.is_empty()).then(|| values.iter().sum())
                })
            });
            EpochLine {
                epoch: v["epoch"].as_u64().unwrap_or(0) as usize,
                loss,
                criterion: v["criterion"].as_f64(),
                secs: v["secs"].as_f64(),
            }
        })
        .collect()
}

/// `3725.0` → `1h02m`, `75.0` → `1m15s`, `9.0` → `9s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_epoch_lines() {
        assert_eq!(duration(3725.0), "1h02m");
        assert_eq!(duration(75.0), "1m15s");
        assert_eq!(duration(9.4), "9s");
        let dir = std::env::temp_dir().join(format!("mmkd-epochs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("metrics.jsonl"),
            "{\"epoch\":1,\"losses\":{\"bpr\":0.5,\"total\":0.7},\"criterion\":0.1,\"secs\":2.0}\n\
             {\"epoch\":2,\"losses\":{\"bpr\":0.25,\"reg\":0.25},\"secs\":3.0}\n",
        )
        .unwrap();
        let e = read_epochs(&dir);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].loss, e[0].criterion, e[0].secs), (Some(0.7), Some(0.1), Some(2.0)));
        assert_eq!((e[1].epoch, e[1].loss, e[1].criterion), (2, Some(0.5), None));
        assert!(read_epochs(&dir.join("nowhere")).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
