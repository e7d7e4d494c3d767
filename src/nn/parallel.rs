//! Deterministic data parallelism: batches are cut into a fixed number of contiguous groups that
//! run as rayon tasks, and every cross-group reduction (weight gradients, batch-norm statistics)
//! adds the per-group partial results in group order.
//!
//! Why: the number of groups does not depend on the thread count or on work stealing, so a
//! training run gives bit-identical weights with 1, 2 or 16 threads, and a run that is stopped
//! and resumed equals an uninterrupted one. A `fold`/`reduce` over rayon's own splits
//! would not.

use std::cell::RefCell;
use std::ops::Range;

/// Groups per batch: enough tasks to balance 2–16 cores, few enough that per-group partial
/// weight gradients stay small (16 × 37k values for AffNet's largest layer).
pub(crate) const GROUPS: usize = 16;

/// `n` items in at most [`GROUPS`] contiguous ranges whose sizes differ by at most one.
pub(crate) fn group_ranges(n: usize) -> Vec<Range<usize>> {
    let g = GROUPS.min(n).max(1);
    let (base, extra) = (n / g, n % g);
    let mut start = 0;
    (0..g)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// Cuts `buf` (items of `item_len` values, back to back) into one mutable slice per range.
///
/// # Panics
/// If the ranges are not contiguous from 0 or exceed the buffer.
pub(crate) fn split_mut<'a>(
    mut buf: &'a mut [f32],
    item_len: usize,
    ranges: &[Range<usize>],
) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(ranges.len());
    let mut at = 0;
    for r in ranges {
        assert_eq!(r.start, at, "group ranges must be contiguous");
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(r.len() * item_len);
        out.push(head);
        buf = tail;
        at = r.end;
    }
    out
}

thread_local! {
    static SCRATCH: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Runs `f` with three per-thread work buffers of at least the given lengths. The buffers
/// persist between calls (contents unspecified), so hot loops allocate nothing after the first
/// step.
pub(crate) fn with_scratch<R>(
    lens: [usize; 3],
    f: impl FnOnce(&mut [f32], &mut [f32], &mut [f32]) -> R,
) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            for (v, &len) in s.iter_mut().zip(&lens) {
                if v.len() < len {
                    v.resize(len, 0.0);
                }
            }
            let [a, b, c] = &mut *s;
            f(&mut a[..lens[0]], &mut b[..lens[1]], &mut c[..lens[2]])
        }
        // Re-entered from inside `f` (not done here, but safe): private buffers.
        Err(_) => f(
            &mut vec![0.0; lens[0]],
            &mut vec![0.0; lens[1]],
            &mut vec![0.0; lens[2]],
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once() {
        for n in [0, 1, 5, 16, 17, 1000] {
            let r = group_ranges(n);
            assert_eq!(r.iter().map(|r| r.len()).sum::<usize>(), n);
            assert!(r.len() <= GROUPS);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
        }
        let mut buf = vec![0.0; 17 * 3];
        let parts = split_mut(&mut buf, 3, &group_ranges(17));
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 51);
    }
}
