//! The activation type of the reference layers: a dense NCHW f32 tensor.
//!
//! Deliberately plain (a shape and a `Vec`), so that layer code reads like the maths and a later
//! backward pass or GPU upload has nothing to unwrap. The fast inference path in `engine` uses its
//! own padded channels-last buffers and never builds one of these.

/// A batch of `n` images with `c` channels of `h × w` pixels, stored as `data[((n·C + c)·H + y)·W + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// `[n, c, h, w]`.
    pub shape: [usize; 4],
    /// The values, NCHW row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: [usize; 4]) -> Self {
        Tensor {
            shape,
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// Wraps `data` (NCHW order).
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape`.
    pub fn from_vec(shape: [usize; 4], data: Vec<f32>) -> Self {
        assert_eq!(
            data.len(),
            shape.iter().product::<usize>(),
            "tensor data length does not match shape {shape:?}"
        );
        Tensor { shape, data }
    }

    /// A batch of single-channel `side × side` patches from a flat row-major buffer.
    ///
    /// # Panics
    /// If `patches.len()` is not a multiple of `side²`.
    pub fn from_patches(patches: &[f32], side: usize) -> Self {
        let area = side * side;
        assert!(
            area > 0 && patches.len().is_multiple_of(area),
            "patch buffer of {} values is not a whole number of {side}×{side} patches",
            patches.len()
        );
        Tensor::from_vec([patches.len() / area, 1, side, side], patches.to_vec())
    }

    /// Batch size.
    pub fn n(&self) -> usize {
        self.shape[0]
    }
    /// Channels.
    pub fn c(&self) -> usize {
        self.shape[1]
    }
    /// Height.
    pub fn h(&self) -> usize {
        self.shape[2]
    }
    /// Width.
    pub fn w(&self) -> usize {
        self.shape[3]
    }

    /// Values per batch item (`c·h·w`).
    pub fn item_len(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    /// Flat index of `(n, c, y, x)`.
    #[inline]
    pub fn index(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        ((n * self.shape[1] + c) * self.shape[2] + y) * self.shape[3] + x
    }

    #[inline]
    /// The value at `(n, c, y, x)`.
    pub fn at(&self, n: usize, c: usize, y: usize, x: usize) -> f32 {
        self.data[self.index(n, c, y, x)]
    }

    /// Applies `f` to every value.
    pub fn map(mut self, f: impl Fn(f32) -> f32) -> Self {
        self.data.iter_mut().for_each(|v| *v = f(*v));
        self
    }

    /// The largest absolute difference to `other` (same shape required).
    ///
    /// # Panics
    /// If the shapes differ.
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        assert_eq!(self.shape, other.shape, "shapes differ");
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }
}
