//! Seeded, stateless batching. Batch k of a run is a pure function of
//! (seed, k): epoch e = k / batches_per_epoch is a permutation drawn from
//! (seed, e). Resuming at step k needs no saved iterator state.
use crate::Dataset;
use tch::{Kind, Tensor};

#[derive(Debug)]
pub struct Batches<'a> {
    data: &'a Dataset,
    pub batch_size: i64,
    pub seed: u64,
    /// Drop the last, incomplete batch of each epoch.
    pub drop_last: bool,
    cached: Option<(i64, Tensor)>,
}

impl<'a> Batches<'a> {
    pub fn new(data: &'a Dataset, batch_size: i64, seed: u64, drop_last: bool) -> Self {
        assert!(batch_size > 0, "batch size must be positive");
        Self {
            data,
            batch_size,
            seed,
            drop_last,
            cached: None,
        }
    }

    pub fn per_epoch(&self) -> i64 {
        let n = self.data.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            (n + self.batch_size - 1) / self.batch_size
        }
    }

    /// Batch number `k` (0-based, across epochs): (images, labels).
    pub fn get(&mut self, k: i64) -> (Tensor, Tensor) {
        let per_epoch = self.per_epoch().max(1);
        let (epoch, i) = (k / per_epoch, k % per_epoch);
        let perm = match &self.cached {
            Some((e, p)) if *e == epoch => p.shallow_clone(),
            _ => {
                // the index must live where the data does (CPU or GPU)
                let p = permutation(self.data.len(), self.seed, epoch as u64)
                    .to_device(self.data.images.device());
                self.cached = Some((epoch, p.shallow_clone()));
                p
            }
        };
        let start = i * self.batch_size;
        let len = self.batch_size.min(self.data.len() - start);
        let idx = perm.narrow(0, start, len);
        (
            self.data.images.index_select(0, &idx),
            self.data.labels.index_select(0, &idx),
        )
    }
}

/// A permutation of 0..n drawn from (seed, epoch) with a Fisher–Yates shuffle
/// over SplitMix64, independent of libtorch's global generator.
pub fn permutation(n: i64, seed: u64, epoch: u64) -> Tensor {
    let mut state =
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch.wrapping_add(0xD1B5_4A32_D192_ED03);
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut p: Vec<i64> = (0..n).collect();
    for i in (1..n as usize).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    Tensor::from_slice(&p).to_kind(Kind::Int64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::shapes;

    #[test]
    fn each_epoch_is_a_seeded_permutation() {
        let data = shapes(10, 8, 1, 0);
        let mut b = Batches::new(&data, 4, 7, false);
        assert_eq!(b.per_epoch(), 3);
        let labels_of = |b: &mut Batches, ks: std::ops::Range<i64>| -> Vec<i64> {
            ks.flat_map(|k| Vec::<i64>::try_from(&b.get(k).1).unwrap())
                .collect()
        };
        // One epoch covers every image exactly once: 3 × class 0, 3 × 1, 2 × 2, 2 × 3.
        let mut epoch0 = labels_of(&mut b, 0..3);
        assert_eq!(epoch0.len(), 10);
        epoch0.sort();
        assert_eq!(epoch0, [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]);
        // Same (seed, k) → same batch, in any order of calls; other epochs differ.
        let again = b.get(1).0;
        let _ = b.get(5);
        assert!(b.get(1).0.equal(&again));
        assert!(!b.get(3).0.equal(&b.get(0).0));
        let mut d = Batches::new(&data, 4, 7, true);
        assert_eq!(d.per_epoch(), 2);
        assert_eq!(d.get(1).0.size()[0], 4);
    }
}
