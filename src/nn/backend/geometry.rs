//! The shapes of the batched operations, checked once in plain Rust before any backend runs them:
//! a bad shape is an [`Error::Invalid`] here, never a panic or an out-of-bounds launch later.
//! Sizes must fit 32-bit indices (the CUDA kernels index with `int`), so that every backend
//! accepts the same shapes.

use crate::nn::ops::spatial_transformer::WarpSize;
use crate::nn::ops::ConvShape;
use crate::{Error, Result};

fn invalid(op: &str, message: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{op}: {message}"))
}

/// `v` as a 32-bit index, if it fits.
pub fn fits_int(v: usize) -> Option<i32> {
    i32::try_from(v).ok()
}

fn check_int(op: &str, what: &str, v: usize) -> Result<()> {
    match fits_int(v) {
        Some(_) => Ok(()),
        None => Err(invalid(op, format!("{what} = {v} exceeds a 32-bit index"))),
    }
}

/// A convolution's geometry (NHWC activations, weights in GEMM layout
/// `[(ky·k + kx)·cin + ci][co]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Items in the batch.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel side (square).
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub pad: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvGeometry {
    /// Checks the geometry (positive sizes, kernel inside the padded input, 32-bit indices).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n: usize,
        h: usize,
        w: usize,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<ConvGeometry> {
        const K: &str = "conv2d";
        if cin == 0 || cout == 0 || k == 0 || stride == 0 || h == 0 || w == 0 {
            return Err(invalid(
                K,
                format!("sizes must be positive (h {h}, w {w}, cin {cin}, cout {cout}, k {k}, stride {stride})"),
            ));
        }
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        if hp < k || wp < k {
            return Err(invalid(
                K,
                format!("input {h}×{w} with padding {pad} is smaller than the {k}×{k} kernel"),
            ));
        }
        let g = ConvGeometry {
            n,
            h,
            w,
            cin,
            cout,
            k,
            stride,
            pad,
            oh: (hp - k) / stride + 1,
            ow: (wp - k) / stride + 1,
        };
        for (what, v) in [
            ("n", n),
            ("h", h),
            ("w", w),
            ("k·k·cin", g.kk()),
            ("k·k·cout", k * k * cout),
        ] {
            check_int(K, what, v)?;
        }
        Ok(g)
    }

    /// `k·k·cin`, the GEMM's inner dimension.
    pub fn kk(&self) -> usize {
        self.k * self.k * self.cin
    }
    /// Values of the input, `n·h·w·cin`.
    pub fn in_len(&self) -> usize {
        self.n * self.h * self.w * self.cin
    }
    /// Values of the output, `n·oh·ow·cout`.
    pub fn out_len(&self) -> usize {
        self.n * self.oh * self.ow * self.cout
    }
    /// Number of weights, `k·k·cin·cout`.
    pub fn weight_len(&self) -> usize {
        self.kk() * self.cout
    }

    /// The same convolution as the CPU ops describe it (without the batch and input size).
    pub fn shape(&self) -> ConvShape {
        ConvShape {
            cin: self.cin,
            cout: self.cout,
            k: self.k,
            stride: self.stride,
            padding: self.pad,
        }
    }
}

/// Source and output sizes of the batched spatial transformer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarpGeometry {
    /// Items in the batch.
    pub n: usize,
    /// Source height.
    pub in_h: usize,
    /// Source width.
    pub in_w: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

impl WarpGeometry {
    /// Checks the geometry (a non-empty source, 32-bit indices).
    pub fn new(n: usize, in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Result<Self> {
        const K: &str = "warp";
        if in_h == 0 || in_w == 0 {
            return Err(invalid(K, "empty source"));
        }
        check_int(K, "source pixels", in_h * in_w)?;
        check_int(K, "output pixels", out_h * out_w)?;
        check_int(K, "items", n)?;
        Ok(WarpGeometry {
            n,
            in_h,
            in_w,
            out_h,
            out_w,
        })
    }
    /// Values of the sources, `n·in_h·in_w`.
    pub fn src_len(&self) -> usize {
        self.n * self.in_h * self.in_w
    }
    /// Values of the outputs, `n·out_h·out_w`.
    pub fn out_len(&self) -> usize {
        self.n * self.out_h * self.out_w
    }
    /// The per-item sizes as the CPU ops describe them.
    pub fn size(&self) -> WarpSize {
        WarpSize {
            in_h: self.in_h,
            in_w: self.in_w,
            out_h: self.out_h,
            out_w: self.out_w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_geometry_matches_pytorch_and_rejects_bad_shapes() {
        let g = ConvGeometry::new(5, 32, 32, 16, 32, 3, 2, 1).unwrap();
        assert_eq!((g.oh, g.ow), (16, 16));
        assert_eq!(g.weight_len(), 3 * 3 * 16 * 32);
        assert_eq!(g.shape().out_size(32, 32), (g.oh, g.ow));
        let g = ConvGeometry::new(2, 8, 8, 64, 2, 8, 1, 1).unwrap();
        assert_eq!((g.oh, g.ow), (3, 3)); // OriNet's last layer
        assert!(ConvGeometry::new(1, 4, 4, 1, 1, 7, 1, 1).is_err());
        assert!(ConvGeometry::new(1, 4, 4, 1, 1, 3, 0, 1).is_err());
        assert!(ConvGeometry::new(1, 4, 4, 0, 1, 3, 1, 1).is_err());
        assert!(ConvGeometry::new(1, 0, 4, 1, 1, 1, 1, 0).is_err());
        let e = ConvGeometry::new(1, 1 << 20, 1 << 20, 1 << 12, 1, 1 << 10, 1, 0).unwrap_err();
        assert!(e.to_string().contains("32-bit"), "{e}");
        assert!(WarpGeometry::new(1, 0, 4, 4, 4).is_err());
        assert_eq!(fits_int(i32::MAX as usize), Some(i32::MAX));
        assert_eq!(fits_int(i32::MAX as usize + 1), None);
    }
}
