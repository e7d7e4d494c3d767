//! The per-channel input transform a layer applies while it reads its input: the inference-time
//! batch-norm normalisation and the ReLU of the *previous* layer, fused into the reader.
//!
//! Why: the networks keep only each convolution's raw output `z` (NHWC) and its batch-norm
//! statistics. The next layer reads `relu((z − mean)·scale)` through an [`InputMap`] while it
//! builds its im2col blocks, so batch norm and ReLU cost no extra pass over memory and no second
//! copy of the activations is kept; backward recomputes `x̂ = (z − mean)·scale` and the ReLU mask
//! from `z` the same way. With [`InputMap::IDENTITY`] a layer reads its input unchanged.

/// `v ↦ act((v − shift[c])·scale[c])` for channel `c`, `act` the ReLU or the identity.
///
/// `B` is where the per-channel vectors live: host slices (the default, what the CPU ops here
/// read) or a backend's buffers (`nn::backend::Backend::Buf`, e.g. a device buffer).
#[derive(Debug)]
pub struct InputMap<'a, B: ?Sized = [f32]> {
    /// Per-channel `(shift, scale)`, or `None` for `v` itself.
    pub affine: Option<(&'a B, &'a B)>,
    /// Whether the ReLU follows the affine part.
    pub relu: bool,
}

impl<B: ?Sized> Clone for InputMap<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: ?Sized> Copy for InputMap<'_, B> {}

impl<B: ?Sized> Default for InputMap<'_, B> {
    /// The identity.
    fn default() -> Self {
        InputMap {
            affine: None,
            relu: false,
        }
    }
}

impl<'a, B: AsRef<[f32]> + ?Sized> InputMap<'a, B> {
    /// The same map over host slices (e.g. from `Vec<f32>` buffers).
    pub fn as_slices(&self) -> InputMap<'a> {
        InputMap {
            affine: self.affine.map(|(s, k)| (s.as_ref(), k.as_ref())),
            relu: self.relu,
        }
    }
}

impl<'a> InputMap<'a> {
    /// Reads the input unchanged.
    pub const IDENTITY: InputMap<'static> = InputMap {
        affine: None,
        relu: false,
    };

    /// Only a ReLU.
    pub fn relu() -> InputMap<'static> {
        InputMap {
            affine: None,
            relu: true,
        }
    }

    /// Whether the map is the identity.
    pub fn is_identity(&self) -> bool {
        self.affine.is_none() && !self.relu
    }

    /// Applies the map to a run of whole pixels (`src.len()` a multiple of the channel count
    /// when an affine part is present), writing `dst`.
    #[inline]
    pub fn apply(&self, src: &[f32], dst: &mut [f32]) {
        match (self.affine, self.relu) {
            (None, false) => dst.copy_from_slice(src),
            (None, true) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.max(0.0)),
            (Some((shift, scale)), relu) => {
                let c = shift.len();
                for (d, s) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
                    for (((d, &s), &m), &k) in d.iter_mut().zip(s).zip(shift).zip(scale) {
                        let v = (s - m) * k;
                        *d = if relu { v.max(0.0) } else { v };
                    }
                }
            }
        }
    }

    /// The mapped value of a single element of channel `c`.
    #[inline]
    pub fn value(&self, v: f32, c: usize) -> f32 {
        let v = match self.affine {
            Some((shift, scale)) => (v - shift[c]) * scale[c],
            None => v,
        };
        if self.relu {
            v.max(0.0)
        } else {
            v
        }
    }
}
