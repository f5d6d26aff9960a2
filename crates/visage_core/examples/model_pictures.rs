//! Renders the pictures of `docs/model.md` from the shipped open head model: an expression
//! contact sheet, the regions in colour, the UV layout, the landmarks on the template and the
//! registration residuals. Meshes are drawn by the project's CPU photometric pass
//! (`visage_core::render`, weak-perspective camera, SH lighting) at 3× resolution and box-filtered;
//! landmark dots and the UV wireframe are drawn by this example.
//!
//! `cargo run -p visage_core --example model_pictures -- [MODEL] [OUT_DIR] [DATA_DIR] [NAMES]`
//! (defaults: `assets/models/visage_head.safetensors`, `docs/images`, `../shared/data`; the
//! residual picture needs the data directory and is skipped without it). `NAMES`, a
//! comma-separated list of expressions, adds `closeup.png`: mouth and left eye of each at
//! weight one.

use std::path::Path;

use image::{Rgb, RgbImage};
use visage_core::model::{FlameModel, FlameParams};
use visage_core::render::{Camera, NO_TRIANGLE, PassConfig, PhotometricPass, Scene, sh, to_rgb8};

type V3 = [f32; 3];

const SS: usize = 3;

/// A view: yaw and pitch in degrees, and the world box (centre, half-height) to frame.
#[derive(Clone, Copy)]
struct View {
    yaw: f32,
    pitch: f32,
    centre: V3,
    half_height: f32,
}

impl View {
    /// Rotates a direction into view space (x right, y up, z towards the viewer).
    fn rotate(&self, q: V3) -> V3 {
        let (sy, cy) = self.yaw.to_radians().sin_cos();
        let (sp, cp) = self.pitch.to_radians().sin_cos();
        let x = cy * q[0] + sy * q[2];
        let z = -sy * q[0] + cy * q[2];
        [x, cp * q[1] - sp * z, sp * q[1] + cp * z]
    }
}

struct Canvas {
    w: usize,
    h: usize,
    bg: [f32; 3],
    /// Linear RGB at the supersampled resolution.
    color: Vec<[f32; 3]>,
    /// Camera-frame depth of the front surface (larger is nearer), supersampled.
    depth: Vec<f32>,
}

/// sRGB → linear.
fn linear(c: [f32; 3]) -> [f32; 3] {
    c.map(|x| x.powf(2.2))
}

impl Canvas {
    fn new(w: usize, h: usize, bg: [f32; 3]) -> Self {
        Self {
            w: w * SS,
            h: h * SS,
            bg: linear(bg),
            color: vec![linear(bg); w * h * SS * SS],
            depth: vec![f32::NEG_INFINITY; w * h * SS * SS],
        }
    }

    /// Renders a mesh with per-vertex colours (sRGB) through the project's CPU photometric
    /// pass: weak-perspective camera, Lambertian shading under second-order SH light (ambient
    /// plus a key light from the upper left).
    fn mesh(&mut self, v: &[V3], tris: &[[u32; 3]], colors: &[[f32; 3]], view: &View) {
        let cam_vertices: Vec<V3> = v
            .iter()
            .map(|&p| {
                view.rotate([
                    p[0] - view.centre[0],
                    p[1] - view.centre[1],
                    p[2] - view.centre[2],
                ])
            })
            .collect();
        let albedo: Vec<[f32; 3]> = colors.iter().map(|&c| linear(c)).collect();
        let mut sh = sh::ambient([0.18; 3]);
        let key = normalize([-0.35, 0.45, 1.0]);
        for c in 0..3 {
            sh[1][c] = 0.85 * key[1] / sh::SH_C1;
            sh[2][c] = 0.85 * key[2] / sh::SH_C1;
            sh[3][c] = 0.85 * key[0] / sh::SH_C1;
        }
        let camera = Camera::WeakPerspective {
            scale: self.h as f32 / (2.0 * view.half_height),
            offset: [self.w as f32 / 2.0, self.h as f32 / 2.0],
        };
        let mut pass = match PhotometricPass::new(
            self.w as u32,
            self.h as u32,
            tris,
            v.len(),
            PassConfig::default(),
        ) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return;
            }
        };
        let scene = Scene {
            vertices: &cam_vertices,
            albedo: &albedo,
            sh: &sh,
            camera,
        };
        let bg = self.bg;
        let image = match pass.render(&scene, bg) {
            Ok(img) => img.to_vec(),
            Err(e) => {
                eprintln!("error: {e}");
                return;
            }
        };
        for (k, px) in pass.pixels().iter().enumerate() {
            if px.triangle != NO_TRIANGLE && px.depth_key > self.depth[k] {
                self.depth[k] = px.depth_key;
                self.color[k] = image[k];
            }
        }
    }

    /// A dot at a world point if it is not hidden.
    fn dot(&mut self, p: V3, view: &View, radius: f32, col: [f32; 3]) {
        let q = view.rotate([
            p[0] - view.centre[0],
            p[1] - view.centre[1],
            p[2] - view.centre[2],
        ]);
        let s = self.h as f32 / (2.0 * view.half_height);
        let (cx, cy) = (
            self.w as f32 / 2.0 + s * q[0],
            self.h as f32 / 2.0 - s * q[1],
        );
        if cx < 0.0 || cy < 0.0 || cx >= self.w as f32 || cy >= self.h as f32 {
            return;
        }
        let k = cy as usize * self.w + cx as usize;
        if q[2] < self.depth[k] - 0.004 {
            return;
        }
        let r = radius * SS as f32;
        let col = linear(col);
        for y in ((cy - r).max(0.0) as usize)..((cy + r).min(self.h as f32 - 1.0) as usize) {
            for x in ((cx - r).max(0.0) as usize)..((cx + r).min(self.w as f32 - 1.0) as usize) {
                let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                if d <= r {
                    self.color[y * self.w + x] = if d > r - SS as f32 * 0.8 {
                        [0.0, 0.0, 0.0]
                    } else {
                        col
                    };
                }
            }
        }
    }

    /// Box-filters the supersampled linear image and converts it to 8-bit sRGB.
    fn image(&self) -> RgbImage {
        let (w, h) = (self.w / SS, self.h / SS);
        let mut small = vec![[0.0f32; 3]; w * h];
        for (i, px) in small.iter_mut().enumerate() {
            let (x, y) = (i % w, i / w);
            for dy in 0..SS {
                for dx in 0..SS {
                    let c = self.color[(y * SS + dy) * self.w + x * SS + dx];
                    for ch in 0..3 {
                        px[ch] += c[ch] / (SS * SS) as f32;
                    }
                }
            }
        }
        to_rgb8(w as u32, h as u32, &small).unwrap_or_else(|_| RgbImage::new(w as u32, h as u32))
    }
}

fn dot(a: V3, b: V3) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn normalize(a: V3) -> V3 {
    let n = dot(a, a).sqrt();
    [a[0] / n, a[1] / n, a[2] / n]
}

/// Pastes tiles into a grid.
fn sheet(tiles: &[RgbImage], cols: usize) -> RgbImage {
    let (tw, th) = (tiles[0].width(), tiles[0].height());
    let rows = tiles.len().div_ceil(cols);
    let mut out = RgbImage::from_pixel(tw * cols as u32, th * rows as u32, Rgb([255, 255, 255]));
    for (i, t) in tiles.iter().enumerate() {
        let (ox, oy) = ((i % cols) as u32 * tw, (i / cols) as u32 * th);
        for (x, y, p) in t.enumerate_pixels() {
            out.put_pixel(ox + x, oy + y, *p);
        }
    }
    out
}

const SKIN: [f32; 3] = [0.86, 0.74, 0.66];
const WHITE: [f32; 3] = [1.0, 1.0, 1.0];

/// Distinct colours for the 15 partition regions (Tableau-like palette).
const PALETTE: [[f32; 3]; 15] = [
    [0.12, 0.47, 0.71],
    [1.0, 0.5, 0.05],
    [0.84, 0.15, 0.16],
    [0.17, 0.63, 0.17],
    [0.6, 0.87, 0.54],
    [0.58, 0.4, 0.74],
    [0.77, 0.69, 0.84],
    [0.55, 0.34, 0.29],
    [0.89, 0.47, 0.76],
    [0.97, 0.71, 0.82],
    [0.5, 0.5, 0.5],
    [0.74, 0.74, 0.13],
    [0.86, 0.86, 0.55],
    [0.09, 0.75, 0.81],
    [0.62, 0.85, 0.9],
];

fn main() {
    let mut args = std::env::args().skip(1);
    let model_path = args
        .next()
        .unwrap_or_else(|| "assets/models/visage_head.safetensors".into());
    let out = args.next().unwrap_or_else(|| "docs/images".into());
    let data = args.next().unwrap_or_else(|| "../shared/data".into());
    let closeup = args.next();
    let m = match FlameModel::load(&model_path) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let out = Path::new(&out);
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        std::process::exit(1);
    }
    let save = |img: &RgbImage, name: &str| {
        let p = out.join(name);
        match img.save(&p) {
            Ok(()) => println!("wrote {}", p.display()),
            Err(e) => eprintln!("error: cannot write {}: {e}", p.display()),
        }
    };
    let head_view = |yaw: f32| View {
        yaw,
        pitch: 0.0,
        centre: [0.0, -0.02, 0.0],
        half_height: 0.135,
    };
    let face_view = |yaw: f32| View {
        yaw,
        pitch: 0.0,
        centre: [0.0, -0.012, 0.0],
        half_height: 0.105,
    };

    // 1. Expression contact sheet.
    let shapes: &[&[&str]] = &[
        &[],
        &["jawOpen"],
        &["mouthSmile_L"],
        &["eyeBlink_L"],
        &["browInnerUp_L", "browInnerUp_R"],
        &["mouthPucker"],
        &["cheekPuff_L", "cheekPuff_R"],
        &["mouthFunnel"],
        &["noseSneer_L", "noseSneer_R"],
        &["eyeWide_L", "eyeWide_R"],
        &["mouthFrown_L", "mouthFrown_R"],
        &["jawLeft"],
    ];
    let white: Vec<[f32; 3]> = vec![SKIN; m.num_vertices()];
    let mut tiles = Vec::new();
    for names in shapes {
        let mut p = FlameParams::zeros(&m);
        for n in *names {
            p.expression[m.expression_index(n).expect("expression exists")] = 1.0;
        }
        let v = m.forward(&p).vertices;
        let mut c = Canvas::new(320, 330, WHITE);
        c.mesh(&v, &m.triangles, &white, &face_view(-20.0));
        tiles.push(c.image());
    }
    save(&sheet(&tiles, 4), "expressions.png");

    // 2. Regions.
    let partition: Vec<String> = m.meta.extra["regions.partition"]
        .split(',')
        .map(String::from)
        .collect();
    let mut colors = vec![WHITE; m.num_vertices()];
    for (k, name) in partition.iter().enumerate() {
        for &v in &m.region(name).expect("region").vertices {
            colors[v as usize] = PALETTE[k % PALETTE.len()];
        }
    }
    let mut tiles = Vec::new();
    for yaw in [0.0, -60.0, 180.0] {
        let mut c = Canvas::new(400, 460, WHITE);
        c.mesh(&m.template, &m.triangles, &colors, &head_view(yaw));
        tiles.push(c.image());
    }
    save(&sheet(&tiles, 3), "regions.png");
    // Legend swatches as a strip, in partition order.
    let mut legend = RgbImage::from_pixel(40 * partition.len() as u32, 40, Rgb([255, 255, 255]));
    for k in 0..partition.len() {
        for y in 4..36 {
            for x in 4..36 {
                legend.put_pixel(
                    40 * k as u32 + x,
                    y,
                    Rgb(PALETTE[k].map(|c| (c * 255.0) as u8)),
                );
            }
        }
    }
    save(&legend, "regions_legend.png");

    // 3. UV layout: triangles filled with region colours, edges dark.
    let uv = m.uv.as_ref().expect("model has UVs");
    let n = 1024usize;
    let mut img = RgbImage::from_pixel(n as u32, n as u32, Rgb([255, 255, 255]));
    for (t, f) in uv.faces.iter().enumerate() {
        let pts = f
            .map(|i| uv.coords[i as usize])
            .map(|c| [c[0] * n as f32, c[1] * n as f32]);
        let tri = m.triangles[t];
        let col = colors[tri[0] as usize].map(|c| (200.0 * c + 55.0) as u8);
        let area = (pts[1][0] - pts[0][0]) * (pts[2][1] - pts[0][1])
            - (pts[2][0] - pts[0][0]) * (pts[1][1] - pts[0][1]);
        if area == 0.0 {
            continue;
        }
        let (x0, x1) = (
            pts.iter().map(|p| p[0]).fold(f32::MAX, f32::min) as usize,
            (pts.iter().map(|p| p[0]).fold(0.0, f32::max).ceil() as usize).min(n - 1),
        );
        let (y0, y1) = (
            pts.iter().map(|p| p[1]).fold(f32::MAX, f32::min) as usize,
            (pts.iter().map(|p| p[1]).fold(0.0, f32::max).ceil() as usize).min(n - 1),
        );
        for y in y0..=y1 {
            for x in x0..=x1 {
                let q = [x as f32 + 0.5, y as f32 + 0.5];
                let w0 = ((pts[1][0] - q[0]) * (pts[2][1] - q[1])
                    - (pts[2][0] - q[0]) * (pts[1][1] - q[1]))
                    / area;
                let w1 = ((pts[2][0] - q[0]) * (pts[0][1] - q[1])
                    - (pts[0][0] - q[0]) * (pts[2][1] - q[1]))
                    / area;
                let w2 = 1.0 - w0 - w1;
                if w0 >= 0.0 && w1 >= 0.0 && w2 >= 0.0 {
                    // Pixel distance to each edge: w_i · 2·area / |opposite edge|.
                    let len = |a: [f32; 2], b: [f32; 2]| {
                        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2))
                            .sqrt()
                            .max(1e-6)
                    };
                    let d0 = w0 * area.abs() / len(pts[1], pts[2]);
                    let d1 = w1 * area.abs() / len(pts[2], pts[0]);
                    let d2 = w2 * area.abs() / len(pts[0], pts[1]);
                    let edge = d0.min(d1).min(d2) < 0.45;
                    img.put_pixel(
                        x as u32,
                        y as u32,
                        if edge { Rgb([40, 40, 40]) } else { Rgb(col) },
                    );
                }
            }
        }
    }
    save(&img, "uv_layout.png");

    // 4. Landmarks on the template: 68 (red, contour for yaw 0) and 468 (blue).
    let grey: Vec<[f32; 3]> = vec![[0.85, 0.85, 0.85]; m.num_vertices()];
    let mut tiles = Vec::new();
    let l68 = m
        .landmarks68
        .as_ref()
        .expect("68")
        .evaluate(&m.template, &m.triangles, 0.0);
    let lmp = m
        .landmarks_mp
        .as_ref()
        .expect("468")
        .evaluate(&m.template, &m.triangles);
    for (which, yaw) in [(0, 0.0), (1, 0.0), (1, -50.0)] {
        let mut c = Canvas::new(480, 520, WHITE);
        let view = face_view(yaw);
        c.mesh(&m.template, &m.triangles, &grey, &view);
        if which == 0 {
            for &p in l68.iter() {
                c.dot(p, &view, 3.5, [0.9, 0.1, 0.1]);
            }
        } else {
            for &p in &lmp {
                c.dot(p, &view, 2.2, [0.1, 0.3, 0.95]);
            }
        }
        tiles.push(c.image());
    }
    save(&sheet(&tiles, 3), "landmarks.png");

    // Optional close-ups.
    if let Some(names) = &closeup {
        let mouth = View {
            yaw: -25.0,
            pitch: 0.0,
            centre: [0.0, -0.05, 0.05],
            half_height: 0.03,
        };
        let eye = View {
            yaw: 0.0,
            pitch: 0.0,
            centre: [0.032, 0.022, 0.03],
            half_height: 0.022,
        };
        let mut tiles = Vec::new();
        for view in [mouth, eye] {
            for name in names.split(',') {
                let mut p = FlameParams::zeros(&m);
                if let Some(k) = m.expression_index(name) {
                    p.expression[k] = 1.0;
                }
                let v = m.forward(&p).vertices;
                let mut c = Canvas::new(300, 240, WHITE);
                c.mesh(&v, &m.triangles, &white, &view);
                tiles.push(c.image());
            }
        }
        save(&sheet(&tiles, names.split(',').count()), "closeup.png");
    }

    // 5. Registration residuals (needs the sources).
    if Path::new(&data)
        .join("ict_facekit/ict_facekit_subset.npz")
        .exists()
    {
        match visage_core::build::prepare(Path::new(&data)) {
            Ok(wb) => {
                let reg: Vec<V3> = wb.registered.iter().map(|p| p.map(|x| x as f32)).collect();
                let face = wb.regions.mask("face");
                let heat: Vec<[f32; 3]> = (0..m.num_vertices())
                    .map(|v| match (&wb.samples[v], face[v]) {
                        (Some(h), true) => {
                            let d = (h.dist2.sqrt() / 0.002).min(1.0) as f32;
                            [d, 0.2 + 0.6 * (1.0 - d), 1.0 - d]
                        }
                        _ => [0.8, 0.8, 0.8],
                    })
                    .collect();
                let ict: Vec<V3> = wb
                    .ict_in_flame
                    .iter()
                    .map(|p| p.map(|x| x as f32))
                    .collect();
                let ict_grey = vec![[0.75, 0.78, 0.85]; ict.len()];
                let mut tiles = Vec::new();
                for yaw in [0.0, -60.0] {
                    let mut c = Canvas::new(420, 460, WHITE);
                    c.mesh(&reg, &m.triangles, &heat, &head_view(yaw));
                    tiles.push(c.image());
                }
                let mut c = Canvas::new(420, 460, WHITE);
                c.mesh(&ict, &wb.ict_head_triangles, &ict_grey, &head_view(0.0));
                tiles.push(c.image());
                save(&sheet(&tiles, 3), "registration.png");
            }
            Err(e) => eprintln!("skipped the registration picture: {e}"),
        }
    } else {
        eprintln!("skipped the registration picture: {data} is absent");
    }
}
