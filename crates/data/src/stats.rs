//! Summary statistics of a [`Dataset`], for `xtask inspect` and logs.

use std::fmt;

use serde::Serialize;

use crate::dataset::Dataset;

/// Counts and degree summaries of a data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub n_users: usize,
    pub n_items: usize,
    pub n_train: usize,
    pub n_valid: usize,
    pub n_test: usize,
    /// `n_train + n_valid + n_test`.
    pub n_interactions: usize,
    /// `1 − n_interactions / (n_users · n_items)`; 1 for an empty matrix.
    pub sparsity: f64,
    pub users_without_train: usize,
    pub users_with_test: usize,
    pub items_without_train: usize,
    /// Interactions per user over all splits (train + valid + test); 0 when there are no users.
    pub min_user_degree: usize,
    pub mean_user_degree: f64,
    pub max_user_degree: usize,
    /// Items per label class, when labels are present.
    pub label_histogram: Option<Vec<usize>>,
    pub n_labels: Option<usize>,
}

impl Dataset {
    /// Summary statistics.
    pub fn stats(&self) -> Stats {
        let n_interactions = self.train.nnz() + self.valid.nnz() + self.test.nnz();
        let cells = self.n_users as f64 * self.n_items as f64;
        let sparsity = if cells > 0.0 { 1.0 - n_interactions as f64 / cells } else { 1.0 };
        let degrees: Vec<usize> =
            (0..self.n_users).map(|u| self.train.degree(u) + self.valid.degree(u) + self.test.degree(u)).collect();
        let mean_user_degree =
            if degrees.is_empty() { 0.0 } else { degrees.iter().sum::<usize>() as f64 / degrees.len() as f64 };
        Stats {
            n_users: self.n_users,
            n_items: self.n_items,
            n_train: self.train.nnz(),
            n_valid: self.valid.nnz(),
            n_test: self.test.nnz(),
            n_interactions,
            sparsity,
            users_without_train: self.train.degrees().iter().filter(|&&d| d == 0).count(),
            users_with_test: self.test.degrees().iter().filter(|&&d| d > 0).count(),
            items_without_train: self.train_by_item.degrees().iter().filter(|&&d| d == 0).count(),
            min_user_degree: degrees.iter().copied().min().unwrap_or(0),
            mean_user_degree,
            max_user_degree: degrees.iter().copied().max().unwrap_or(0),
            label_histogram: self.labels.as_ref().map(|l| l.histogram()),
            n_labels: self.labels.as_ref().map(|l| l.n_labels),
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<(&str, String)> = vec![
            ("users", self.n_users.to_string()),
            ("items", self.n_items.to_string()),
            ("train interactions", self.n_train.to_string()),
            ("valid interactions", self.n_valid.to_string()),
            ("test interactions", self.n_test.to_string()),
            ("interactions", self.n_interactions.to_string()),
            ("sparsity", format!("{:.4}%", self.sparsity * 100.0)),
            ("users without train", self.users_without_train.to_string()),
            ("users with test", self.users_with_test.to_string()),
            ("items without train", self.items_without_train.to_string()),
            ("min user degree", self.min_user_degree.to_string()),
            ("mean user degree", format!("{:.2}", self.mean_user_degree)),
            ("max user degree", self.max_user_degree.to_string()),
        ];
        if let Some(n) = self.n_labels {
            rows.push(("labels", n.to_string()));
        }
        if let Some(h) = &self.label_histogram {
            let text: Vec<String> = h.iter().map(usize::to_string).collect();
            rows.push(("items per label", text.join(" ")));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let value_width = rows.iter().filter(|(k, _)| *k != "items per label").map(|(_, v)| v.len()).max().unwrap_or(0);
        for (key, value) in rows {
            if key == "items per label" {
                writeln!(f, "{key:<width$}  {value}")?;
            } else {
                writeln!(f, "{key:<width$}  {value:>value_width$}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::dataset::Dataset;
    use crate::labels::Labels;

    /// 3 users × 4 items. Train: u0 {0,1}, u1 {1}, u2 {} ; valid: u1 {2}; test: u0 {3}, u2 {0}.
    /// By hand: 6 interactions of 12 cells → sparsity 0.5; user degrees 3, 2, 1 → min 1, mean 2, max 3;
    /// users without train 1 (u2); users with test 2 (u0, u2); items without train 2 (items 2, 3).
    #[test]
    fn stats_of_a_hand_fixture() {
        let labels = Labels::from_values(&[5, 5, 9, 5]);
        let d = Dataset::from_pairs("fx", 3, 4, &[(0, 0), (0, 1), (1, 1)], &[(1, 2)], &[(0, 3), (2, 0)], Some(labels))
            .unwrap();
        let s = d.stats();
        assert_eq!((s.n_users, s.n_items, s.n_train, s.n_valid, s.n_test), (3, 4, 3, 1, 2));
        assert_eq!(s.n_interactions, 6);
        assert!((s.sparsity - 0.5).abs() < 1e-12);
        assert_eq!((s.users_without_train, s.users_with_test, s.items_without_train), (1, 2, 2));
        assert_eq!((s.min_user_degree, s.max_user_degree), (1, 3));
        assert!((s.mean_user_degree - 2.0).abs() < 1e-12);
        assert_eq!(s.label_histogram, Some(vec![3, 1]));
        assert_eq!(s.n_labels, Some(2));
        let text = s.to_string();
        assert!(text.contains("sparsity"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("users ") && l.ends_with(" 3")), "{text}");
        // Two aligned columns: every value of the numeric rows ends at the same column.
        let ends: Vec<usize> = text.lines().filter(|l| !l.starts_with("items per label")).map(str::len).collect();
        assert!(ends.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert_eq!(d.user_degrees(), vec![2, 1, 0]);
        assert_eq!(d.item_degrees(), vec![1, 2, 0, 0]);
        assert_eq!(d.test_users(), vec![0, 2]);
        assert!(d.findings.iter().any(|f| f.message.contains("1 of 3 users have no train")));
    }
}
