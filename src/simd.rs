//! Run-time selection of wider SIMD for the hot loops.
//!
//! wbs is built for baseline x86-64 (SSE2) so that the binary runs everywhere; the loops that
//! dominate a match (SIFT, the orientation histogram, Baumberg's window, blurs) are compiled a
//! second time with AVX2 + FMA enabled and chosen at run time by `multiversion!`. Their bodies are
//! written so that the compiler vectorises them without reordering floating-point reductions, so
//! both versions give bit-identical results. Patch sampling, whose gathers the compiler does not
//! vectorise, has a hand-written AVX2 version (`patch::sample_inside`) with the same bits,
//! chosen by [`has_avx2`] too.

use std::sync::atomic::{AtomicBool, Ordering};

static FORCE_PORTABLE: AtomicBool = AtomicBool::new(false);

/// Forces the portable versions (for tests that compare both, and for debugging).
pub fn force_portable(on: bool) {
    FORCE_PORTABLE.store(on, Ordering::Relaxed);
}

/// Whether this CPU runs the AVX2 + FMA versions (cached by the standard library).
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !FORCE_PORTABLE.load(Ordering::Relaxed)
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines a function whose body is compiled twice (baseline and AVX2 + FMA) and dispatched at run
/// time. The body must be safe code; arguments are passed through unchanged.
#[macro_export]
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                if $crate::simd::has_avx2() {
                    // SAFETY: the CPU supports the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

#[cfg(test)]
mod tests {
    crate::multiversion! {
        /// A loop the compiler vectorises: both versions must agree exactly.
        fn scaled_sum(a: &[f32], b: &[f32], out: &mut [f32]) {
            for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
                *o = x * 1.5 + y;
            }
        }
    }

    #[test]
    fn portable_and_avx2_paths_give_identical_bits() {
        // The real hot loops: features of a textured image through every multiversioned stage.
        use crate::{Config, Matcher, Method};
        let image = crate::image::GrayImage::from_fn(180, 140, |x, y| {
            let (x, y) = (x as f32, y as f32);
            128.0
                + 60.0 * (0.13 * x + 0.05 * y).sin() * (0.09 * y - 0.04 * x).cos()
                + 30.0 * ((x - 70.0) * (y - 60.0) / 300.0).sin()
        });
        let matcher = Matcher::new(Config::preset(Method::Hesaff)).unwrap();
        let fast = matcher.extract_features(&image).unwrap();
        super::force_portable(true);
        let portable = matcher.extract_features(&image).unwrap();
        super::force_portable(false);
        assert!(fast.described.len() > 20);
        assert_eq!(fast.described.features, portable.described.features);
        assert_eq!(fast.described.descriptors, portable.described.descriptors);
    }

    #[test]
    fn dispatched_function_runs() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| (i * i) as f32).collect();
        let mut out = vec![0.0; 37];
        scaled_sum(&a, &b, &mut out);
        for i in 0..37 {
            assert_eq!(out[i], a[i] * 1.5 + b[i]);
        }
    }
}
