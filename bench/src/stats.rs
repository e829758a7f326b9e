// SPDX-License-Identifier: MIT OR Apache-2.0
//! Statistics of paired repetitions: the median of per-repetition ratios
//! with a bootstrap confidence interval, and the verdict on a target.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Bootstrap resamples per interval.
const RESAMPLES: usize = 4000;
/// The interval's coverage.
pub const CONFIDENCE: f64 = 0.95;
/// Fixed, so the same runs always give the same report.
const SEED: u64 = 0x0065_6e6f_6b69;

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

pub fn geomean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

/// Percentile bootstrap interval of the median of `v` ([`CONFIDENCE`]);
/// `None` with fewer than two values (one repetition says nothing about
/// its own spread).
pub fn median_ci(v: &[f64]) -> Option<(f64, f64)> {
    if v.len() < 2 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut sample = vec![0.0; v.len()];
    let mut medians: Vec<f64> = (0..RESAMPLES)
        .filter_map(|_| {
            for x in sample.iter_mut() {
                *x = v[rng.random_range(0..v.len())];
            }
            median(&sample)
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    let at = |q: f64| medians[((medians.len() - 1) as f64 * q).round() as usize];
    Some((at(tail), at(1.0 - tail)))
}

/// Where a measurement stands against an upper limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The whole interval is at or under the limit.
    Met,
    /// The whole interval is over it.
    Missed,
    /// The interval straddles it, or there is no interval.
    #[default]
    Undecided,
}

impl Verdict {
    /// The verdict for an interval against `limit` (lower is better).
    pub fn of(ci: Option<(f64, f64)>, limit: f64) -> Self {
        match ci {
            Some((_, hi)) if hi <= limit => Verdict::Met,
            Some((lo, _)) if lo > limit => Verdict::Missed,
            _ => Verdict::Undecided,
        }
    }

    /// The verdict on several measurements that must all meet the limit.
    pub fn all(vs: impl IntoIterator<Item = Verdict>) -> Self {
        let vs: Vec<Verdict> = vs.into_iter().collect();
        if vs.contains(&Verdict::Missed) {
            Verdict::Missed
        } else if !vs.is_empty() && vs.iter().all(|v| *v == Verdict::Met) {
            Verdict::Met
        } else {
            Verdict::Undecided
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**missed**",
            Verdict::Undecided => "undecided",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_holds_the_median_and_narrows_with_agreeing_pairs() {
        let v = [1.02, 1.05, 1.04, 1.10, 1.03, 1.06, 1.04];
        let (lo, hi) = median_ci(&v).unwrap();
        let m = median(&v).unwrap();
        assert!(
            lo <= m && m <= hi && lo >= 1.02 && hi <= 1.10,
            "{lo} {m} {hi}"
        );
        assert_eq!(median_ci(&[1.1, 1.1, 1.1]), Some((1.1, 1.1)));
        assert_eq!(median_ci(&[1.1]), None);
        // Same input, same interval: the report is reproducible.
        assert_eq!(median_ci(&v), median_ci(&v));
    }

    #[test]
    fn verdicts_follow_the_whole_interval() {
        assert_eq!(Verdict::of(Some((1.00, 1.04)), 1.05), Verdict::Met);
        assert_eq!(Verdict::of(Some((1.06, 1.09)), 1.05), Verdict::Missed);
        assert_eq!(Verdict::of(Some((1.01, 1.09)), 1.05), Verdict::Undecided);
        assert_eq!(Verdict::of(None, 1.05), Verdict::Undecided);
        use Verdict::*;
        assert_eq!(Verdict::all([Met, Met]), Met);
        assert_eq!(Verdict::all([Met, Undecided]), Undecided);
        assert_eq!(Verdict::all([Undecided, Missed]), Missed);
        assert_eq!(Verdict::all([]), Undecided);
    }
}
