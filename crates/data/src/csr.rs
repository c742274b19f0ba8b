//! Compressed sparse row adjacency: row `r` holds the sorted column indices `indices[indptr[r]..indptr[r + 1]]`.

use serde::{Deserialize, Serialize};

/// A binary sparse matrix in CSR form with sorted, duplicate-free rows.
///
/// Used for user→items (train, validation, test lists) and item→users (the transposed train graph).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Csr {
    n_cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
}

impl Csr {
    /// An empty matrix of `n_rows` rows and `n_cols` columns.
    pub fn empty(n_rows: usize, n_cols: usize) -> Self {
        Self { n_cols, indptr: vec![0; n_rows + 1], indices: Vec::new() }
    }

    /// Builds from (row, col) pairs; pairs may come in any order. Duplicate pairs are dropped and counted.
    ///
    /// Returns the matrix and the number of duplicates removed. Every `row < n_rows`, `col < n_cols`
    /// must hold (callers validate user input before this point).
    pub fn from_pairs(n_rows: usize, n_cols: usize, pairs: &[(u32, u32)]) -> (Self, usize) {
        let mut counts = vec![0usize; n_rows + 1];
        for &(r, _) in pairs {
            counts[r as usize + 1] += 1;
        }
        for r in 0..n_rows {
            counts[r + 1] += counts[r];
        }
        let mut fill = counts.clone();
        let mut indices = vec![0u32; pairs.len()];
        for &(r, c) in pairs {
            indices[fill[r as usize]] = c;
            fill[r as usize] += 1;
        }
        // Sort and deduplicate each row, compacting in place.
        let mut indptr = Vec::with_capacity(n_rows + 1);
        indptr.push(0);
        let mut write = 0usize;
        let mut duplicates = 0usize;
        for r in 0..n_rows {
            let (start, end) = (counts[r], counts[r + 1]);
            indices[start..end].sort_unstable();
            let mut last: Option<u32> = None;
            for k in start..end {
                let c = indices[k];
                if last == Some(c) {
                    duplicates += 1;
                    continue;
                }
                indices[write] = c;
                write += 1;
                last = Some(c);
            }
            indptr.push(write);
        }
        indices.truncate(write);
        (Self { n_cols, indptr, indices }, duplicates)
    }

    /// Builds from one sorted-or-not list per row.
    pub fn from_rows(n_cols: usize, rows: &[Vec<u32>]) -> Self {
        let pairs: Vec<(u32, u32)> =
            rows.iter().enumerate().flat_map(|(r, cols)| cols.iter().map(move |&c| (r as u32, c))).collect();
        Self::from_pairs(rows.len(), n_cols, &pairs).0
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.indptr.len() - 1
    }

    /// Number of columns.
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Sorted column indices of row `r`.
    pub fn row(&self, r: usize) -> &[u32] {
        &self.indices[self.indptr[r]..self.indptr[r + 1]]
    }

    /// Number of entries in row `r`.
    pub fn degree(&self, r: usize) -> usize {
        self.indptr[r + 1] - self.indptr[r]
    }

    /// Degree of every row.
    pub fn degrees(&self) -> Vec<usize> {
        self.indptr.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// Whether `(r, c)` is stored (binary search in the sorted row).
    pub fn contains(&self, r: usize, c: u32) -> bool {
        self.row(r).binary_search(&c).is_ok()
    }

    /// Row pointer array, length `n_rows + 1`.
    pub fn indptr(&self) -> &[usize] {
        &self.indptr
    }

    /// Column index array, length `nnz`.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    /// The transpose (columns become rows), rows again sorted.
    pub fn transpose(&self) -> Self {
        let mut counts = vec![0usize; self.n_cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for c in 0..self.n_cols {
            counts[c + 1] += counts[c];
        }
        let mut fill = counts.clone();
        let mut indices = vec![0u32; self.indices.len()];
        // Rows are visited in increasing order, so each transposed row comes out sorted.
        for r in 0..self.n_rows() {
            for &c in self.row(r) {
                indices[fill[c as usize]] = r as u32;
                fill[c as usize] += 1;
            }
        }
        Self { n_cols: self.n_rows(), indptr: counts, indices }
    }

    /// All stored pairs `(row, col)` in row-major order.
    pub fn pairs(&self) -> Vec<(u32, u32)> {
        (0..self.n_rows()).flat_map(|r| self.row(r).iter().map(move |&c| (r as u32, c))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pairs_sorts_dedups_and_transposes() {
        let (m, dups) = Csr::from_pairs(3, 4, &[(2, 1), (0, 3), (0, 1), (2, 1), (0, 3)]);
        assert_eq!(dups, 2);
        assert_eq!(m.row(0), &[1, 3]);
        assert_eq!(m.row(1), &[] as &[u32]);
        assert_eq!(m.row(2), &[1]);
        assert_eq!(m.nnz(), 3);
        assert_eq!(m.degrees(), vec![2, 0, 1]);
        assert!(m.contains(0, 3) && !m.contains(1, 3));
        let t = m.transpose();
        assert_eq!(t.n_rows(), 4);
        assert_eq!(t.row(1), &[0, 2]);
        assert_eq!(t.row(3), &[0]);
        assert_eq!(t.transpose(), m);
        assert_eq!(m.pairs(), vec![(0, 1), (0, 3), (2, 1)]);
    }
}
