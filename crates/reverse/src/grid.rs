//! The timestep grid of a DDIM (or DDPM) sampler.
//!
//! A grid is a strictly decreasing list of timesteps τ_S > … > τ_1 in 0..T,
//! each paired with the step it jumps to; the last one jumps to "before the
//! first step", where ᾱ = 1. [`TimestepGrid::new`] checks that: a grid it
//! builds never repeats a step, never contains T and always ends on ᾱ = 1.
//! It may start below T − 1 (that is what [`Spacing::Leading`] does, as
//! diffusers' "leading" does); the DDIM chapter shows what that costs.
//! [`TimestepGrid::unchecked`] builds any list, for the bug museum.
use crate::ReverseError;

/// How S steps are spread over T (names as in the diffusers library; see
/// Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    /// τ_i = i·⌊T/S⌋: starts at (S−1)·⌊T/S⌋, which is below T − 1 unless S = T.
    Leading,
    /// τ = round(linspace(0, T−1, S)): both ends included.
    Linspace,
    /// τ_i = round(T − i·T/S) − 1: starts at T − 1, spaced back from the end.
    Trailing,
}

/// One step of a grid: from timestep `t` to `prev` (None = past the first
/// step, where x is the final sample and ᾱ_prev = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridStep {
    pub t: i64,
    pub prev: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestepGrid {
    steps: Vec<GridStep>,
    pub total: usize,
    pub spacing: Spacing,
}

impl TimestepGrid {
    // ANCHOR: grid_new
    /// S steps out of T.
    pub fn new(total: usize, s: usize, spacing: Spacing) -> Result<Self, ReverseError> {
        if s == 0 || s > total {
            return Err(ReverseError::Config(format!(
                "{s} sampling steps: choose between 1 and T = {total}"
            )));
        }
        let (t_max, s_f) = (total as i64 - 1, s as f64);
        let mut ts: Vec<i64> = match spacing {
            Spacing::Leading => (0..s as i64).map(|i| i * (total / s) as i64).collect(),
            Spacing::Linspace if s == 1 => vec![t_max],
            Spacing::Linspace => (0..s)
                .map(|i| (i as f64 * t_max as f64 / (s_f - 1.0)).round() as i64)
                .collect(),
            Spacing::Trailing => (0..s)
                .map(|i| (total as f64 - i as f64 * total as f64 / s_f).round() as i64 - 1)
                .collect(),
        };
        ts.sort_unstable_by(|a, b| b.cmp(a)); // descending: sampling runs from noise to data
        ts.dedup();
        debug_assert_eq!(ts.len(), s, "S ≤ T keeps every step distinct");
        let steps = ts
            .iter()
            .enumerate()
            .map(|(i, &t)| GridStep {
                t,
                prev: ts.get(i + 1).copied(),
            })
            .collect();
        Ok(Self {
            steps,
            total,
            spacing,
        })
    }
    // ANCHOR_END: grid_new

    /// Every step of DDPM: T − 1, T − 2, …, 0.
    pub fn full(total: usize) -> Self {
        Self::new(total, total, Spacing::Trailing).expect("S = T is valid")
    }

    pub fn steps(&self) -> &[GridStep] {
        &self.steps
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Builds a grid from explicit timesteps, for the bug museum's broken
    /// grids: this skips every check that [`TimestepGrid::new`] makes.
    pub fn unchecked(ts: &[i64], total: usize, last_prev: Option<i64>) -> Self {
        let steps = ts
            .iter()
            .enumerate()
            .map(|(i, &t)| GridStep {
                t,
                prev: if i + 1 < ts.len() {
                    Some(ts[i + 1])
                } else {
                    last_prev
                },
            })
            .collect();
        Self {
            steps,
            total,
            spacing: Spacing::Leading,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grid_is_well_formed() {
        for total in [10usize, 300, 1000] {
            for spacing in [Spacing::Leading, Spacing::Linspace, Spacing::Trailing] {
                for s in 1..=total {
                    let g = TimestepGrid::new(total, s, spacing).unwrap();
                    let ts: Vec<i64> = g.steps().iter().map(|st| st.t).collect();
                    assert_eq!(ts.len(), s, "T={total} S={s} {spacing:?}: duplicates");
                    assert!(
                        ts.windows(2).all(|w| w[0] > w[1]),
                        "T={total} S={s} {spacing:?}: not decreasing"
                    );
                    assert!(
                        ts.iter().all(|&t| (0..total as i64).contains(&t)),
                        "T={total} S={s} {spacing:?}: {ts:?} leaves 0..T"
                    );
                    if spacing != Spacing::Leading {
                        assert_eq!(
                            ts[0],
                            total as i64 - 1,
                            "T={total} S={s} {spacing:?}: must start at T−1"
                        );
                    }
                    // Each step jumps to the next; the last ends on ᾱ_prev = 1.
                    for (a, b) in g.steps().iter().zip(g.steps().iter().skip(1)) {
                        assert_eq!(a.prev, Some(b.t));
                    }
                    assert_eq!(g.steps().last().unwrap().prev, None);
                }
            }
        }
    }

    #[test]
    fn known_grids() {
        let ts = |s, sp| {
            TimestepGrid::new(10, s, sp)
                .unwrap()
                .steps()
                .iter()
                .map(|x| x.t)
                .collect::<Vec<_>>()
        };
        assert_eq!(ts(3, Spacing::Leading), [6, 3, 0]);
        assert_eq!(ts(3, Spacing::Linspace), [9, 5, 0]);
        assert_eq!(ts(3, Spacing::Trailing), [9, 6, 2]);
        assert_eq!(ts(10, Spacing::Trailing), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(
            TimestepGrid::full(4)
                .steps()
                .iter()
                .map(|x| x.t)
                .collect::<Vec<_>>(),
            [3, 2, 1, 0]
        );
        assert!(TimestepGrid::new(10, 0, Spacing::Linspace).is_err());
        assert!(TimestepGrid::new(10, 11, Spacing::Linspace)
            .unwrap_err()
            .to_string()
            .contains("between 1 and T = 10"));
    }
}
