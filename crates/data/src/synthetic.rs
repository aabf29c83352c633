//! A labelled dataset made in milliseconds, for tests and smoke runs: one
//! shape per class (filled square, ring, cross, bars, …) at a random position
//! and size, bright on a dark background.
use crate::Dataset;
use tch::{Device, Kind, Tensor};

pub const CLASSES: [&str; 4] = ["square", "ring", "cross", "bars"];

/// `n` images of side `size` with `channels` channels, drawn from `seed`.
/// Classes cycle 0, 1, 2, 3, 0, …; the same seed gives the same set.
pub fn shapes(n: i64, size: i64, channels: i64, seed: u64) -> Dataset {
    let mut rng = SplitMix(seed ^ 0x5eed);
    let mut pixels = vec![-1.0f32; (n * channels * size * size) as usize];
    let mut labels = Vec::with_capacity(n as usize);
    let s = size as f32;
    for i in 0..n {
        let class = i % CLASSES.len() as i64;
        labels.push(class);
        let r = s * (0.2 + 0.15 * rng.unit()); // half-size of the shape
        let (cx, cy) = (s * (0.35 + 0.3 * rng.unit()), s * (0.35 + 0.3 * rng.unit()));
        let brightness = 0.5 + 0.5 * rng.unit();
        for y in 0..size {
            for x in 0..size {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let inside = match class {
                    0 => dx.abs() < r && dy.abs() < r,
                    1 => (dx.hypot(dy) - 0.7 * r).abs() < 0.25 * r,
                    2 => {
                        (dx.abs() < 0.25 * r && dy.abs() < r)
                            || (dy.abs() < 0.25 * r && dx.abs() < r)
                    }
                    _ => dx.abs() < r && dy.abs() < r && ((y as f32 / (0.4 * r)) as i64) % 2 == 0,
                };
                if inside {
                    for c in 0..channels {
                        // Colour images get a class-dependent tint.
                        let tint = if channels == 3 {
                            0.6 + 0.4 * (((class + c) % 3) as f32 / 2.0)
                        } else {
                            1.0
                        };
                        pixels[(((i * channels + c) * size + y) * size + x) as usize] =
                            brightness * tint * 2.0 - 1.0;
                    }
                }
            }
        }
    }
    Dataset {
        images: Tensor::from_slice(&pixels).reshape([n, channels, size, size]),
        labels: Tensor::from_slice(&labels)
            .to_kind(Kind::Int64)
            .to_device(Device::Cpu),
        num_classes: CLASSES.len() as i64,
    }
}

/// SplitMix64: a tiny, well-known generator, enough for test fixtures.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_labelled_and_in_range() {
        let a = shapes(8, 28, 1, 1);
        let b = shapes(8, 28, 1, 1);
        assert!(a.images.equal(&b.images));
        assert_eq!(a.images.size(), [8, 1, 28, 28]);
        assert_eq!(
            Vec::<i64>::try_from(&a.labels).unwrap(),
            [0, 1, 2, 3, 0, 1, 2, 3]
        );
        let (lo, hi) = (
            a.images.min().double_value(&[]),
            a.images.max().double_value(&[]),
        );
        assert!(lo >= -1.0 && hi <= 1.0 && hi > 0.0);
        // Every image has some foreground.
        let fg = a
            .images
            .gt(-1.0)
            .sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Int64);
        assert!(Vec::<i64>::try_from(&fg).unwrap().iter().all(|&c| c > 10));
        assert!(!shapes(8, 28, 1, 2).images.equal(&a.images));
        assert_eq!(shapes(2, 32, 3, 0).images.size(), [2, 3, 32, 32]);
    }
}
