//! MSER: maximally stable extremal regions (Matas, Chum, Urban, Pajdla, BMVC 2002), dark and
//! bright, each turned into a local affine frame from its second moments.
//!
//! **Extremal regions.** An extremal region at level `l` is a 4-connected component of the pixels
//! with value ≤ `l`. Pixels are sorted by value (counting sort) and added in that order to a
//! union-find forest; the component tree (one node per region and level at which it gains pixels)
//! falls out of the unions, as in VLFeat's and Nistér–Stewénius's linear-time MSER: O(n α(n)) for
//! n pixels, then one linear pass for areas and moments. Dark regions come from the image, bright
//! regions from the inverted image (255 − value); both run in parallel.
//!
//! **Stability**, exactly as OpenCV's grey-level MSER (`cv::MSER`, OpenCV 4): a region R at level
//! l has the variation `(|R⁺| − |R⁻|)/|R|` where R⁺ is its largest ancestor at a level ≤ l + Δ
//! and R⁻ its descendant at a level ≥ l − Δ along the largest child. R is kept when its area is in
//! [min_area, max_area], its variation ≤ max_variation, no larger than any child's (children of at
//! least min_area pixels), and smaller than its parent's (or 0). The one-pixel image border takes
//! no part (OpenCV's too). Two differences from OpenCV, both documented in `docs/mods.md`: the
//! region that is the whole image (the tree's root) is never a region, and `min_diversity` is
//! applied (OpenCV's grey path ignores it): of two nested regions whose areas differ by less than
//! that fraction of the larger, the less stable one is dropped (VLFeat's rule).
//!
//! **Parameters** ([`MserParams::default`]): OpenCV's defaults: Δ = 5, min_area 60 px,
//! max_area 14400 px, max_variation 0.25, min_diversity 0.2.
//!
//! **Frames** ([`Region::laf`]): centre = centroid; shape = the covariance C of the pixel
//! coordinates (each pixel a unit square, so C gains 1/12 on the diagonal and a one-pixel-wide
//! line stays a proper ellipse). The region itself is the ellipse `(x − c)ᵀ·C⁻¹·(x − c) = 4`
//! (exact for a filled ellipse: its semi-axes are 2√λ). The frame is `A = mrSize·√C` made upright,
//! as MODS's `DetectMSERs` does (A = √C, s = 1, described with mrSize = 3√3): the patch spans
//! ±3√3·√λ = ±2.6 region semi-axes, so the descriptor sees the region and a ring of its
//! surroundings, like a Hessian blob's mrSize·σ frame.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::feature::Feature;
use crate::image::GrayImage;
use crate::laf::{Laf, MR_SIZE};

/// MSER's parameters; the defaults are OpenCV's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MserParams {
    /// Δ: the level step over which the area change is measured (5).
    pub delta: u8,
    /// The smallest region in pixels (60).
    pub min_area: usize,
    /// The largest region in pixels (14400).
    pub max_area: usize,
    /// The largest variation `(|R⁺| − |R⁻|)/|R|` kept (0.25).
    pub max_variation: f32,
    /// Of two nested regions whose areas differ by less than this fraction of the larger one, the
    /// less stable is dropped (0.2; 0 keeps all).
    pub min_diversity: f32,
}

impl Default for MserParams {
    fn default() -> Self {
        MserParams {
            delta: 5,
            min_area: 60,
            max_area: 14400,
            max_variation: 0.25,
            min_diversity: 0.2,
        }
    }
}

/// Whether a region is darker or brighter than its surroundings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Polarity {
    /// Darker than its surroundings: an extremal region of the image (MSER+ in some texts).
    Dark,
    /// Brighter than its surroundings: an extremal region of the inverted image.
    Bright,
}

/// One maximally stable extremal region.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// Dark or bright.
    pub polarity: Polarity,
    /// The threshold level (0..=255; of the inverted image for bright regions).
    pub level: u8,
    /// Pixels in the region.
    pub area: usize,
    /// The centroid (x, y) in pixels.
    pub centre: [f32; 2],
    /// The covariance of the pixel coordinates `[xx, xy, yy]` (pixel centres, without the 1/12).
    pub covariance: [f32; 3],
    /// The variation `(|R⁺| − |R⁻|)/|R|` (smaller is more stable).
    pub variation: f32,
}

/// The variance of a unit square's coordinate: each pixel's own second moment.
const PIXEL_VARIANCE: f64 = 1.0 / 12.0;

impl Region {
    /// The covariance with each pixel as a unit square (`+1/12` on the diagonal).
    fn area_covariance(&self) -> [f64; 3] {
        let c = self.covariance;
        [
            c[0] as f64 + PIXEL_VARIANCE,
            c[1] as f64,
            c[2] as f64 + PIXEL_VARIANCE,
        ]
    }

    /// The region's ellipse `(x − c)ᵀ·(4C)⁻¹·(x − c) = 1` in the Oxford format `(x, y, a, b, c)`:
    /// the frame with 2 in place of mrSize.
    pub fn ellipse(&self) -> [f32; 5] {
        self.laf().scaled(2.0 / MR_SIZE).to_ellipse()
    }

    /// The upright frame `mrSize·√C` at the centroid (see the module documentation).
    pub fn laf(&self) -> Laf {
        let [xx, xy, yy] = self.area_covariance();
        // The lower-triangular (Cholesky) factor L of C: L·Lᵀ = C, the same ellipse as √C.
        let l00 = xx.sqrt();
        let l10 = xy / l00;
        let l11 = (yy - l10 * l10).max(PIXEL_VARIANCE * PIXEL_VARIANCE).sqrt();
        let k = MR_SIZE as f64;
        Laf {
            a: [
                [(k * l00) as f32, 0.0],
                [(k * l10) as f32, (k * l11) as f32],
            ],
            c: self.centre,
        }
    }

    /// The region as a feature: its frame, σ = scale/mrSize, the negated variation as response
    /// (more stable is stronger), octave 0 and level 0 (no scale space).
    pub fn feature(&self) -> Feature {
        let laf = self.laf();
        Feature {
            laf,
            response: -self.variation,
            sigma: laf.scale() / MR_SIZE,
            octave: 0,
            level: 0,
        }
    }
}

/// The image's values rounded to 0..=255.
fn quantise(image: &GrayImage) -> Vec<u8> {
    image
        .data()
        .iter()
        .map(|&v| v.round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// MSERs of `image`, dark ones first, each group in order of level.
pub fn detect(image: &GrayImage, params: &MserParams) -> Vec<Region> {
    let (w, h) = (image.width(), image.height());
    let values = quantise(image);
    let inverted: Vec<u8> = values.iter().map(|&v| 255 - v).collect();
    let (mut dark, bright) = rayon::join(
        || regions_of(&values, w, h, params, Polarity::Dark),
        || regions_of(&inverted, w, h, params, Polarity::Bright),
    );
    dark.extend(bright);
    dark
}

const NONE: u32 = u32::MAX;

/// The root of `p`'s set, halving the path on the way (`links[p][1]` is the find shortcut).
#[inline]
fn find(links: &mut [[u32; 4]], mut p: u32) -> u32 {
    while links[p as usize][1] != p {
        let next = links[links[p as usize][1] as usize][1];
        links[p as usize][1] = next;
        p = next;
    }
    p
}

/// The component tree's nodes: one per extremal region.
struct Tree {
    level: Vec<u8>,
    parent: Vec<u32>,
    area: Vec<u32>,
    /// Σx, Σy, Σx², Σxy, Σy² over the region's pixels.
    moments: Vec<[f64; 5]>,
}

/// The component tree of the interior pixels (the one-pixel border excluded) of a `w`×`h` image.
fn component_tree(values: &[u8], w: usize, h: usize) -> Tree {
    let n = w * h;
    // Counting sort of the interior pixels by value.
    let mut counts = [0usize; 257];
    for y in 1..h - 1 {
        for &v in &values[y * w + 1..y * w + w - 1] {
            counts[v as usize + 1] += 1;
        }
    }
    for i in 1..257 {
        counts[i] += counts[i - 1];
    }
    let mut order = vec![0u32; counts[256]];
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let p = y * w + x;
            let slot = &mut counts[values[p] as usize];
            order[*slot] = p as u32;
            *slot += 1;
        }
    }

    // Union-find in value order. `links[p] = [parent, shortcut, top, rank]`, in one cache line:
    // the parent is the component tree over pixels (a pixel whose parent has a higher value ends
    // a region's level range); the shortcut, rank and top belong to the find structure (union by
    // rank, path halving), top being, for a set's root, the set's tree root: its newest pixel, of
    // the highest value. Border pixels are never added, so they stay NONE.
    let mut links = vec![[NONE; 4]; n];
    for &p in &order {
        let pu = p as usize;
        links[pu] = [p, p, p, 0];
        let mut root = p;
        for q in [pu - 1, pu + 1, pu - w, pu + w] {
            if links[q][0] == NONE {
                continue;
            }
            let rq = find(&mut links, q as u32);
            if rq == root {
                continue;
            }
            // An older region hangs under the current one; of two tops of this level, the newer
            // hangs under the older (flat areas become stars, not chains).
            let top = links[root as usize][2];
            let top_q = links[rq as usize][2];
            let new_top = if values[top_q as usize] == values[top as usize] {
                links[top as usize][0] = top_q;
                top_q
            } else {
                links[top_q as usize][0] = top;
                top
            };
            let (rank, rank_q) = (links[root as usize][3], links[rq as usize][3]);
            if rank < rank_q {
                links[root as usize][1] = rq;
                root = rq;
            } else {
                links[rq as usize][1] = root;
                if rank == rank_q {
                    links[root as usize][3] += 1;
                }
            }
            links[root as usize][2] = new_top;
        }
    }
    drop(order);

    // Region nodes, numbered in raster order: pixels that are a set's root, or whose parent has
    // a higher value.
    let mut node_of = vec![NONE; n];
    let mut level = Vec::new();
    for y in 1..h - 1 {
        for p in y * w + 1..y * w + w - 1 {
            let q = links[p][0] as usize;
            if q == p || values[q] > values[p] {
                node_of[p] = level.len() as u32;
                level.push(values[p]);
            }
        }
    }
    let nodes = level.len();
    // Every pixel's node: its own, or that of the nearest ancestor of the same value.
    let mut path = Vec::new();
    for y in 1..h - 1 {
        for p in y * w + 1..y * w + w - 1 {
            let mut q = p;
            while node_of[q] == NONE {
                path.push(q);
                q = links[q][0] as usize;
            }
            let id = node_of[q];
            for &r in &path {
                node_of[r] = id;
            }
            path.clear();
        }
    }
    let mut node_parent = vec![NONE; nodes];
    let mut area = vec![0u32; nodes];
    let mut moments = vec![[0.0f64; 5]; nodes];
    for y in 1..h - 1 {
        for p in y * w + 1..y * w + w - 1 {
            let id = node_of[p] as usize;
            let q = links[p][0] as usize;
            if q != p && values[q] > values[p] {
                // `p` ends its node's level range: the node's parent is the node of `p`'s parent.
                node_parent[id] = node_of[q];
            }
            let (x, yf) = ((p - y * w) as f64, y as f64);
            area[id] += 1;
            let m = &mut moments[id];
            m[0] += x;
            m[1] += yf;
            m[2] += x * x;
            m[3] += x * yf;
            m[4] += yf * yf;
        }
    }
    // Nodes by level (a child's level is below its parent's), then areas and moments summed up.
    let mut counts = [0usize; 257];
    for &l in &level {
        counts[l as usize + 1] += 1;
    }
    for i in 1..257 {
        counts[i] += counts[i - 1];
    }
    let mut by_level = vec![0u32; nodes];
    for (id, &l) in level.iter().enumerate() {
        let slot = &mut counts[l as usize];
        by_level[*slot] = id as u32;
        *slot += 1;
    }
    for &id in &by_level {
        let up = node_parent[id as usize];
        if up != NONE {
            let (a, m) = (area[id as usize], moments[id as usize]);
            area[up as usize] += a;
            let t = &mut moments[up as usize];
            for k in 0..5 {
                t[k] += m[k];
            }
        }
    }
    Tree {
        level,
        parent: node_parent,
        area,
        moments,
    }
}

/// The MSERs of one polarity: extremal regions of `values` (low values inside).
fn regions_of(
    values: &[u8],
    w: usize,
    h: usize,
    params: &MserParams,
    polarity: Polarity,
) -> Vec<Region> {
    if w < 3 || h < 3 {
        return Vec::new();
    }
    let tree = component_tree(values, w, h);
    let nodes = tree.level.len();
    let delta = params.delta as i32;
    // The largest child of each node (R⁻ follows it).
    let mut largest = vec![NONE; nodes];
    for id in 0..nodes {
        let up = tree.parent[id];
        if up != NONE {
            let l = &mut largest[up as usize];
            if *l == NONE || tree.area[id] > tree.area[*l as usize] {
                *l = id as u32;
            }
        }
    }
    let min_area = params.min_area.max(1) as u32;
    let variation: Vec<f32> = (0..nodes)
        .into_par_iter()
        .map(|id| {
            if tree.area[id] < min_area {
                return f32::INFINITY;
            }
            let l = tree.level[id] as i32;
            let mut low = id;
            while largest[low] != NONE && tree.level[largest[low] as usize] as i32 >= l - delta {
                low = largest[low] as usize;
            }
            let mut high = id;
            while tree.parent[high] != NONE
                && tree.level[tree.parent[high] as usize] as i32 <= l + delta
            {
                high = tree.parent[high] as usize;
            }
            (tree.area[high] - tree.area[low]) as f32 / tree.area[id] as f32
        })
        .collect();
    // The smallest variation among each node's children of at least min_area pixels.
    let mut min_child = vec![f32::INFINITY; nodes];
    for (id, &v) in variation.iter().enumerate() {
        let up = tree.parent[id];
        if up != NONE && tree.area[id] >= min_area {
            let m = &mut min_child[up as usize];
            *m = m.min(v);
        }
    }
    let mut stable: Vec<bool> = (0..nodes)
        .map(|id| {
            let (a, v) = (tree.area[id] as usize, variation[id]);
            let up = tree.parent[id];
            up != NONE // the root is the whole image: not a region
                && a >= params.min_area
                && a <= params.max_area
                && v <= params.max_variation
                && v <= min_child[id]
                && (v == 0.0 || v < variation[up as usize])
        })
        .collect();
    if params.min_diversity > 0.0 {
        // Nested pairs too alike in area: the less stable one goes.
        let mut drop = vec![false; nodes];
        for id in 0..nodes {
            if !stable[id] {
                continue;
            }
            let mut up = tree.parent[id];
            while up != NONE && !stable[up as usize] {
                up = tree.parent[up as usize];
            }
            if up == NONE {
                continue;
            }
            let (a, b) = (tree.area[id] as f32, tree.area[up as usize] as f32);
            if (b - a) / b < params.min_diversity {
                if variation[id] > variation[up as usize] {
                    drop[id] = true;
                } else {
                    drop[up as usize] = true;
                }
            }
        }
        for (s, d) in stable.iter_mut().zip(drop) {
            *s &= !d;
        }
    }
    (0..nodes)
        .filter(|&id| stable[id])
        .map(|id| {
            let a = tree.area[id] as f64;
            let m = tree.moments[id];
            let (cx, cy) = (m[0] / a, m[1] / a);
            Region {
                polarity,
                level: tree.level[id],
                area: tree.area[id] as usize,
                centre: [cx as f32, cy as f32],
                covariance: [
                    (m[2] / a - cx * cx) as f32,
                    (m[3] / a - cx * cy) as f32,
                    (m[4] / a - cy * cy) as f32,
                ],
                variation: variation[id],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A background of `bg` with filled ellipses `(cx, cy, a, b, θ, value)` painted on it.
    fn ellipses(
        w: usize,
        h: usize,
        bg: f32,
        shapes: &[(f32, f32, f32, f32, f32, f32)],
    ) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let mut v = bg;
            for &(cx, cy, a, b, theta, value) in shapes {
                let (s, c) = theta.sin_cos();
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let (u, t) = (c * dx + s * dy, -s * dx + c * dy);
                if (u / a).powi(2) + (t / b).powi(2) <= 1.0 {
                    v = value;
                }
            }
            v
        })
    }

    fn nearest(regions: &[Region], p: [f32; 2]) -> &Region {
        regions
            .iter()
            .min_by(|a, b| {
                let d = |r: &&Region| (r.centre[0] - p[0]).powi(2) + (r.centre[1] - p[1]).powi(2);
                d(a).total_cmp(&d(b))
            })
            .expect("a region")
    }

    #[test]
    fn an_ellipse_gives_its_centre_and_axes() {
        // Semi-axes 30 and 12, turned 30°: the covariance of a filled ellipse is R·diag(a², b²)/4·Rᵀ.
        let (a, b, theta) = (30.0f32, 12.0f32, 30f32.to_radians());
        let image = ellipses(200, 150, 40.0, &[(90.0, 70.0, a, b, theta, 200.0)]);
        let regions = detect(&image, &MserParams::default());
        let bright: Vec<Region> = regions
            .iter()
            .copied()
            .filter(|r| r.polarity == Polarity::Bright)
            .collect();
        assert_eq!(bright.len(), 1, "{regions:?}");
        let r = bright[0];
        assert!(
            (r.centre[0] - 90.0).abs() < 0.1 && (r.centre[1] - 70.0).abs() < 0.1,
            "{r:?}"
        );
        let area = std::f32::consts::PI * a * b;
        assert!(
            (r.area as f32 / area - 1.0).abs() < 0.03,
            "{} vs {area}",
            r.area
        );
        let (s, c) = theta.sin_cos();
        let (l1, l2) = (a * a / 4.0, b * b / 4.0);
        let want = [
            c * c * l1 + s * s * l2,
            c * s * (l1 - l2),
            s * s * l1 + c * c * l2,
        ];
        for k in 0..3 {
            assert!(
                (r.covariance[k] - want[k]).abs() < 0.03 * l1,
                "covariance {:?} vs {want:?}",
                r.covariance
            );
        }
        // The frame: the same ellipse times mrSize, upright, axis ratio a/b.
        let laf = r.laf();
        assert_eq!(laf.a[0][1], 0.0);
        assert!(
            (laf.elongation() - a / b).abs() < 0.05 * a / b,
            "{}",
            laf.elongation()
        );
        assert!((laf.scale() - MR_SIZE * (a * b).sqrt() / 2.0).abs() < 0.03 * laf.scale());
        // The region's own ellipse has the painted axes: a point on the long axis at distance
        // a lies on it.
        let e = r.ellipse();
        let (dx, dy) = (a * c, a * s);
        let q = e[2] * dx * dx + 2.0 * e[3] * dx * dy + e[4] * dy * dy;
        assert!((q - 1.0).abs() < 0.05, "{q}");
    }

    #[test]
    fn bright_and_dark_blobs_have_their_polarity() {
        let image = ellipses(
            160,
            120,
            128.0,
            &[
                (40.0, 60.0, 15.0, 15.0, 0.0, 250.0),
                (110.0, 60.0, 20.0, 10.0, 0.0, 5.0),
            ],
        );
        let regions = detect(&image, &MserParams::default());
        let bright = nearest(&regions, [40.0, 60.0]);
        let dark = nearest(&regions, [110.0, 60.0]);
        assert_eq!(bright.polarity, Polarity::Bright);
        assert_eq!(dark.polarity, Polarity::Dark);
        assert!((bright.centre[0] - 40.0).abs() < 0.2 && (dark.centre[0] - 110.0).abs() < 0.2);
        assert_eq!(regions.len(), 2, "{regions:?}");
    }

    #[test]
    fn nested_rectangles_are_separate_regions_and_limits_apply() {
        // A dark 60×40 rectangle holding a darker 20×10 one on a bright background: two nested
        // dark regions, and the bright frame around them (the interior minus the rectangle).
        let image = GrayImage::from_fn(120, 100, |x, y| {
            if (50..70).contains(&x) && (45..55).contains(&y) {
                20.0
            } else if (30..90).contains(&x) && (30..70).contains(&y) {
                100.0
            } else {
                220.0
            }
        });
        let regions = detect(&image, &MserParams::default());
        let mut areas: Vec<usize> = regions.iter().map(|r| r.area).collect();
        areas.sort();
        assert_eq!(areas, vec![200, 2400, 118 * 98 - 2400], "{regions:?}");
        assert_eq!(
            regions
                .iter()
                .filter(|r| r.polarity == Polarity::Dark)
                .count(),
            2
        );
        // min_area above the inner one, max_area below the outer one: none.
        let params = MserParams {
            min_area: 300,
            max_area: 2000,
            ..MserParams::default()
        };
        assert!(detect(&image, &params).is_empty());
    }

    #[test]
    fn uniform_and_tiny_images_give_nothing() {
        let params = MserParams::default();
        assert!(detect(&GrayImage::from_fn(100, 80, |_, _| 77.0), &params).is_empty());
        for (w, h) in [(0, 0), (1, 1), (2, 5), (3, 3), (5, 2), (9, 9)] {
            let image = GrayImage::from_fn(w, h, |x, y| ((x * 37 + y * 91) % 256) as f32);
            assert!(detect(&image, &params).is_empty(), "{w}×{h}");
        }
    }

    #[test]
    fn a_warped_region_frame_is_the_warped_frame() {
        // An ellipse mapped by an affinity is the ellipse of the mapped covariance: C' = M·C·Mᵀ.
        let image = ellipses(240, 200, 30.0, &[(110.0, 95.0, 24.0, 16.0, 0.4, 210.0)]);
        let m = [[1.3f32, 0.4], [-0.2, 0.9]];
        let t = [15.0f32, 10.0];
        let inv = {
            let d = m[0][0] * m[1][1] - m[0][1] * m[1][0];
            [[m[1][1] / d, -m[0][1] / d], [-m[1][0] / d, m[0][0] / d]]
        };
        let warped = GrayImage::from_fn(260, 220, |x, y| {
            let (u, v) = (x as f32 - t[0], y as f32 - t[1]);
            image.sample_clamped(inv[0][0] * u + inv[0][1] * v, inv[1][0] * u + inv[1][1] * v)
        });
        let params = MserParams::default();
        let r1 = *nearest(&detect(&image, &params), [110.0, 95.0]);
        let c2 = [
            m[0][0] * 110.0 + m[0][1] * 95.0 + t[0],
            m[1][0] * 110.0 + m[1][1] * 95.0 + t[1],
        ];
        let r2 = *nearest(&detect(&warped, &params), c2);
        // The centre maps.
        let c = r1.centre;
        let mapped = [
            m[0][0] * c[0] + m[0][1] * c[1] + t[0],
            m[1][0] * c[0] + m[1][1] * c[1] + t[1],
        ];
        assert!(
            (mapped[0] - r2.centre[0]).abs() < 0.5 && (mapped[1] - r2.centre[1]).abs() < 0.5,
            "{mapped:?} vs {:?}",
            r2.centre
        );
        // The frame maps: M·A₁ and A₂ describe the same ellipse (A·Aᵀ equal within 5 %).
        let (a1, a2) = (r1.laf().a, r2.laf().a);
        let ma = [
            [
                m[0][0] * a1[0][0] + m[0][1] * a1[1][0],
                m[0][0] * a1[0][1] + m[0][1] * a1[1][1],
            ],
            [
                m[1][0] * a1[0][0] + m[1][1] * a1[1][0],
                m[1][0] * a1[0][1] + m[1][1] * a1[1][1],
            ],
        ];
        let aat = |a: [[f32; 2]; 2]| {
            [
                a[0][0] * a[0][0] + a[0][1] * a[0][1],
                a[0][0] * a[1][0] + a[0][1] * a[1][1],
                a[1][0] * a[1][0] + a[1][1] * a[1][1],
            ]
        };
        let (p, q) = (aat(ma), aat(a2));
        let norm = p[0].max(p[2]);
        for k in 0..3 {
            assert!((p[k] - q[k]).abs() < 0.05 * norm, "{p:?} vs {q:?}");
        }
    }

    #[test]
    fn a_textured_image_gives_regions_within_the_area_limits() {
        let image = GrayImage::from_fn(800, 600, |x, y| {
            let (fx, fy) = (x as f32 / 23.0, y as f32 / 17.0);
            127.0 + 60.0 * fx.sin() * fy.cos() + 40.0 * ((x / 40 + y / 30) % 3) as f32
        });
        let regions = detect(&image, &MserParams::default());
        assert!(!regions.is_empty());
        assert!(regions.iter().all(|r| r.area >= 60 && r.area <= 14400));
    }
}
