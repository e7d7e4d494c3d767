//! A bounds-checked front door to `gemm::gemm`, the only `unsafe` of the network code.
//!
//! Convolutions here are matrix products on strided views of activation buffers (overlapping
//! rows included, see `engine`). Every view is checked against its slice once per call, so a
//! wrong stride is a panic with a message instead of an out-of-bounds read.

use gemm::Parallelism;

/// A read-only `rows × cols` matrix view: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// # Panics
    /// If the view reaches outside `data`.
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            fits(data.len(), rows, cols, rs, cs),
            "matrix view {rows}×{cols} (strides {rs}, {cs}) exceeds {} values",
            data.len()
        );
        MatRef {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A dense row-major view.
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }
}

/// A writable `rows × cols` view with unit column stride: element `(i, j)` is `data[i·rs + j]`.
pub(crate) struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
}

impl<'a> MatMut<'a> {
    /// # Panics
    /// If the view reaches outside `data` or rows would overlap (`rs < cols`).
    pub(crate) fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize) -> Self {
        assert!(
            rs >= cols || rows <= 1,
            "destination rows overlap (stride {rs} < {cols} columns)"
        );
        assert!(
            fits(data.len(), rows, cols, rs, 1),
            "matrix view {rows}×{cols} (row stride {rs}) exceeds {} values",
            data.len()
        );
        MatMut {
            data,
            rows,
            cols,
            rs,
        }
    }

    pub(crate) fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols)
    }
}

fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)));
    matches!(last, Some(l) if l < len)
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`.
///
/// `parallel` lets gemm split the product over the rayon pool; pass `false` when the caller is
/// already parallel (nesting both oversubscribes the cores).
///
/// # Panics
/// If the inner or outer dimensions disagree.
pub(crate) fn gemm(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
    parallel: bool,
) {
    assert_eq!(lhs.cols, rhs.rows, "inner dimensions differ");
    assert_eq!(dst.rows, lhs.rows, "row counts differ");
    assert_eq!(dst.cols, rhs.cols, "column counts differ");
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst.data[i * dst.rs..i * dst.rs + n].fill(0.0);
            }
        }
        return;
    }
    let parallelism = if parallel {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: the three views were checked against their slices in `MatRef::new`/`MatMut::new`
    // (every element (i, j) with i < rows, j < cols lies inside the slice), the destination rows do
    // not overlap, and `dst` is borrowed mutably so it cannot alias `lhs` or `rhs`. Strides are
    // well below isize::MAX because they index existing slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_with_overlapping_lhs_rows() {
        // lhs rows overlap: row i is data[i..i+2].
        let data = [1.0, 2.0, 3.0, 4.0];
        let lhs = MatRef::new(&data, 3, 2, 1, 1);
        let w = [1.0, 10.0];
        let rhs = MatRef::row_major(&w, 2, 1);
        let mut out = [0.0; 3];
        gemm(MatMut::row_major(&mut out, 3, 1), lhs, rhs, false, false);
        assert_eq!(out, [21.0, 32.0, 43.0]);
        gemm(MatMut::row_major(&mut out, 3, 1), lhs, rhs, true, false);
        assert_eq!(out, [42.0, 64.0, 86.0]);
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn out_of_bounds_view_panics() {
        let data = [0.0; 5];
        let _ = MatRef::new(&data, 3, 2, 2, 1);
    }
}
