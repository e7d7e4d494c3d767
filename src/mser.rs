//! MSER: maximally stable extremal regions (Matas, Chum, Urban, Pajdla, BMVC 2002), dark and
//! bright, each turned into a local affine frame from its second moments.
//!
//! **Extremal regions.** An extremal region at level `l` is a 4-connected component of the pixels
//! with value ≤ `l`. The component tree (one node per region and level at which it gains pixels)
//! is built by Nistér and Stewénius's linear-time flood fill, as in OpenCV: the flood always goes
//! on from the lowest pixel at its boundary, a stack holds the regions being filled, and each
//! region's area and moments are summed as its pixels are entered. Dark regions come from the
//! image, bright regions from the inverted image (255 − value); both run in parallel.
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

/// MSERs of `image`, dark ones first, each group in raster order of the regions' first pixel at
/// their level.
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

/// The component tree's nodes: one per extremal region and level at which it gains pixels.
struct Tree {
    level: Vec<u8>,
    /// The node of the next larger extremal region (NONE for the root, the whole interior).
    parent: Vec<u32>,
    /// Pixels in the region (its own and its descendants').
    area: Vec<u32>,
    /// Σx, Σy, Σx², Σxy, Σy² over the region's pixels (exact integers).
    moments: Vec<[u64; 5]>,
    /// The first of the node's own pixels (those of its level) in raster order: the order of
    /// the output.
    first: Vec<u32>,
    /// The largest child (R⁻ follows it); of equal ones the last to join, as in OpenCV.
    largest: Vec<u32>,
}

impl Tree {
    /// A node at `level`, its area and moments filled in when it is finished.
    fn open(&mut self, level: u8) -> u32 {
        self.level.push(level);
        self.parent.push(NONE);
        self.area.push(0);
        self.moments.push([0; 5]);
        self.first.push(NONE);
        self.largest.push(NONE);
        (self.level.len() - 1) as u32
    }

    /// `c`'s node is finished: its region has grown into `parent`'s.
    fn close(&mut self, c: &Component, parent: u32) {
        let id = c.node as usize;
        self.parent[id] = parent;
        self.area[id] = c.area;
        self.moments[id] = c.moments;
        self.first[id] = c.first;
        if parent != NONE {
            let l = &mut self.largest[parent as usize];
            if *l == NONE || c.area >= self.area[*l as usize] {
                *l = c.node;
            }
        }
    }
}

/// A component of the flood fill's stack: a growing extremal region and its current node.
#[derive(Clone, Copy)]
struct Component {
    /// The grey level, 256 for the sentinel at the bottom of the stack.
    level: u16,
    node: u32,
    area: u32,
    moments: [u64; 5],
    first: u32,
}

impl Component {
    fn new(level: u16, node: u32) -> Self {
        Component {
            level,
            node,
            area: 0,
            moments: [0; 5],
            first: NONE,
        }
    }

    fn add_pixel(&mut self, p: usize, w: usize) {
        let (x, y) = ((p % w) as u64, (p / w) as u64);
        self.area += 1;
        let m = &mut self.moments;
        m[0] += x;
        m[1] += y;
        m[2] += x * x;
        m[3] += x * y;
        m[4] += y * y;
        self.first = self.first.min(p as u32);
    }

    fn absorb(&mut self, other: &Component) {
        self.area += other.area;
        for k in 0..5 {
            self.moments[k] += other.moments[k];
        }
    }
}

/// Pixels waiting at the boundary of the flood, one stack per grey level, each entry a pixel
/// and the next of its four edges to explore; a bit mask finds the lowest non-empty level.
struct Boundary {
    stacks: Vec<Vec<(u32, u8)>>,
    filled: [u64; 4],
}

impl Boundary {
    fn new() -> Self {
        Boundary {
            stacks: vec![Vec::new(); 256],
            filled: [0; 4],
        }
    }

    fn push(&mut self, level: u8, p: usize, edge: u8) {
        self.stacks[level as usize].push((p as u32, edge));
        self.filled[level as usize / 64] |= 1 << (level % 64);
    }

    /// The latest pixel of the lowest level, with that level.
    fn pop(&mut self) -> Option<(u8, usize, u8)> {
        let word = self.filled.iter().position(|&f| f != 0)?;
        let level = word * 64 + self.filled[word].trailing_zeros() as usize;
        let stack = &mut self.stacks[level];
        let (p, edge) = stack.pop().expect("a filled level has pixels");
        if stack.is_empty() {
            self.filled[word] &= !(1 << (level % 64));
        }
        Some((level as u8, p as usize, edge))
    }
}

/// The component tree of the interior pixels (the one-pixel border excluded) of a `w`×`h` image
/// (w, h ≥ 3), by Nistér and Stewénius's linear-time flood fill ("Linear time maximally stable
/// extremal regions", ECCV 2008), the algorithm of OpenCV's grey-level MSER: the flood always
/// goes on from the lowest pixel at its boundary, so it fills each extremal region before it
/// leaves it; a stack of components holds the regions being filled, lowest on top. Each pixel
/// is entered once and its region's area and moments are summed as it goes, so no pass over a
/// per-pixel forest follows.
fn component_tree(values: &[u8], w: usize, h: usize) -> Tree {
    let n = w * h;
    // The border takes no part: it counts as visited.
    let mut visited = vec![false; n];
    visited[..w].fill(true);
    visited[n - w..].fill(true);
    for y in 1..h - 1 {
        visited[y * w] = true;
        visited[y * w + w - 1] = true;
    }
    // Room for a node per three pixels, more than photos need (OxAff wall: 0.3; graf: 0.17):
    // a growing vector copies itself.
    let room = n / 3;
    let mut tree = Tree {
        level: Vec::with_capacity(room),
        parent: Vec::with_capacity(room),
        area: Vec::with_capacity(room),
        moments: Vec::with_capacity(room),
        first: Vec::with_capacity(room),
        largest: Vec::with_capacity(room),
    };
    let mut boundary = Boundary::new();
    let mut stack = vec![Component::new(256, NONE)];
    let mut p = w + 1;
    let mut edge = 0u8;
    visited[p] = true;
    let node = tree.open(values[p]);
    stack.push(Component::new(values[p] as u16, node));
    loop {
        // Explore p's edges (right, down, left, up): a higher or equal neighbour waits at the
        // boundary; a lower one is entered at once, with a new component, and p waits.
        let v = values[p];
        let mut entered_lower = false;
        while edge < 4 {
            let q = match edge {
                0 => p + 1,
                1 => p + w,
                2 => p - 1,
                _ => p - w,
            };
            edge += 1;
            if visited[q] {
                continue;
            }
            visited[q] = true;
            if values[q] >= v {
                boundary.push(values[q], q, 0);
            } else {
                boundary.push(v, p, edge);
                let node = tree.open(values[q]);
                stack.push(Component::new(values[q] as u16, node));
                (p, edge) = (q, 0);
                entered_lower = true;
                break;
            }
        }
        if entered_lower {
            continue;
        }
        stack.last_mut().expect("a component").add_pixel(p, w);
        let Some((level, q, e)) = boundary.pop() else {
            break;
        };
        (p, edge) = (q, e);
        if level as u16 > stack.last().expect("a component").level {
            grow_to(&mut stack, &mut tree, level);
        }
    }
    // The flood has covered the interior: what is left on the stack nests, up to the root.
    while stack.len() > 2 {
        let top = stack.pop().expect("a component");
        let next = stack.last_mut().expect("a component");
        tree.close(&top, next.node);
        next.absorb(&top);
    }
    let root = stack.pop().expect("the root");
    tree.close(&root, NONE);
    tree
}

/// The flood reaches `level`, above the top component's: the top component's region is
/// finished at its level. It merges into the component below when that one's level is reached
/// (and on up), or else becomes, with the pixels to come, a larger region at `level`.
fn grow_to(stack: &mut Vec<Component>, tree: &mut Tree, level: u8) {
    let level = level as u16;
    loop {
        let top = stack.pop().expect("a component above the sentinel");
        let next = stack.last_mut().expect("the sentinel at least");
        if level < next.level {
            let node = tree.open(level as u8);
            tree.close(&top, node);
            let mut grown = Component::new(level, node);
            grown.absorb(&top);
            stack.push(grown);
            return;
        }
        tree.close(&top, next.node);
        next.absorb(&top);
        if level == next.level {
            return;
        }
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
    let largest = &tree.largest;
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
    let mut kept: Vec<usize> = (0..nodes).filter(|&id| stable[id]).collect();
    kept.sort_unstable_by_key(|&id| tree.first[id]);
    kept.into_iter()
        .map(|id| {
            let a = tree.area[id] as f64;
            let m = tree.moments[id].map(|s| s as f64);
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

    /// The component tree by its definition: for every level l that some interior pixel has,
    /// the 4-connected components of the interior pixels with value ≤ l that hold a pixel of
    /// value l, each keyed by (l, its first pixel of value l), with its area, its moments and
    /// the key of the next larger such component (the parent).
    #[allow(clippy::type_complexity)]
    fn tree_by_definition(
        values: &[u8],
        w: usize,
        h: usize,
    ) -> std::collections::BTreeMap<(u8, u32), (u32, [u64; 5], Option<(u8, u32)>)> {
        let interior = |p: usize| (1..w - 1).contains(&(p % w)) && (1..h - 1).contains(&(p / w));
        let mut levels: Vec<u8> = (0..w * h)
            .filter(|&p| interior(p))
            .map(|p| values[p])
            .collect();
        levels.sort();
        levels.dedup();
        // For each level, each pixel's node (if it is in a node's region).
        let mut member: Vec<Vec<Option<(u8, u32)>>> = Vec::new();
        let mut nodes = std::collections::BTreeMap::new();
        for &l in &levels {
            let mut row = vec![None; w * h];
            let mut label = vec![None; w * h];
            for start in 0..w * h {
                if !interior(start) || values[start] > l || label[start].is_some() {
                    continue;
                }
                let mut pixels = vec![start];
                label[start] = Some(());
                let mut i = 0;
                while i < pixels.len() {
                    let p = pixels[i];
                    i += 1;
                    for q in [p + 1, p + w, p - 1, p - w] {
                        if interior(q) && values[q] <= l && label[q].is_none() {
                            label[q] = Some(());
                            pixels.push(q);
                        }
                    }
                }
                let Some(first) = pixels.iter().copied().filter(|&p| values[p] == l).min() else {
                    continue;
                };
                let key = (l, first as u32);
                let mut m = [0u64; 5];
                for &p in &pixels {
                    let (x, y) = ((p % w) as u64, (p / w) as u64);
                    m = [m[0] + x, m[1] + y, m[2] + x * x, m[3] + x * y, m[4] + y * y];
                }
                nodes.insert(key, (pixels.len() as u32, m, None));
                for &p in &pixels {
                    row[p] = Some(key);
                }
            }
            member.push(row);
        }
        // The parent: the node, at the lowest higher level, whose region holds the first pixel.
        let keys: Vec<(u8, u32)> = nodes.keys().copied().collect();
        for key in keys {
            let parent = levels
                .iter()
                .enumerate()
                .filter(|&(_, &l)| l > key.0)
                .find_map(|(i, _)| member[i][key.1 as usize]);
            nodes.get_mut(&key).unwrap().2 = parent;
        }
        nodes
    }

    #[test]
    fn the_flood_fill_builds_the_component_tree_of_the_definition() {
        // Random images with few grey levels (plateaus, ties, merges at one level) and with
        // all 256.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (w, h, levels) in [
            (3, 3, 2),
            (9, 7, 3),
            (17, 13, 4),
            (23, 19, 8),
            (31, 27, 256),
        ] {
            for _ in 0..4 {
                let values: Vec<u8> = (0..w * h)
                    .map(|_| ((next() % levels) * (255 / (levels - 1).max(1))) as u8)
                    .collect();
                let want = tree_by_definition(&values, w, h);
                let tree = component_tree(&values, w, h);
                let key = |id: u32| (tree.level[id as usize], tree.first[id as usize]);
                let got: std::collections::BTreeMap<_, _> = (0..tree.level.len() as u32)
                    .map(|id| {
                        let i = id as usize;
                        let parent = (tree.parent[i] != NONE).then(|| key(tree.parent[i]));
                        (key(id), (tree.area[i], tree.moments[i], parent))
                    })
                    .collect();
                assert_eq!(got.len(), tree.level.len(), "two nodes with one key");
                assert_eq!(got, want, "{w}×{h}, {levels} levels: {values:?}");
                // The largest child is one of the largest children.
                for id in 0..tree.level.len() {
                    let children = (0..tree.level.len()).filter(|&c| tree.parent[c] == id as u32);
                    let max = children.map(|c| tree.area[c]).max();
                    let largest = tree.largest[id];
                    assert_eq!(max, (largest != NONE).then(|| tree.area[largest as usize]));
                }
            }
        }
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
