//! Synthetic occluders drawn onto a face photo, with the exact mask of what they cover: the
//! ground truth for measuring occlusion masks.
//!
//! [`composite`] places an occluder from the 468 FaceMesh landmarks of the clean photo and
//! returns the new photo and the occluder's mask. Everything is drawn from signed distance
//! fields with one pixel of antialiasing; the mask is the binary `alpha > 0.5`. Pixels whose
//! alpha is 0 keep their exact value. A seed fixes every random choice (a SplitMix64 stream),
//! so the same photo, landmarks, kind and seed always give the same bytes.
//!
//! Distributions (`W`: face width, landmarks 234 → 454; `e`: eye-corner distance; `IPD`:
//! distance between the eye centres; "face region": the polygon of the 36 face-oval landmarks):
//!
//! - [`OccluderKind::Sunglasses`]: two lenses over the eyes, `1.3–1.6 e` wide (narrowed when
//!   they would come closer than `0.12 IPD`), `0.6–0.95` as high as wide; style rounded
//!   rectangle, oval, aviator or wayfarer (tilted 3–9° outwards); dark tints (black 35 %, brown
//!   25 %, green-grey 25 %, mirrored blue 15 %) with a vertical gradient, 88–97 % opaque, a
//!   soft specular highlight; a rim (80 %; black, tortoiseshell, gold or silver, `0.07–0.16 e`
//!   thick), a bridge and temple arms running to the face edge (landmarks 127/356).
//! - [`OccluderKind::SurgicalMask`]: top edge through a point of the nose bridge (landmark 6
//!   moved 0.2–1.6 × towards 197), falling `0.45–0.8 IPD` to the cheeks; sides and bottom on
//!   the face oval widened 2–10 % and lengthened 4–12 % about its centre; light-blue (35 %) or
//!   white (15 %) surgical masks with three horizontal pleats, black (15 %), grey (10 %) or
//!   patterned (stripes, dots, checks; 25 %) cloth masks; side shading, a bound edge, ear loops.
//! - [`OccluderKind::Hand`]: palm, four fingers (each straight, or curled and so
//!   foreshortened to 35–75 % with probability 1/4), thumb and forearm from capsules and a
//!   polygon, joined smoothly; hand length (wrist to middle fingertip) `0.8–1.25 W` (an adult
//!   hand is about `1.25 W` long); centred on an eye, the mouth, a cheek, the chin or the nose
//!   (jittered by up to `0.08 W`), the arm pointing away from the face centre ±40°; left or
//!   right hand. Colour: the per-channel median of the cheeks (8 discs around landmarks 50,
//!   280, 205, 425, 117, 346, 187, 411), times a brightness factor uniform on
//!   `[0.7, 0.9] ∪ [1.1, 1.3]`, chroma rotated by up to ±8°; a light gradient, darker rims,
//!   dark lines where fingers meet, low-frequency mottling and ±3 levels of pixel noise.
//!   Placements covering less than 8 % or more than 55 % of the face region are redrawn (up to
//!   32 times).
//! - [`OccluderKind::Blobs`]: 1–4 blobs, each a smooth union of 2–5 ellipses around a random
//!   landmark, scaled together so that they cover a fraction of the face region drawn
//!   uniformly from `[0.10, 0.40]` (met to within a pixel or two); each filled with a flat
//!   colour, stripes, coloured noise, or a patch of the photo from outside the face.
//!
//! Share of the face region covered on the eight faces of `tests/fixtures/occlusion` × 60
//! seeds (min / median / max): sunglasses 0.12 / 0.17 / 0.27, masks 0.30 / 0.42 / 0.53,
//! hands 0.08 / 0.20 / 0.41, blobs 0.11 / 0.24 / 0.39.

use std::f32::consts::PI;
use std::ops::{Add, Mul, Neg, Sub};

use image::{GrayImage, Luma, RgbImage};

/// The kinds of synthetic occluder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OccluderKind {
    /// Sunglasses: dark lenses, rims, bridge and temple arms.
    Sunglasses,
    /// A surgical or cloth face mask from the nose bridge down past the chin.
    SurgicalMask,
    /// A skin-coloured hand (and forearm) over part of the face.
    Hand,
    /// One to four random smooth blobs, flat, striped, noisy or copied from the photo.
    Blobs,
}

impl OccluderKind {
    /// Every kind, in declaration order.
    pub const ALL: [OccluderKind; 4] = [
        OccluderKind::Sunglasses,
        OccluderKind::SurgicalMask,
        OccluderKind::Hand,
        OccluderKind::Blobs,
    ];

    /// A short lower-case name (`sunglasses`, `mask`, `hand`, `blobs`).
    pub fn name(self) -> &'static str {
        match self {
            OccluderKind::Sunglasses => "sunglasses",
            OccluderKind::SurgicalMask => "mask",
            OccluderKind::Hand => "hand",
            OccluderKind::Blobs => "blobs",
        }
    }
}

impl std::fmt::Display for OccluderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A photo with an occluder drawn on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Composite {
    /// The photo with the occluder, same size as the input.
    pub image: RgbImage,
    /// 255 where the occluder's alpha is above 0.5, 0 elsewhere.
    pub mask: GrayImage,
}

/// Number of FaceMesh landmarks [`composite`] needs.
pub const NUM_LANDMARKS: usize = 468;

/// FaceMesh's face oval, clockwise on a frontal photo starting at the top of the forehead.
const FACE_OVAL: [usize; 36] = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
    148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
];
/// Eye corners of the subject's right eye (on the left of a frontal photo).
const RIGHT_EYE: [usize; 2] = [33, 133];
/// Eye corners of the subject's left eye.
const LEFT_EYE: [usize; 2] = [362, 263];
const NOSE_TIP: usize = 1;
const NOSE_BRIDGE: usize = 6;
const NOSE_BRIDGE_LOW: usize = 197;
const MOUTH: [usize; 2] = [61, 291];
const CHIN: usize = 152;
/// Widest face-oval points, subject's right then left.
const FACE_SIDES: [usize; 2] = [234, 454];
/// Face-oval points at the temples, subject's right then left.
const TEMPLES: [usize; 2] = [127, 356];
/// Jaw angles, subject's right then left.
const JAW: [usize; 2] = [172, 397];
/// Cheek points sampled for the skin colour.
const CHEEKS: [usize; 8] = [50, 280, 205, 425, 117, 346, 187, 411];

/// Draws an occluder of `kind` onto `photo`, placed from the 468 FaceMesh `landmarks`
/// (photo pixels) of the clean photo. Deterministic in `seed`.
///
/// # Panics
/// When fewer than [`NUM_LANDMARKS`] landmarks are given.
pub fn composite(
    photo: &RgbImage,
    landmarks: &[[f32; 3]],
    kind: OccluderKind,
    seed: u64,
) -> Composite {
    assert!(
        landmarks.len() >= NUM_LANDMARKS,
        "synthetic occluders need the {NUM_LANDMARKS} FaceMesh landmarks, got {}",
        landmarks.len()
    );
    let face = Face::new(landmarks);
    let tag = OccluderKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(0) as u64
        + 1;
    let mut rng = Rng::new(seed ^ tag.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut layer = Layer::new(photo.width(), photo.height());
    match kind {
        OccluderKind::Sunglasses => sunglasses(&face, &mut rng, &mut layer),
        OccluderKind::SurgicalMask => face_mask(&face, &mut rng, &mut layer),
        OccluderKind::Hand => hand(&face, photo, &mut rng, &mut layer),
        OccluderKind::Blobs => blobs(&face, photo, &mut rng, &mut layer),
    }
    layer.over(photo)
}

// ---------------------------------------------------------------------------------------------
// Small maths

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct V2 {
    x: f32,
    y: f32,
}

const fn v2(x: f32, y: f32) -> V2 {
    V2 { x, y }
}

impl V2 {
    fn dot(self, o: V2) -> f32 {
        self.x * o.x + self.y * o.y
    }
    fn len(self) -> f32 {
        self.dot(self).sqrt()
    }
    fn norm(self) -> V2 {
        let l = self.len();
        if l > 0.0 {
            self * (1.0 / l)
        } else {
            v2(1.0, 0.0)
        }
    }
    /// Rotated by 90° (x right, y down: turns +x into +y).
    fn perp(self) -> V2 {
        v2(-self.y, self.x)
    }
    /// Rotated by `a` radians (positive turns +x towards +y).
    fn rot(self, a: f32) -> V2 {
        let (s, c) = a.sin_cos();
        v2(c * self.x - s * self.y, s * self.x + c * self.y)
    }
    fn min(self, o: V2) -> V2 {
        v2(self.x.min(o.x), self.y.min(o.y))
    }
    fn max(self, o: V2) -> V2 {
        v2(self.x.max(o.x), self.y.max(o.y))
    }
}

impl Add for V2 {
    type Output = V2;
    fn add(self, o: V2) -> V2 {
        v2(self.x + o.x, self.y + o.y)
    }
}
impl Sub for V2 {
    type Output = V2;
    fn sub(self, o: V2) -> V2 {
        v2(self.x - o.x, self.y - o.y)
    }
}
impl Mul<f32> for V2 {
    type Output = V2;
    fn mul(self, s: f32) -> V2 {
        v2(self.x * s, self.y * s)
    }
}
impl Neg for V2 {
    type Output = V2;
    fn neg(self) -> V2 {
        v2(-self.x, -self.y)
    }
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        lerp(a[0], b[0], t),
        lerp(a[1], b[1], t),
        lerp(a[2], b[2], t),
    ]
}

fn scale3(c: [f32; 3], s: f32) -> [f32; 3] {
    [c[0] * s, c[1] * s, c[2] * s]
}

fn add3(c: [f32; 3], d: f32) -> [f32; 3] {
    [c[0] + d, c[1] + d, c[2] + d]
}

fn smoothstep(t: f32) -> f32 {
    let t = t.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Polynomial smooth minimum (radius `k` pixels; `k <= 0` is the plain minimum).
fn smin(a: f32, b: f32, k: f32) -> f32 {
    if k <= 0.0 || a.is_infinite() || b.is_infinite() {
        return a.min(b);
    }
    let h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0);
    lerp(b, a, h) - k * h * (1.0 - h)
}

/// SplitMix64: a tiny, well-mixed 64-bit generator.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    /// Uniform in `[0, 1)`.
    fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.f32()
    }
    fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
    fn chance(&mut self, p: f32) -> bool {
        self.f32() < p
    }
    fn sign(&mut self) -> f32 {
        if self.chance(0.5) { 1.0 } else { -1.0 }
    }
    /// Index drawn with the given weights.
    fn weighted(&mut self, weights: &[f32]) -> usize {
        let total: f32 = weights.iter().sum();
        let mut r = self.f32() * total;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }
    fn colour(&mut self) -> [f32; 3] {
        [
            self.range(0.0, 255.0),
            self.range(0.0, 255.0),
            self.range(0.0, 255.0),
        ]
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash of a lattice point, uniform in `[0, 1)`.
fn hash2(seed: u64, x: i32, y: i32) -> f32 {
    let h = mix64(seed ^ (((x as u32 as u64) << 32) | y as u32 as u64).wrapping_mul(0x9E37_79B9));
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// Smooth value noise in `[0, 1]`, one lattice cell per unit.
fn value_noise(seed: u64, p: V2) -> f32 {
    let (fx, fy) = (p.x.floor(), p.y.floor());
    let (ix, iy) = (fx as i32, fy as i32);
    let (tx, ty) = (smoothstep(p.x - fx), smoothstep(p.y - fy));
    let a = hash2(seed, ix, iy);
    let b = hash2(seed, ix + 1, iy);
    let c = hash2(seed, ix, iy + 1);
    let d = hash2(seed, ix + 1, iy + 1);
    lerp(lerp(a, b, tx), lerp(c, d, tx), ty)
}

/// Three octaves of value noise, in `[0, 1]`.
fn fbm(seed: u64, p: V2) -> f32 {
    let mut sum = 0.0;
    let mut amp = 0.5;
    let mut q = p;
    for o in 0..3 {
        sum += amp * value_noise(seed.wrapping_add(o), q);
        q = q * 2.03;
        amp *= 0.5;
    }
    sum / 0.875
}

// ---------------------------------------------------------------------------------------------
// Shapes (signed distances in pixels, negative inside)

#[derive(Debug, Clone)]
enum Shape {
    /// Ellipse with centre, semi-axes and the unit vector of its first axis.
    Ellipse { c: V2, r: V2, u: V2 },
    /// Rectangle with rounded corners: centre, half size (corners included), corner radius,
    /// unit vector of its width.
    RoundRect { c: V2, half: V2, radius: f32, u: V2 },
    /// Segment `a`–`b` thickened by `r`.
    Capsule { a: V2, b: V2, r: f32 },
    /// Polygon thickened by `round`.
    Polygon { pts: Vec<V2>, round: f32 },
}

impl Shape {
    fn sd(&self, p: V2) -> f32 {
        match self {
            Shape::Ellipse { c, r, u } => {
                let d = p - *c;
                let q = v2(d.dot(*u), d.dot(u.perp()));
                let k0 = v2(q.x / r.x, q.y / r.y).len();
                let k1 = v2(q.x / (r.x * r.x), q.y / (r.y * r.y)).len();
                if k1 > 0.0 {
                    k0 * (k0 - 1.0) / k1
                } else {
                    -r.x.min(r.y)
                }
            }
            Shape::RoundRect { c, half, radius, u } => {
                let d = p - *c;
                let q = v2(
                    d.dot(*u).abs() - half.x + radius,
                    d.dot(u.perp()).abs() - half.y + radius,
                );
                q.max(v2(0.0, 0.0)).len() + q.x.max(q.y).min(0.0) - radius
            }
            Shape::Capsule { a, b, r } => {
                let pa = p - *a;
                let ba = *b - *a;
                let bb = ba.dot(ba);
                let h = if bb > 0.0 {
                    (pa.dot(ba) / bb).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                (pa - ba * h).len() - r
            }
            Shape::Polygon { pts, round } => sd_polygon(pts, p) - round,
        }
    }

    /// Axis-aligned bounds `(min, max)`.
    fn bounds(&self) -> (V2, V2) {
        match self {
            Shape::Ellipse { c, r, .. } => {
                let m = r.x.max(r.y);
                (*c - v2(m, m), *c + v2(m, m))
            }
            Shape::RoundRect { c, half, .. } => {
                let m = half.len();
                (*c - v2(m, m), *c + v2(m, m))
            }
            Shape::Capsule { a, b, r } => (a.min(*b) - v2(*r, *r), a.max(*b) + v2(*r, *r)),
            Shape::Polygon { pts, round } => {
                let (lo, hi) = points_bounds(pts);
                (lo - v2(*round, *round), hi + v2(*round, *round))
            }
        }
    }
}

fn points_bounds(pts: &[V2]) -> (V2, V2) {
    let mut lo = v2(f32::INFINITY, f32::INFINITY);
    let mut hi = v2(f32::NEG_INFINITY, f32::NEG_INFINITY);
    for p in pts {
        lo = lo.min(*p);
        hi = hi.max(*p);
    }
    (lo, hi)
}

fn union_bounds(shapes: &[Shape]) -> (V2, V2) {
    let mut lo = v2(f32::INFINITY, f32::INFINITY);
    let mut hi = v2(f32::NEG_INFINITY, f32::NEG_INFINITY);
    for s in shapes {
        let (a, b) = s.bounds();
        lo = lo.min(a);
        hi = hi.max(b);
    }
    (lo, hi)
}

/// Smooth union of shapes (`k`: blend radius in pixels).
fn union_sd(shapes: &[Shape], k: f32, p: V2) -> f32 {
    shapes
        .iter()
        .fold(f32::INFINITY, |d, s| smin(d, s.sd(p), k))
}

/// Exact signed distance to a polygon (even-odd inside is negative).
fn sd_polygon(v: &[V2], p: V2) -> f32 {
    let n = v.len();
    let mut d = (p - v[0]).dot(p - v[0]);
    let mut s = 1.0;
    let mut j = n - 1;
    for i in 0..n {
        let e = v[j] - v[i];
        let w = p - v[i];
        let ee = e.dot(e);
        let t = if ee > 0.0 {
            (w.dot(e) / ee).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let b = w - e * t;
        d = d.min(b.dot(b));
        let c0 = p.y >= v[i].y;
        let c1 = p.y < v[j].y;
        let c2 = e.x * w.y > e.y * w.x;
        if (c0 && c1 && c2) || (!c0 && !c1 && !c2) {
            s = -s;
        }
        j = i;
    }
    s * d.sqrt()
}

// ---------------------------------------------------------------------------------------------
// The occluder layer

/// Premultiplied-free RGBA layer drawn over the photo at the end.
struct Layer {
    w: u32,
    h: u32,
    alpha: Vec<f32>,
    colour: Vec<[f32; 3]>,
}

impl Layer {
    fn new(w: u32, h: u32) -> Self {
        let n = w as usize * h as usize;
        Layer {
            w,
            h,
            alpha: vec![0.0; n],
            colour: vec![[0.0; 3]; n],
        }
    }

    /// Pixel range `(x0, y0, x1, y1)` (exclusive ends) covering `bounds` plus a margin.
    fn range(&self, (lo, hi): (V2, V2)) -> (u32, u32, u32, u32) {
        let clampi = |v: f32, n: u32| v.clamp(0.0, n as f32) as u32;
        (
            clampi((lo.x - 2.0).floor(), self.w),
            clampi((lo.y - 2.0).floor(), self.h),
            clampi((hi.x + 2.0).ceil(), self.w),
            clampi((hi.y + 2.0).ceil(), self.h),
        )
    }

    /// Paints the region `sd < 0` (one pixel of antialiasing) within `bounds`, with the given
    /// opacity and colour (`colour(p, sd)`), over what is already in the layer.
    fn paint(
        &mut self,
        bounds: (V2, V2),
        opacity: f32,
        sd: impl Fn(V2) -> f32,
        colour: impl Fn(V2, f32) -> [f32; 3],
    ) {
        let (x0, y0, x1, y1) = self.range(bounds);
        for y in y0..y1 {
            for x in x0..x1 {
                let p = v2(x as f32 + 0.5, y as f32 + 0.5);
                let d = sd(p);
                let a = (0.5 - d).clamp(0.0, 1.0) * opacity;
                if a <= 0.0 {
                    continue;
                }
                let c = colour(p, d);
                let i = y as usize * self.w as usize + x as usize;
                let old = self.alpha[i];
                let na = a + old * (1.0 - a);
                let o = self.colour[i];
                let mix = |k: usize| (c[k] * a + o[k] * old * (1.0 - a)) / na;
                self.colour[i] = [mix(0), mix(1), mix(2)];
                self.alpha[i] = na;
            }
        }
    }

    /// [`Layer::paint`] of the smooth union of `shapes`.
    fn paint_shapes(
        &mut self,
        shapes: &[Shape],
        k: f32,
        opacity: f32,
        colour: impl Fn(V2, f32) -> [f32; 3],
    ) {
        let (lo, hi) = union_bounds(shapes);
        self.paint(
            (lo - v2(k, k), hi + v2(k, k)),
            opacity,
            |p| union_sd(shapes, k, p),
            colour,
        );
    }

    /// The photo with this layer over it, and the layer's `alpha > 0.5` mask.
    fn over(&self, photo: &RgbImage) -> Composite {
        let mut image = photo.clone();
        let mut mask = GrayImage::new(self.w, self.h);
        for (i, (px, m)) in image.pixels_mut().zip(mask.pixels_mut()).enumerate() {
            let a = self.alpha[i];
            if a <= 0.0 {
                continue;
            }
            let c = self.colour[i];
            for k in 0..3 {
                let v = px.0[k] as f32 * (1.0 - a) + c[k].clamp(0.0, 255.0) * a;
                px.0[k] = v.round().clamp(0.0, 255.0) as u8;
            }
            if a > 0.5 {
                *m = Luma([255]);
            }
        }
        Composite { image, mask }
    }
}

// ---------------------------------------------------------------------------------------------
// Face geometry

struct Face {
    p: Vec<V2>,
    /// Unit vector from the subject's right eye to the left eye.
    u: V2,
    /// `u` turned 90° (down the face).
    v: V2,
    /// Eye-centre distance.
    ipd: f32,
    /// Landmark 234 → 454 distance.
    width: f32,
    /// Mean of the face-oval points.
    centre: V2,
    oval: Vec<V2>,
}

impl Face {
    fn new(landmarks: &[[f32; 3]]) -> Self {
        let p: Vec<V2> = landmarks.iter().map(|l| v2(l[0], l[1])).collect();
        let mid = |a: usize, b: usize| (p[a] + p[b]) * 0.5;
        let eye_r = mid(RIGHT_EYE[0], RIGHT_EYE[1]);
        let eye_l = mid(LEFT_EYE[0], LEFT_EYE[1]);
        let u = (eye_l - eye_r).norm();
        let oval: Vec<V2> = FACE_OVAL.iter().map(|&i| p[i]).collect();
        let centre = oval.iter().fold(v2(0.0, 0.0), |s, q| s + *q) * (1.0 / oval.len() as f32);
        let ipd = (eye_l - eye_r).len().max(1.0);
        let width = (p[FACE_SIDES[1]] - p[FACE_SIDES[0]]).len().max(ipd);
        Face {
            u,
            v: u.perp(),
            ipd,
            width,
            centre,
            oval,
            p,
        }
    }

    fn eye_centre(&self, side: usize) -> V2 {
        let c = if side == 0 { RIGHT_EYE } else { LEFT_EYE };
        (self.p[c[0]] + self.p[c[1]]) * 0.5
    }

    fn eye_width(&self, side: usize) -> f32 {
        let c = if side == 0 { RIGHT_EYE } else { LEFT_EYE };
        (self.p[c[0]] - self.p[c[1]]).len()
    }

    /// Which pixels (row-major, pixel centres) lie inside the face-oval polygon.
    fn region(&self, w: u32, h: u32) -> Vec<bool> {
        let mut out = vec![false; w as usize * h as usize];
        let (lo, hi) = points_bounds(&self.oval);
        let y0 = lo.y.floor().clamp(0.0, h as f32) as u32;
        let y1 = hi.y.ceil().clamp(0.0, h as f32) as u32;
        let x0 = lo.x.floor().clamp(0.0, w as f32) as u32;
        let x1 = hi.x.ceil().clamp(0.0, w as f32) as u32;
        for y in y0..y1 {
            for x in x0..x1 {
                if sd_polygon(&self.oval, v2(x as f32 + 0.5, y as f32 + 0.5)) < 0.0 {
                    out[y as usize * w as usize + x as usize] = true;
                }
            }
        }
        out
    }
}

/// Fraction of the `region` pixels where `sd < 0`.
fn coverage(region: &[bool], w: u32, sd: impl Fn(V2) -> f32) -> f32 {
    let mut n = 0usize;
    let mut hit = 0usize;
    for (i, inside) in region.iter().enumerate() {
        if *inside {
            n += 1;
            let p = v2((i % w as usize) as f32 + 0.5, (i / w as usize) as f32 + 0.5);
            if sd(p) < 0.0 {
                hit += 1;
            }
        }
    }
    if n == 0 { 0.0 } else { hit as f32 / n as f32 }
}

// ---------------------------------------------------------------------------------------------
// Sunglasses

fn sunglasses(face: &Face, rng: &mut Rng, layer: &mut Layer) {
    let (u, v) = (face.u, face.v);
    let style = rng.below(4);
    let mut k = rng.range(1.3, 1.6);
    let aspect = match style {
        0 => rng.range(0.65, 0.85),
        1 => rng.range(0.8, 0.95),
        2 => rng.range(0.8, 0.95),
        _ => rng.range(0.6, 0.78),
    };
    let e_max = face.eye_width(0).max(face.eye_width(1)).max(1.0);
    let e = [0, 1].map(|s| face.eye_width(s).max(0.75 * e_max));
    // Keep a bridge gap of at least 0.12 IPD.
    let max_k = (face.ipd * 0.88) / (0.5 * (e[0] + e[1]));
    k = k.min(max_k);
    let drop = rng.range(0.0, 0.15);
    let shift = rng.range(0.0, 0.06);
    let tilt = if style == 3 {
        rng.range(3.0, 9.0).to_radians()
    } else {
        rng.range(-1.5, 1.5).to_radians()
    };
    let corner = rng.range(0.2, 0.45);

    // Tint: top and bottom colours of the gradient, and opacity.
    let tint = rng.weighted(&[0.35, 0.25, 0.25, 0.15]);
    let (top, bottom) = match tint {
        0 => ([14.0, 14.0, 16.0], [55.0, 55.0, 58.0]),
        1 => ([45.0, 28.0, 16.0], [135.0, 92.0, 58.0]),
        2 => ([32.0, 40.0, 33.0], [92.0, 102.0, 88.0]),
        _ => ([25.0, 60.0, 140.0], [165.0, 205.0, 240.0]),
    };
    let gradient = rng.range(0.4, 1.0);
    let opacity = if tint == 3 {
        0.97
    } else {
        rng.range(0.88, 0.97)
    };
    let highlight = rng.range(35.0, 90.0);
    let hl_pos = v2(rng.range(0.05, 0.3), rng.range(-0.35, -0.1));
    let noise_seed = rng.next_u64();

    let rimless = rng.chance(0.2);
    let frame_kind = if rimless {
        2 + rng.below(2)
    } else {
        rng.weighted(&[0.45, 0.25, 0.15, 0.15])
    };
    let frame = match frame_kind {
        0 => [16.0, 16.0, 17.0],
        1 => [78.0, 48.0, 26.0],
        2 => [192.0, 160.0, 92.0],
        _ => [172.0, 172.0, 178.0],
    };
    let thick = (e_max * rng.range(0.07, 0.16)).max(1.2);
    let temple_thick = (thick * rng.range(0.9, 1.3)).max(1.6);

    let mut lenses = Vec::new();
    let mut inner = [v2(0.0, 0.0); 2];
    let mut outer = [v2(0.0, 0.0); 2];
    for side in 0..2 {
        // Outwards along u: the subject's right eye lies at -u.
        let sgn = if side == 0 { -1.0 } else { 1.0 };
        let w = k * e[side];
        let h = w * aspect;
        let c = face.eye_centre(side) + v * (h * drop) + u * (sgn * w * shift);
        // Lens axis pointing outwards; the outer end raised by `tilt`.
        let lo = (u * sgn).rot(-sgn * tilt);
        let lv = v.rot(-sgn * tilt);
        let lu = lo * sgn; // along +u (tilted)
        let at = |x: f32, y: f32| c + lo * (x * w * 0.5) + lv * (y * h * 0.5);
        let shape = match style {
            0 => Shape::RoundRect {
                c,
                half: v2(w * 0.5, h * 0.5),
                radius: corner * h,
                u: lu,
            },
            1 => Shape::Ellipse {
                c,
                r: v2(w * 0.5, h * 0.5),
                u: lu,
            },
            2 => {
                // Aviator: straight top, deep rounded inner-bottom (x: outwards, y: down).
                let r = 0.22 * h;
                let s = |x: f32, y: f32| at(x * (1.0 - r / (0.5 * w)), y * (1.0 - r / (0.5 * h)));
                Shape::Polygon {
                    pts: vec![
                        s(-1.0, -0.92),
                        s(0.2, -1.0),
                        s(1.0, -0.95),
                        s(0.98, 0.05),
                        s(0.6, 0.8),
                        s(0.0, 1.0),
                        s(-0.55, 0.85),
                        s(-0.95, 0.35),
                    ],
                    round: r,
                }
            }
            _ => {
                // Wayfarer: wider at the top.
                let r = 0.15 * h;
                let s = |x: f32, y: f32| at(x * (1.0 - r / (0.5 * w)), y * (1.0 - r / (0.5 * h)));
                Shape::Polygon {
                    pts: vec![s(-1.0, -1.0), s(1.0, -1.05), s(0.86, 1.0), s(-0.82, 0.92)],
                    round: r,
                }
            }
        };
        inner[side] = at(-0.92, -0.35);
        outer[side] = at(0.98, -rng.range(0.3, 0.7));
        lenses.push((shape, c, w, h, lo, lv));
    }

    // Temple arms (behind the lenses), from the lenses' outer edges to the face edge.
    for side in 0..2 {
        let t = face.centre + (face.p[TEMPLES[side]] - face.centre) * 1.06;
        let arm = [Shape::Capsule {
            a: outer[side],
            b: t,
            r: 0.5 * temple_thick,
        }];
        layer.paint_shapes(&arm, 0.0, 1.0, |p, _| {
            let n = fbm(noise_seed, p * 0.3) - 0.5;
            add3(frame, 12.0 * n)
        });
    }

    // Lenses.
    for (shape, c, w, h, lo, lv) in &lenses {
        let (c, w, h, lo, lv) = (*c, *w, *h, *lo, *lv);
        let hl_c = c + lo * (hl_pos.x * w) + lv * (hl_pos.y * h);
        let sigma = 0.14 * w;
        layer.paint(
            shape.bounds(),
            opacity,
            |p| shape.sd(p),
            |p, d| {
                let t = ((p - c).dot(lv) / (0.5 * h) * 0.5 + 0.5).clamp(0.0, 1.0);
                let mut col = lerp3(top, bottom, smoothstep(t) * gradient);
                if tint == 3 {
                    // Mirror: a bright horizon band.
                    let band = (-((t - 0.45) * 5.0).powi(2)).exp();
                    col = lerp3(col, [215.0, 232.0, 250.0], 0.35 * band);
                }
                let r2 = (p - hl_c).dot(p - hl_c);
                let hl = highlight * (-r2 / (2.0 * sigma * sigma)).exp();
                let edge = if d > -1.5 { 0.85 } else { 1.0 };
                let n = 6.0 * (fbm(noise_seed ^ 1, p * 0.15) - 0.5);
                add3(scale3(col, edge), hl + n)
            },
        );
    }

    // Rims and bridge.
    if !rimless {
        for (shape, ..) in &lenses {
            let (lo, hi) = shape.bounds();
            layer.paint(
                (lo - v2(thick, thick), hi + v2(thick, thick)),
                1.0,
                |p| (shape.sd(p) - 0.25 * thick).abs() - 0.5 * thick,
                |p, d| {
                    let n = fbm(noise_seed ^ 2, p * 0.25) - 0.5;
                    let mottle = if frame_kind == 1 { 50.0 * n } else { 10.0 * n };
                    add3(frame, mottle + if d < -0.3 * thick { 10.0 } else { 0.0 })
                },
            );
        }
    }
    let arch = (inner[0] + inner[1]) * 0.5 - v * (0.08 * face.ipd);
    let bridge = [
        Shape::Capsule {
            a: inner[0],
            b: arch,
            r: (0.5 * thick).max(0.9),
        },
        Shape::Capsule {
            a: arch,
            b: inner[1],
            r: (0.5 * thick).max(0.9),
        },
    ];
    layer.paint_shapes(&bridge, 0.0, 1.0, |_, _| frame);
}

// ---------------------------------------------------------------------------------------------
// Surgical and cloth masks

fn face_mask(face: &Face, rng: &mut Rng, layer: &mut Layer) {
    let (u, v) = (face.u, face.v);
    let t = rng.range(0.2, 1.6);
    let top = face.p[NOSE_BRIDGE] + (face.p[NOSE_BRIDGE_LOW] - face.p[NOSE_BRIDGE]) * t;
    let half_w = 0.5 * face.width;
    let drop = face.ipd * rng.range(0.45, 0.8);
    let pw = rng.range(1.2, 1.6);
    let (sx, sy) = (rng.range(1.02, 1.10), rng.range(1.04, 1.12));
    let grow = |q: V2| {
        let d = q - face.centre;
        face.centre + u * (d.dot(u) * sx) + v * (d.dot(v) * sy)
    };
    let oval: Vec<V2> = face.oval.iter().map(|q| grow(*q)).collect();
    let top_y = |s: f32| drop * (s.abs() / half_w).powf(pw);
    let sd_top = move |p: V2| {
        let d = p - top;
        let (s, tt) = (d.dot(u), d.dot(v));
        let x = (s.abs() / half_w).max(1e-6);
        let slope = drop * pw * x.powf(pw - 1.0) / half_w;
        (top_y(s) - tt) / (1.0 + slope * slope).sqrt()
    };
    let sd = |p: V2| sd_polygon(&oval, p).max(sd_top(p));
    let bottom = grow(face.p[CHIN]);
    let height = (bottom - top).dot(v).max(1.0);

    let kind = rng.weighted(&[0.35, 0.15, 0.15, 0.10, 0.25]);
    let base = match kind {
        0 => [
            rng.range(135.0, 170.0),
            rng.range(185.0, 210.0),
            rng.range(215.0, 240.0),
        ],
        1 => add3([238.0, 238.0, 236.0], rng.range(-12.0, 8.0)),
        2 => add3([24.0, 24.0, 27.0], rng.range(0.0, 12.0)),
        3 => add3([122.0, 122.0, 127.0], rng.range(-30.0, 30.0)),
        _ => rng.colour(),
    };
    let second = rng.colour();
    let pattern = rng.below(3);
    let period = face.ipd * rng.range(0.12, 0.3);
    let pattern_angle = rng.range(-0.3, 0.3);
    let pleated = kind <= 1;
    let seam = !pleated && rng.chance(0.6);
    let light = rng.range(-0.1, 0.1);
    let noise_seed = rng.next_u64();
    let bind = (face.ipd * 0.04).max(1.5);

    let (lo, hi) = points_bounds(&oval);
    layer.paint((lo, hi), 1.0, sd, |p, d| {
        let q = p - top;
        let (s, tt) = (q.dot(u), q.dot(v));
        let x = (s / half_w).clamp(-1.0, 1.0);
        let mut col = base;
        if kind == 4 {
            let r = q.rot(pattern_angle);
            let inside = match pattern {
                0 => (r.y / period).rem_euclid(1.0) < 0.5,
                1 => {
                    let cell = v2(
                        (r.x / period).rem_euclid(1.0) - 0.5,
                        (r.y / period).rem_euclid(1.0) - 0.5,
                    );
                    cell.len() < 0.25
                }
                _ => ((r.x / period).floor() + (r.y / period).floor()).rem_euclid(2.0) < 1.0,
            };
            if inside {
                col = second;
            }
        }
        let mut shade = 1.0 - 0.22 * x * x + light * x;
        if pleated {
            // Three pleats between 18 % and 78 % of the height, bent up at the sides.
            let h = (tt / height - 0.18 + 0.12 * x * x) / 0.2;
            if (0.0..3.0).contains(&h) {
                let phase = h.fract();
                shade *= 1.05 - 0.12 * phase;
                if phase > 0.93 {
                    shade *= 0.82;
                }
            }
        }
        if seam && s.abs() < 0.6 {
            shade *= 0.7;
        }
        if d > -bind {
            shade *= if pleated { 0.94 } else { 0.88 };
        }
        let n = 10.0 * (fbm(noise_seed, p * 0.4) - 0.5);
        add3(scale3(col, shade), n)
    });

    // Ear loops: from the mask's side corners to just beyond the face edge.
    let loop_r = (0.012 * face.ipd).max(0.8);
    let loop_col = if kind == 2 {
        [30.0, 30.0, 32.0]
    } else {
        [232.0, 232.0, 230.0]
    };
    for side in 0..2 {
        let sgn = if side == 0 { -1.0 } else { 1.0 };
        let mut corner = top;
        for i in 0..=200 {
            let s = sgn * half_w * 1.5 * i as f32 / 200.0;
            let q = top + u * s + v * top_y(s);
            if sd_polygon(&oval, q) > 0.0 {
                break;
            }
            corner = q;
        }
        let ear = face.centre + (face.p[FACE_SIDES[side]] - face.centre) * 1.12;
        let low = grow(face.p[JAW[side]]);
        let loops = [
            Shape::Capsule {
                a: corner,
                b: ear - v * (0.25 * face.ipd),
                r: loop_r,
            },
            Shape::Capsule {
                a: low,
                b: ear + v * (0.15 * face.ipd),
                r: loop_r,
            },
        ];
        layer.paint_shapes(&loops, 0.0, 1.0, |_, _| loop_col);
    }
}

// ---------------------------------------------------------------------------------------------
// Hand

/// Per-channel median of the cheek pixels.
fn cheek_colour(face: &Face, photo: &RgbImage) -> [f32; 3] {
    let r = (0.035 * face.width).max(2.0);
    let mut ch: [Vec<u8>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for &i in &CHEEKS {
        let c = face.p[i];
        let (x0, x1) = ((c.x - r).floor() as i64, (c.x + r).ceil() as i64);
        let (y0, y1) = ((c.y - r).floor() as i64, (c.y + r).ceil() as i64);
        for y in y0.max(0)..y1.min(photo.height() as i64) {
            for x in x0.max(0)..x1.min(photo.width() as i64) {
                if (v2(x as f32 + 0.5, y as f32 + 0.5) - c).len() <= r {
                    let px = photo.get_pixel(x as u32, y as u32).0;
                    for k in 0..3 {
                        ch[k].push(px[k]);
                    }
                }
            }
        }
    }
    if ch[0].is_empty() {
        return [190.0, 150.0, 125.0];
    }
    ch.map(|mut c| {
        c.sort_unstable();
        c[c.len() / 2] as f32
    })
}

/// Brightness factor `f` on all channels, then the chroma rotated by `angle` radians.
fn adjust_skin(c: [f32; 3], f: f32, angle: f32) -> [f32; 3] {
    let c = scale3(c, f);
    let y = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    let (cb, cr) = (c[2] - y, c[0] - y);
    let (s, co) = angle.sin_cos();
    let (cb, cr) = (co * cb - s * cr, s * cb + co * cr);
    let (r, b) = (y + cr, y + cb);
    let g = (y - 0.299 * r - 0.114 * b) / 0.587;
    [r, g, b].map(|x| x.clamp(0.0, 255.0))
}

struct HandShapes {
    palm: Shape,
    fingers: Vec<Shape>,
    thumb: Vec<Shape>,
    arm: Vec<Shape>,
    blend: f32,
}

impl HandShapes {
    fn sd(&self, p: V2) -> f32 {
        let mut d = self.palm.sd(p);
        for s in self.fingers.iter().chain(&self.thumb) {
            d = smin(d, s.sd(p), self.blend * 0.4);
        }
        for s in &self.arm {
            d = smin(d, s.sd(p), self.blend);
        }
        d
    }

    fn bounds(&self) -> (V2, V2) {
        let mut all = vec![self.palm.clone()];
        all.extend(self.fingers.iter().cloned());
        all.extend(self.thumb.iter().cloned());
        all.extend(self.arm.iter().cloned());
        union_bounds(&all)
    }
}

/// A hand in a random pose; `target` is where the base of the fingers lands.
fn hand_shapes(face: &Face, rng: &mut Rng, len: f32, target: V2, right_hand: bool) -> HandShapes {
    let d = target - face.centre;
    let out = if d.len() > 0.15 * face.width {
        d.norm()
    } else {
        face.v.rot(rng.sign() * rng.range(20.0, 60.0).to_radians())
    };
    let arm_dir = out.rot(rng.range(-40.0, 40.0).to_radians());
    let up = -arm_dir;
    // +x is the thumb side.
    let side = if right_hand { up.perp() } else { -up.perp() };
    let wrist = target - up * (0.5 * len);
    let at = |x: f32, y: f32| wrist + side * (x * len) + up * (y * len);

    let r = 0.04;
    let palm = Shape::Polygon {
        pts: [
            (-0.17 + r, 0.0),
            (0.17 - r, 0.0),
            (0.22 - r, 0.24),
            (0.21 - r, 0.46 - r),
            (-0.21 + r, 0.46 - r),
            (-0.205 + r, 0.2),
        ]
        .iter()
        .map(|&(x, y)| at(x, y))
        .collect(),
        round: r * len,
    };
    let spread = rng.range(0.0, 10.0).to_radians();
    let bases = [0.16, 0.055, -0.055, -0.16];
    let lengths = [0.38, 0.43, 0.40, 0.31];
    let radii = [0.056, 0.058, 0.054, 0.047];
    let mut fingers = Vec::new();
    for i in 0..4 {
        let curl = if rng.chance(0.25) {
            rng.range(0.35, 0.75)
        } else {
            1.0
        };
        let dir = v2(0.0, 1.0).rot(-spread * (1.5 - i as f32) + rng.range(-0.05, 0.05));
        let base = v2(bases[i], 0.42);
        let l = lengths[i] * curl;
        let knuckle = base + dir * (0.55 * l);
        let dir2 = dir.rot(rng.range(-0.1, 0.1));
        let tip = knuckle + dir2 * (0.45 * l - radii[i]);
        let w = |q: V2| at(q.x, q.y);
        fingers.push(Shape::Capsule {
            a: w(base),
            b: w(knuckle),
            r: radii[i] * len,
        });
        fingers.push(Shape::Capsule {
            a: w(knuckle),
            b: w(tip),
            r: radii[i] * len * 0.93,
        });
    }
    let thumb_angle = rng.range(25.0, 70.0).to_radians();
    let tdir = v2(0.0, 1.0).rot(-thumb_angle);
    let tl = 0.36 * rng.range(0.75, 1.0);
    let tbase = v2(0.15, 0.1);
    let tjoint = tbase + tdir * (0.55 * tl);
    let ttip = tjoint + tdir.rot(rng.range(0.1, 0.35)) * (0.45 * tl - 0.05);
    let thumb = vec![
        Shape::Capsule {
            a: at(tbase.x, tbase.y),
            b: at(tjoint.x, tjoint.y),
            r: 0.065 * len,
        },
        Shape::Capsule {
            a: at(tjoint.x, tjoint.y),
            b: at(ttip.x, ttip.y),
            r: 0.055 * len,
        },
    ];
    let arm = vec![
        Shape::Capsule {
            a: at(0.0, 0.06),
            b: at(0.0, -0.6),
            r: 0.16 * len,
        },
        Shape::Capsule {
            a: at(0.0, -0.6),
            b: at(0.0, -1.8),
            r: 0.2 * len,
        },
    ];
    HandShapes {
        palm,
        fingers,
        thumb,
        arm,
        blend: 0.05 * len,
    }
}

fn hand(face: &Face, photo: &RgbImage, rng: &mut Rng, layer: &mut Layer) {
    let skin = cheek_colour(face, photo);
    let f = if rng.chance(0.5) {
        rng.range(0.7, 0.9)
    } else {
        rng.range(1.1, 1.3)
    };
    let colour = adjust_skin(skin, f, rng.range(-8.0, 8.0).to_radians());
    let right_hand = rng.chance(0.5);
    let region = face.region(layer.w, layer.h);
    let mouth = (face.p[MOUTH[0]] + face.p[MOUTH[1]]) * 0.5;
    let targets = [
        face.eye_centre(0),
        face.eye_centre(1),
        mouth,
        face.p[CHEEKS[0]],
        face.p[CHEEKS[1]],
        face.p[CHIN] - face.v * (0.1 * face.width),
        face.p[NOSE_TIP],
    ];
    let mut shapes = None;
    for _ in 0..32 {
        let len = face.width * rng.range(0.8, 1.25);
        let target = targets[rng.below(targets.len())]
            + face.u * (0.08 * face.width * rng.range(-1.0, 1.0))
            + face.v * (0.08 * face.width * rng.range(-1.0, 1.0));
        let s = hand_shapes(face, rng, len, target, right_hand);
        let c = coverage(&region, layer.w, |p| s.sd(p));
        let ok = (0.08..=0.55).contains(&c);
        shapes = Some((s, len));
        if ok {
            break;
        }
    }
    let Some((shapes, len)) = shapes else { return };
    let light = v2(1.0, 0.0).rot(rng.range(0.0, 2.0 * PI));
    let gain = rng.range(0.1, 0.25);
    let noise_seed = rng.next_u64();
    let centre = shapes.palm.bounds();
    let centre = (centre.0 + centre.1) * 0.5;
    let crease = 0.012 * len + 0.6;
    layer.paint(
        shapes.bounds(),
        1.0,
        |p| shapes.sd(p),
        |p, d| {
            let mut shade = 1.0 + gain * (p - centre).dot(light) / len;
            shade *= 0.82 + 0.18 * (-d / (0.05 * len)).clamp(0.0, 1.0).sqrt();
            // Dark lines where two fingers meet (finger segments come in pairs).
            let mut best = [f32::INFINITY; 2];
            for pair in shapes.fingers.chunks(2) {
                let fd = pair[0].sd(p).min(pair[1].sd(p));
                if fd < best[0] {
                    best = [fd, best[0]];
                } else if fd < best[1] {
                    best[1] = fd;
                }
            }
            if best[1] < crease && (best[1] - best[0]).abs() < crease {
                shade *= 1.0 - 0.35 * (1.0 - (best[1] - best[0]).abs() / crease);
            }
            shade *= 1.0 + 0.08 * (fbm(noise_seed, p * (8.0 / len)) - 0.5);
            let px = hash2(noise_seed ^ 7, p.x as i32, p.y as i32);
            add3(scale3(colour, shade), 6.0 * (px - 0.5))
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Blobs

struct Blob {
    centre: V2,
    /// Ellipses relative to the centre at scale 1: offset, radii, axis.
    parts: Vec<(V2, V2, V2)>,
    blend: f32,
}

impl Blob {
    fn shapes(&self, scale: f32) -> Vec<Shape> {
        self.parts
            .iter()
            .map(|(o, r, u)| Shape::Ellipse {
                c: self.centre + *o * scale,
                r: *r * scale,
                u: *u,
            })
            .collect()
    }
}

fn blobs(face: &Face, photo: &RgbImage, rng: &mut Rng, layer: &mut Layer) {
    let (w, h) = (layer.w, layer.h);
    let region = face.region(w, h);
    let target = rng.range(0.10, 0.40);
    let n = 1 + rng.below(4);
    let mut list = Vec::new();
    for _ in 0..n {
        let centre = face.p[rng.below(NUM_LANDMARKS)];
        let r0 = face.width * rng.range(0.08, 0.18);
        let m = 2 + rng.below(4);
        let parts = (0..m)
            .map(|_| {
                let o = v2(1.0, 0.0).rot(rng.range(0.0, 2.0 * PI)) * (r0 * rng.range(0.0, 0.6));
                let r = v2(r0 * rng.range(0.4, 1.0), r0 * rng.range(0.4, 1.0));
                (o, r, v2(1.0, 0.0).rot(rng.range(0.0, PI)))
            })
            .collect();
        list.push(Blob {
            centre,
            parts,
            blend: 0.3 * r0,
        });
    }
    // Scale all blobs together until they cover `target` of the face region.
    let (mut lo, mut hi) = (0.02f32, 4.0f32);
    let shapes_at =
        |scale: f32| -> Vec<Vec<Shape>> { list.iter().map(|b| b.shapes(scale)).collect() };
    let cover = |scale: f32| {
        let shapes = shapes_at(scale);
        coverage(&region, w, |p| {
            shapes.iter().zip(&list).fold(f32::INFINITY, |d, (s, b)| {
                d.min(union_sd(s, b.blend * scale, p))
            })
        })
    };
    for _ in 0..22 {
        let mid = 0.5 * (lo + hi);
        if cover(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let scale = hi;

    let (face_lo, face_hi) = points_bounds(&face.oval);
    for b in &list {
        let shapes = b.shapes(scale);
        let (blo, bhi) = union_bounds(&shapes);
        let fill = rng.below(4);
        let c1 = rng.colour();
        let c2 = rng.colour();
        let period = rng.range(4.0, 14.0);
        let angle = rng.range(0.0, PI);
        let noise_scale = rng.range(3.0, 12.0);
        let noise_seed = rng.next_u64();
        // A photo patch from outside the face: shift the blob's box past the face's box.
        let mut offset = None;
        if fill == 3 {
            let candidates = [
                v2(face_lo.x - bhi.x - 2.0, 0.0),
                v2(face_hi.x - blo.x + 2.0, 0.0),
                v2(0.0, face_lo.y - bhi.y - 2.0),
                v2(0.0, face_hi.y - blo.y + 2.0),
            ];
            let start = rng.below(4);
            for i in 0..4 {
                let o = candidates[(start + i) % 4];
                let (a, z) = (blo + o, bhi + o);
                if a.x >= 0.0 && a.y >= 0.0 && z.x <= w as f32 && z.y <= h as f32 {
                    offset = Some(o);
                    break;
                }
            }
        }
        let dir = v2(1.0, 0.0).rot(angle);
        layer.paint_shapes(&shapes, b.blend * scale, 1.0, |p, _| match (fill, offset) {
            (0, _) => {
                let n = fbm(noise_seed, p * 0.2) - 0.5;
                add3(c1, 10.0 * n)
            }
            (1, _) => {
                let t = (p.dot(dir) / period).rem_euclid(1.0);
                lerp3(
                    c1,
                    c2,
                    smoothstep((t - 0.45) * 10.0) - smoothstep((t - 0.95) * 10.0),
                )
            }
            (3, Some(o)) => {
                let q = p + o;
                let x = (q.x as u32).min(w - 1);
                let y = (q.y as u32).min(h - 1);
                photo.get_pixel(x, y).0.map(f32::from)
            }
            _ => lerp3(c1, c2, fbm(noise_seed, p * (1.0 / noise_scale))),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::perception::Perception;

    /// The test faces and their clean landmarks (computed once).
    fn faces() -> &'static Vec<(RgbImage, Vec<[f32; 3]>)> {
        static FACES: OnceLock<Vec<(RgbImage, Vec<[f32; 3]>)>> = OnceLock::new();
        FACES.get_or_init(|| {
            let dir =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/occlusion");
            let perception = Perception::load_default().unwrap();
            ["astronaut.webp", "sample4_b.webp", "sample6_a.webp"]
                .iter()
                .map(|f| {
                    let img = image::open(dir.join(f)).unwrap().to_rgb8();
                    let r = perception.run(&img).unwrap();
                    let lm = r.faces[0].landmarks.as_ref().unwrap().points.clone();
                    (img, lm)
                })
                .collect()
        })
    }

    fn region_coverage(lm: &[[f32; 3]], c: &Composite) -> f32 {
        let (w, h) = c.mask.dimensions();
        let region = Face::new(lm).region(w, h);
        let n = region.iter().filter(|r| **r).count();
        let hit = region
            .iter()
            .zip(c.mask.pixels())
            .filter(|(r, m)| **r && m.0[0] == 255)
            .count();
        hit as f32 / n as f32
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let (img, lm) = &faces()[0];
        for kind in OccluderKind::ALL {
            let a = composite(img, lm, kind, 3);
            let b = composite(img, lm, kind, 3);
            assert_eq!(a, b, "{kind}");
            let c = composite(img, lm, kind, 4);
            assert_ne!(a.mask, c.mask, "{kind}: seeds 3 and 4 give the same mask");
        }
    }

    #[test]
    fn masks_cover_the_stated_ranges() {
        // Fraction of the face-oval region covered, per kind (see the module docs).
        let ranges = [
            (OccluderKind::Sunglasses, 0.08, 0.35),
            (OccluderKind::SurgicalMask, 0.25, 0.65),
            (OccluderKind::Hand, 0.079, 0.551),
            (OccluderKind::Blobs, 0.099, 0.405),
        ];
        for (img, lm) in faces() {
            for (kind, lo, hi) in ranges {
                for seed in 0..12 {
                    let c = composite(img, lm, kind, seed);
                    assert_eq!(c.mask.dimensions(), img.dimensions());
                    let cov = region_coverage(lm, &c);
                    assert!(
                        (lo..=hi).contains(&cov),
                        "{kind} seed {seed}: covers {cov:.3} of the face, expected {lo}–{hi}"
                    );
                }
            }
        }
    }

    #[test]
    fn pixels_away_from_the_mask_are_unchanged() {
        for (img, lm) in faces() {
            for kind in OccluderKind::ALL {
                for seed in 0..4 {
                    let c = composite(img, lm, kind, seed);
                    let (w, h) = img.dimensions();
                    let near = |x: u32, y: u32| {
                        (y.saturating_sub(2)..(y + 3).min(h)).any(|yy| {
                            (x.saturating_sub(2)..(x + 3).min(w))
                                .any(|xx| c.mask.get_pixel(xx, yy).0[0] == 255)
                        })
                    };
                    let mut changed_inside = 0;
                    for (x, y, p) in c.image.enumerate_pixels() {
                        if !near(x, y) {
                            assert_eq!(p, img.get_pixel(x, y), "{kind} seed {seed} at {x},{y}");
                        } else if p != img.get_pixel(x, y) {
                            changed_inside += 1;
                        }
                    }
                    assert!(changed_inside > 0, "{kind} seed {seed} changed nothing");
                }
            }
        }
    }

    #[test]
    fn every_mask_value_is_binary() {
        let (img, lm) = &faces()[1];
        for kind in OccluderKind::ALL {
            let c = composite(img, lm, kind, 9);
            assert!(c.mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
            assert!(c.mask.pixels().any(|p| p.0[0] == 255), "{kind}: empty mask");
        }
    }

    #[test]
    fn skin_adjustment() {
        let c = [200.0, 150.0, 120.0];
        assert_eq!(adjust_skin(c, 1.0, 0.0).map(|x| x.round()), c);
        let d = adjust_skin(c, 0.8, 0.0);
        assert!((d[0] - 160.0).abs() < 0.01 && (d[2] - 96.0).abs() < 0.01);
    }
}
