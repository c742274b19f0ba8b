//! Uniform negative sampling: items a user has not interacted with in train.

use std::fmt;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::csr::Csr;
use crate::error::{Error, Result};
use crate::rng;

/// Above this share of all items in a user's train row, sample from the enumerated complement instead of
/// rejection sampling.
const DENSE_ROW_SHARE: f64 = 0.9;

/// Draws items uniformly from the complement of a user's train row, from the stream
/// `rng::stream(seed, "neg-sampler")`.
pub struct NegativeSampler<'a> {
    train: &'a Csr,
    rng: ChaCha8Rng,
}

impl fmt::Debug for NegativeSampler<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NegativeSampler")
            .field("n_users", &self.train.n_rows())
            .field("n_items", &self.train.n_cols())
            .finish_non_exhaustive()
    }
}

impl<'a> NegativeSampler<'a> {
    /// A sampler over `train` (user → items).
    pub fn new(train: &'a Csr, seed: u64) -> Self {
        Self { train, rng: rng::stream(seed, "neg-sampler") }
    }

    /// One item not in `user`'s train row, uniformly. Errors if the user is out of range or has every item.
    pub fn sample(&mut self, user: u32) -> Result<u32> {
        let n_users = self.train.n_rows();
        if user as usize >= n_users {
            return Err(Error::UserOutOfRange { user, n_users });
        }
        let n_items = self.train.n_cols();
        let row = self.train.row(user as usize);
        let n_free = n_items.saturating_sub(row.len());
        if n_free == 0 {
            return Err(Error::NoNegatives { user, n_items });
        }
        if (row.len() as f64) <= DENSE_ROW_SHARE * n_items as f64 {
            // Rejection sampling: at most 90% of the draws are rejected, so this ends quickly.
            loop {
                let item = self.rng.random_range(0..n_items) as u32;
                if row.binary_search(&item).is_err() {
                    return Ok(item);
                }
            }
        }
        Ok(kth_missing(row, self.rng.random_range(0..n_free) as u32))
    }

    /// Clears `out` and fills it with `n` independent draws (with replacement) for `user`.
    pub fn sample_n(&mut self, user: u32, n: usize, out: &mut Vec<u32>) -> Result<()> {
        out.clear();
        out.reserve(n);
        for _ in 0..n {
            out.push(self.sample(user)?);
        }
        Ok(())
    }
}

/// The `k`-th (0-based) non-negative integer missing from the sorted, duplicate-free `row`.
///
/// Before `row[j]` there are `row[j] − j` missing integers; find the first `j` where that exceeds `k`.
fn kth_missing(row: &[u32], k: u32) -> u32 {
    let (mut lo, mut hi) = (0usize, row.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        // Sorted distinct non-negative values satisfy `row[mid] >= mid`.
        if (row[mid] as usize).saturating_sub(mid) <= k as usize {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    k + lo as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kth_missing_enumerates_the_complement() {
        let row = [0u32, 2, 3, 7];
        let missing: Vec<u32> = (0..5).map(|k| kth_missing(&row, k)).collect();
        assert_eq!(missing, vec![1, 4, 5, 6, 8]);
        assert_eq!(kth_missing(&[], 3), 3);
    }
}
