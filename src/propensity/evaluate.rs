//! How good a score is on labelled examples: ROC AUC, PR AUC (average precision), log loss
//! and calibration by decile. Plain definitions, checked against hand-computed cases below.

use serde::{Deserialize, Serialize};

/// One decile of examples ordered by score: how many, the mean score, the observed rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decile {
    pub decile: usize,
    pub count: usize,
    pub mean_score: f64,
    pub observed_rate: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub examples: usize,
    pub positives: usize,
    pub roc_auc: f64,
    pub pr_auc: f64,
    pub log_loss: f64,
    pub calibration: Vec<Decile>,
}

impl Metrics {
    pub fn of(scores: &[f64], labels: &[bool]) -> Metrics {
        Metrics {
            examples: labels.len(),
            positives: labels.iter().filter(|l| **l).count(),
            roc_auc: roc_auc(scores, labels),
            pr_auc: average_precision(scores, labels),
            log_loss: log_loss(scores, labels),
            calibration: calibration(scores, labels, 10),
        }
    }
}

/// Indices ordered by score, highest first (ties by index: deterministic).
fn by_score_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx
}

/// The probability that a random positive scores above a random negative (ties count half):
/// the Mann–Whitney U statistic over midranks. NaN without both classes.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let n = scores.len();
    let pos = labels.iter().filter(|l| **l).count();
    let neg = n - pos;
    if pos == 0 || neg == 0 {
        return f64::NAN;
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum_pos += mid;
            }
        }
        i = j + 1;
    }
    (rank_sum_pos - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64)
}

/// Average precision: the mean, over the positives, of the precision at each one's score
/// (tied scores form one threshold). NaN without positives.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    let pos = labels.iter().filter(|l| **l).count();
    if pos == 0 {
        return f64::NAN;
    }
    let idx = by_score_desc(scores);
    let (mut tp, mut seen, mut ap) = (0usize, 0usize, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        let mut tp_here = 0;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            if labels[idx[j]] {
                tp_here += 1;
            }
            j += 1;
        }
        seen += j - i;
        tp += tp_here;
        ap += tp_here as f64 * (tp as f64 / seen as f64);
        i = j;
    }
    ap / pos as f64
}

/// Mean negative log-likelihood, probabilities clipped to [1e-15, 1 − 1e-15].
pub fn log_loss(scores: &[f64], labels: &[bool]) -> f64 {
    if scores.is_empty() {
        return f64::NAN;
    }
    let sum: f64 = scores
        .iter()
        .zip(labels)
        .map(|(p, y)| {
            let p = p.clamp(1e-15, 1.0 - 1e-15);
            if *y {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    sum / scores.len() as f64
}

/// `bins` groups of (nearly) equal size by ascending score: decile 1 holds the lowest scores.
pub fn calibration(scores: &[f64], labels: &[bool], bins: usize) -> Vec<Decile> {
    let n = scores.len();
    if n == 0 {
        return vec![];
    }
    let mut idx = by_score_desc(scores);
    idx.reverse();
    (0..bins)
        .filter_map(|b| {
            let (lo, hi) = (b * n / bins, (b + 1) * n / bins);
            (hi > lo).then(|| {
                let part = &idx[lo..hi];
                Decile {
                    decile: b + 1,
                    count: part.len(),
                    mean_score: part.iter().map(|&i| scores[i]).sum::<f64>() / part.len() as f64,
                    observed_rate: part.iter().filter(|&&i| labels[i]).count() as f64 / part.len() as f64,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half_and_orders_pairs() {
        // Pairs (pos, neg): (0.9,0.1) win, (0.9,0.5) win, (0.5,0.1) win, (0.5,0.5) tie → 3.5/4.
        let s = [0.9, 0.5, 0.5, 0.1];
        let y = [true, true, false, false];
        assert_eq!(roc_auc(&s, &y), 0.875);
        assert_eq!(roc_auc(&[0.2, 0.8], &[true, false]), 0.0);
        assert!(roc_auc(&[0.2, 0.8], &[true, true]).is_nan());
    }

    #[test]
    fn average_precision_is_mean_precision_at_each_positive() {
        // Ranked: 0.9 (+) p=1, 0.8 (−), 0.7 (+) p=2/3 → (1 + 2/3) / 2.
        let ap = average_precision(&[0.9, 0.8, 0.7], &[true, false, true]);
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12, "{ap}");
    }

    #[test]
    fn log_loss_and_deciles_match_hand_computation() {
        let ll = log_loss(&[0.5, 0.9], &[true, false]);
        assert!((ll - (-(0.5f64).ln() - (0.1f64).ln()) / 2.0).abs() < 1e-12);
        let s: Vec<f64> = (0..20).map(|i| i as f64 / 20.0).collect();
        let y: Vec<bool> = (0..20).map(|i| i >= 18).collect();
        let d = calibration(&s, &y, 10);
        assert_eq!(d.len(), 10);
        assert_eq!((d[0].count, d[0].observed_rate, d[9].observed_rate), (2, 0.0, 1.0));
        assert!((d[9].mean_score - 0.925).abs() < 1e-12);
    }
}
