// The photometric pass on the GPU: visibility buffer, shading and masked loss, backward pass and
// Adam, as compute entry points over one bind group (group 0).
//
// It computes what `visage_core::render` defines (camera, SH basis, per-vertex shading with
// perspective-correct interpolation, loss, gradient conventions, Adam); expressions follow the
// CPU reference operation for operation so that both round alike. Buffer layouts, the fixed-point
// accumulation and its error bound are described in docs/photometric_gpu.md; the Rust side that
// packs the buffers is src/gpu/layout.rs and must be kept in step with this file.

const WG: u32 = 64u;
const NO_TRIANGLE: u32 = 0xffffffffu;
const INSIDE_EPS: f32 = -1e-6;

// Flat parameter vector (`theta`, `grads`, Adam moments): SH (27, `[k][c]`), camera (7), then
// per-vertex offsets (3V) and per-vertex albedo (3V).
const SH_OFF: u32 = 0u;
const CAM_OFF: u32 = 27u;
const VERT_OFF: u32 = 34u;
// Scalars reduced per vertex workgroup in the backward pass: 27 SH + 7 camera.
const PARTIALS: u32 = 34u;

// SH lighting basis constants (visage_core::render::sh).
const SH_C0: f32 = 0.2820948;
const SH_C1: f32 = 0.32573503;
const SH_C2: f32 = 0.2731371;
const SH_C3: f32 = 0.07884789;
const SH_C4: f32 = 0.13656855;

// Fixed point: 64-bit two's-complement integers with 32 fractional bits, kept as (lo, hi) u32
// word pairs and accumulated with two 32-bit atomics and an explicit carry.
const FX_ONE: f32 = 4294967296.0;
const FX_INV: f32 = 2.3283064365386963e-10;
// Largest magnitude accepted per addition (2^30); larger values are clamped and flagged.
const FX_MAX: f32 = 1073741824.0;

// State words (`state` buffer).
const ST_TAG: u32 = 0u;
const ST_STEPS: u32 = 1u;
const ST_FINAL: u32 = 2u;
const ST_PHOTOMETRIC: u32 = 3u;
const ST_WEIGHT_SUM: u32 = 4u;
const ST_INV_W: u32 = 5u;
const ST_HISTORY: u32 = 8u;

// Flag words after the 12V accumulator words (`acc` buffer).
const FLAG_ERRORS: u32 = 0u;
const FLAG_HOLES: u32 = 1u;
const FLAG_COVERED: u32 = 2u;
const ERR_NONFINITE_INPUT: u32 = 1u;
const ERR_FIXED_OVERFLOW: u32 = 2u;

// Penalties (visage_core::render::RobustLoss).
const PENALTY_L1: u32 = 0u;
const PENALTY_HUBER: u32 = 1u;
const PENALTY_GEMAN_MCCLURE: u32 = 2u;

struct Params {
    width: u32,
    height: u32,
    num_vertices: u32,
    num_triangles: u32,
    num_pixels: u32,
    num_params: u32,
    perspective: u32,
    cull_backfaces: u32,
    near: f32,
    penalty: u32,
    penalty_param: f32,
    has_background: u32,
    bg_r: f32,
    bg_g: f32,
    bg_b: f32,
    photometric_weight: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    total_steps: u32,
    job_tag: u32,
    pixel_groups: u32,
    vertex_groups: u32,
    param_groups: u32,
    adj_start_off: u32,
    adj_off: u32,
    _pad0: u32,
    _pad1: u32,
}

// One optimiser step of the schedule (groups: 0 shape, 1 albedo, 2 lighting, 3 camera).
struct Step {
    // lr / (1 − β1^t) per group.
    lr_step: vec4<f32>,
    // L2 weight per group.
    l2: vec4<f32>,
    // 1 / (1 − β2^t).
    inv_bc2: f32,
    // Bit g set: group g is optimised in this step.
    groups_on: u32,
    // Bit k set: camera slot k is optimised.
    camera_mask: u32,
    // 1 on the first step of a stage (Adam moments restart).
    first_step: u32,
}

// Per-vertex forward results.
struct VertexState {
    // Unit normal, `1/|m|` of the area-weighted normal sum.
    normal: vec4<f32>,
    // SH irradiance per channel; w: 1 when the vertex projects, 0 otherwise.
    irradiance: vec4<f32>,
    // Shaded colour.
    shade: vec4<f32>,
    // (u, v, z, w) from the camera.
    proj: vec4<f32>,
}

// Per-triangle set-up.
struct TriSetup {
    // Inclusive pixel box x0, y0, x1, y1; empty (x0 > x1) when not drawn.
    bbox: vec4<i32>,
    // xy: screen position of corner 0.
    p0: vec4<f32>,
    // λ1 = dx·k.x − dy·k.y, λ2 = dy·k.z − dx·k.w.
    k: vec4<f32>,
    // Per-corner depth quantity (w = 1/z, or camera z for weak perspective).
    q: vec4<f32>,
    // Cross product of the edges (area-weighted normal).
    cross: vec4<f32>,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;
@group(0) @binding(2) var<storage, read> steps: array<Step>;
@group(0) @binding(3) var<storage, read> mesh: array<u32>;
@group(0) @binding(4) var<storage, read> base: array<f32>;
@group(0) @binding(5) var<storage, read_write> theta: array<f32>;
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;
@group(0) @binding(7) var<storage, read_write> opt: array<f32>;
@group(0) @binding(8) var<storage, read_write> vstate: array<VertexState>;
@group(0) @binding(9) var<storage, read_write> tris: array<TriSetup>;
@group(0) @binding(10) var<storage, read_write> vis: array<atomic<u32>>;
@group(0) @binding(11) var<storage, read_write> pix: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read> target_px: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> acc: array<atomic<u32>>;
@group(0) @binding(14) var<storage, read_write> vgrad: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read_write> partials: array<f32>;

var<workgroup> red: array<f32, 2176>;

// ---------------------------------------------------------------------------------------------
// Helpers

fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

fn all_finite(v: vec3<f32>) -> bool {
    return is_finite(v.x) && is_finite(v.y) && is_finite(v.z);
}

// Maps f32 to u32 so that the unsigned order is the float order.
fn order_key(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if (b & 0x80000000u) != 0u {
        return ~b;
    }
    return b | 0x80000000u;
}

fn flag_word(i: u32) -> u32 {
    return 12u * params.num_vertices + i;
}

fn tri_vertices(t: u32) -> vec3<u32> {
    return vec3<u32>(mesh[3u * t], mesh[3u * t + 1u], mesh[3u * t + 2u]);
}

fn position(v: u32) -> vec3<f32> {
    let o = VERT_OFF + 3u * v;
    return vec3<f32>(
        base[3u * v] + theta[o],
        base[3u * v + 1u] + theta[o + 1u],
        base[3u * v + 2u] + theta[o + 2u],
    );
}

fn albedo(v: u32) -> vec3<f32> {
    let o = VERT_OFF + 3u * params.num_vertices + 3u * v;
    return vec3<f32>(theta[o], theta[o + 1u], theta[o + 2u]);
}

fn sh_coeff(k: u32, c: u32) -> f32 {
    return theta[SH_OFF + 3u * k + c];
}

fn cam(i: u32) -> f32 {
    return theta[CAM_OFF + i];
}

fn cross3(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    return vec3<f32>(a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x);
}

fn dot3(a: vec3<f32>, b: vec3<f32>) -> f32 {
    return a.x * b.x + a.y * b.y + a.z * b.z;
}

fn sh_basis(n: vec3<f32>) -> array<f32, 9> {
    let x = n.x;
    let y = n.y;
    let z = n.z;
    return array<f32, 9>(
        SH_C0,
        SH_C1 * y,
        SH_C1 * z,
        SH_C1 * x,
        SH_C2 * x * y,
        SH_C2 * y * z,
        SH_C3 * (3.0 * z * z - 1.0),
        SH_C2 * x * z,
        SH_C4 * (x * x - y * y),
    );
}

fn sh_basis_vjp(n: vec3<f32>, q: array<f32, 9>) -> vec3<f32> {
    let x = n.x;
    let y = n.y;
    let z = n.z;
    let gx = SH_C1 * q[3] + SH_C2 * (q[4] * y + q[7] * z) + SH_C4 * 2.0 * x * q[8];
    let gy = SH_C1 * q[1] + SH_C2 * (q[4] * x + q[5] * z) - SH_C4 * 2.0 * y * q[8];
    let gz = SH_C1 * q[2] + SH_C2 * (q[5] * y + q[7] * x) + SH_C3 * 6.0 * z * q[6];
    return vec3<f32>(gx, gy, gz);
}

// (ρ(r), ρ'(r)).
fn penalty(r: f32) -> vec2<f32> {
    if params.penalty == PENALTY_HUBER {
        let delta = params.penalty_param;
        let a = abs(r);
        if a <= delta {
            return vec2<f32>(r * r / (2.0 * delta), r / delta);
        }
        return vec2<f32>(a - 0.5 * delta, sign(r));
    }
    if params.penalty == PENALTY_GEMAN_MCCLURE {
        let s2 = params.penalty_param * params.penalty_param;
        let d = r * r + s2;
        return vec2<f32>(r * r / d, 2.0 * r * s2 / (d * d));
    }
    var s = 0.0;
    if r > 0.0 {
        s = 1.0;
    } else if r < 0.0 {
        s = -1.0;
    }
    return vec2<f32>(abs(r), s);
}

// Adds `x` to the fixed-point accumulator `slot` (words 2·slot, 2·slot + 1).
fn fx_add(slot: u32, x: f32) {
    if x == 0.0 {
        return;
    }
    var v = x;
    if !(abs(v) < FX_MAX) {
        atomicOr(&acc[flag_word(FLAG_ERRORS)], ERR_FIXED_OVERFLOW);
        if !is_finite(v) && !(abs(v) > 0.0) {
            return;
        }
        v = clamp(v, -FX_MAX, FX_MAX);
    }
    let hi_f = floor(v);
    let lo = u32((v - hi_f) * FX_ONE);
    let hi = bitcast<u32>(i32(hi_f));
    let old = atomicAdd(&acc[2u * slot], lo);
    var carry = 0u;
    if old + lo < old {
        carry = 1u;
    }
    let h = hi + carry;
    if h != 0u {
        atomicAdd(&acc[2u * slot + 1u], h);
    }
}

fn fx_get(slot: u32) -> f32 {
    let lo = atomicLoad(&acc[2u * slot]);
    let hi = atomicLoad(&acc[2u * slot + 1u]);
    if (hi & 0x80000000u) != 0u {
        let nlo = ~lo + 1u;
        var nhi = ~hi;
        if nlo == 0u {
            nhi = nhi + 1u;
        }
        return -(f32(nhi) + f32(nlo) * FX_INV);
    }
    return f32(hi) + f32(lo) * FX_INV;
}

// Screen-space barycentrics (λ0, λ1, λ2) of a pixel centre and the depth key; w = 0 when the
// centre is outside the triangle.
fn coverage(s: TriSetup, x: i32, y: i32) -> vec4<f32> {
    let dy = f32(y) + 0.5 - s.p0.y;
    let dx = f32(x) + 0.5 - s.p0.x;
    let l1 = dx * s.k.x - dy * s.k.y;
    let l2 = dy * s.k.z - dx * s.k.w;
    let l0 = 1.0 - l1 - l2;
    if l0 < INSIDE_EPS || l1 < INSIDE_EPS || l2 < INSIDE_EPS {
        return vec4<f32>(0.0, 0.0, 0.0, 0.0);
    }
    return vec4<f32>(l0, l1, l2, 1.0);
}

fn depth_key(s: TriSetup, l: vec4<f32>) -> f32 {
    return l.x * s.q.x + l.y * s.q.y + l.z * s.q.z;
}

// ---------------------------------------------------------------------------------------------
// Forward

// Clears the visibility buffer, the gradient accumulators and the per-render counters.
@compute @workgroup_size(64)
fn clear(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if i < params.num_pixels {
        atomicStore(&vis[2u * i], 0u);
        atomicStore(&vis[2u * i + 1u], NO_TRIANGLE);
    }
    if i < 12u * params.num_vertices {
        atomicStore(&acc[i], 0u);
    }
    if i == 0u {
        atomicStore(&acc[flag_word(FLAG_HOLES)], 0u);
        atomicStore(&acc[flag_word(FLAG_COVERED)], 0u);
    }
}

// Edge cross products (area-weighted face normals).
@compute @workgroup_size(64)
fn tri_cross(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = linear_group(wid, nwg) * WG + lid;
    if t >= params.num_triangles {
        return;
    }
    let tv = tri_vertices(t);
    let p0 = position(tv.x);
    let a = position(tv.y) - p0;
    let b = position(tv.z) - p0;
    tris[t].cross = vec4<f32>(cross3(a, b), 0.0);
}

// Normals (gathered over incident triangles), SH irradiance, shaded colour and projection.
@compute @workgroup_size(64)
fn vertex_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let v = linear_group(wid, nwg) * WG + lid;
    if v >= params.num_vertices {
        return;
    }
    let p = position(v);
    let a = albedo(v);
    if !(all_finite(p) && all_finite(a)) {
        atomicOr(&acc[flag_word(FLAG_ERRORS)], ERR_NONFINITE_INPUT);
    }
    var m = vec3<f32>(0.0);
    let e0 = mesh[params.adj_start_off + v];
    let e1 = mesh[params.adj_start_off + v + 1u];
    for (var e = e0; e < e1; e++) {
        let t = mesh[params.adj_off + e] / 3u;
        m = m + tris[t].cross.xyz;
    }
    let len = sqrt(dot3(m, m));
    var n = vec3<f32>(0.0);
    var inv_len = 0.0;
    if len > 1e-30 {
        inv_len = 1.0 / len;
        n = m * inv_len;
    }
    let b = sh_basis(n);
    var irr = vec3<f32>(0.0);
    for (var k = 0u; k < 9u; k++) {
        irr.x = irr.x + sh_coeff(k, 0u) * b[k];
        irr.y = irr.y + sh_coeff(k, 1u) * b[k];
        irr.z = irr.z + sh_coeff(k, 2u) * b[k];
    }
    var proj = vec4<f32>(0.0);
    var valid = 1.0;
    if params.perspective != 0u {
        let x = p.x + cam(4u);
        let y = p.y + cam(5u);
        let z = -(p.z + cam(6u));
        if z <= params.near || !is_finite(z) {
            valid = 0.0;
        } else {
            let w = 1.0 / z;
            proj = vec4<f32>(cam(2u) + cam(0u) * x * w, cam(3u) - cam(1u) * y * w, z, w);
        }
    } else {
        let s = cam(0u);
        proj = vec4<f32>(s * p.x + cam(1u), -s * p.y + cam(2u), p.z, 1.0);
    }
    vstate[v].normal = vec4<f32>(n, inv_len);
    vstate[v].irradiance = vec4<f32>(irr, valid);
    vstate[v].shade = vec4<f32>(a.x * irr.x, a.y * irr.y, a.z * irr.z, 0.0);
    vstate[v].proj = proj;
}

// Culling, pixel bounding box and interpolation set-up per triangle.
@compute @workgroup_size(64)
fn tri_setup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = linear_group(wid, nwg) * WG + lid;
    if t >= params.num_triangles {
        return;
    }
    tris[t].bbox = vec4<i32>(1, 0, 0, 0);
    let tv = tri_vertices(t);
    let s0 = vstate[tv.x];
    let s1 = vstate[tv.y];
    let s2 = vstate[tv.z];
    if s0.irradiance.w == 0.0 || s1.irradiance.w == 0.0 || s2.irradiance.w == 0.0 {
        return;
    }
    let p0 = s0.proj;
    let p1 = s1.proj;
    let p2 = s2.proj;
    let e1 = vec2<f32>(p1.x - p0.x, p1.y - p0.y);
    let e2 = vec2<f32>(p2.x - p0.x, p2.y - p0.y);
    let area = e1.x * e2.y - e1.y * e2.x;
    // Front faces have negative signed area in pixel coordinates (v points down).
    if area == 0.0 || !is_finite(area) || (params.cull_backfaces != 0u && area > 0.0) {
        return;
    }
    let wf = f32(params.width);
    let hf = f32(params.height);
    let umin = min(min(p0.x, p1.x), p2.x);
    let umax = max(max(p0.x, p1.x), p2.x);
    let vmin = min(min(p0.y, p1.y), p2.y);
    let vmax = max(max(p0.y, p1.y), p2.y);
    if umax < 0.0 || vmax < 0.0 || umin > wf || vmin > hf {
        return;
    }
    let x0 = i32(max(ceil(umin - 0.5), 0.0));
    let x1 = i32(min(floor(umax - 0.5), wf - 1.0));
    let y0 = i32(max(ceil(vmin - 0.5), 0.0));
    let y1 = i32(min(floor(vmax - 0.5), hf - 1.0));
    let ia = 1.0 / area;
    tris[t].bbox = vec4<i32>(x0, y0, x1, y1);
    tris[t].p0 = vec4<f32>(p0.x, p0.y, 0.0, 0.0);
    tris[t].k = vec4<f32>(e2.y * ia, e2.x * ia, e1.x * ia, e1.y * ia);
    if params.perspective != 0u {
        tris[t].q = vec4<f32>(p0.w, p1.w, p2.w, 0.0);
    } else {
        tris[t].q = vec4<f32>(p0.z, p1.z, p2.z, 0.0);
    }
}

// Rasterises triangle `t` over its pixel box. Pass 1 (`write_id` false) keeps the nearest depth
// key per pixel (larger key is nearer); pass 2 keeps, among the triangles at that key, the lowest
// index (the CPU reference's tie rule: first drawn wins).
fn raster(t: u32, write_id: bool) {
    if t >= params.num_triangles {
        return;
    }
    let s = tris[t];
    if s.bbox.x > s.bbox.z {
        return;
    }
    for (var y = s.bbox.y; y <= s.bbox.w; y++) {
        for (var x = s.bbox.x; x <= s.bbox.z; x++) {
            let l = coverage(s, x, y);
            if l.w == 0.0 {
                continue;
            }
            let key = depth_key(s, l);
            if !is_finite(key) {
                continue;
            }
            let i = u32(y) * params.width + u32(x);
            if !write_id {
                atomicMax(&vis[2u * i], order_key(key));
            } else if atomicLoad(&vis[2u * i]) == order_key(key) {
                atomicMin(&vis[2u * i + 1u], t);
            }
        }
    }
}

// Visibility, pass 1: the nearest depth key per pixel.
@compute @workgroup_size(64)
fn raster_depth(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    raster(linear_group(wid, nwg) * WG + lid, false);
}

// Visibility, pass 2: the front triangle's index at the nearest key.
@compute @workgroup_size(64)
fn raster_id(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    raster(linear_group(wid, nwg) * WG + lid, true);
}

// Perspective-correct barycentrics of pixel `i` in its front triangle.
fn pixel_bary(i: u32, t: u32) -> vec3<f32> {
    let s = tris[t];
    let x = i32(i % params.width);
    let y = i32(i / params.width);
    let l = coverage(s, x, y);
    if params.perspective != 0u {
        let key = depth_key(s, l);
        let ik = 1.0 / key;
        return vec3<f32>(l.x * s.q.x * ik, l.y * s.q.y * ik, l.z * s.q.z * ik);
    }
    return l.xyz;
}

// Shading, residual and penalty per pixel; workgroup sums of (w·ρ, w).
@compute @workgroup_size(64)
fn shade(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let i = g * WG + lid;
    var num = 0.0;
    var den = 0.0;
    if i < params.num_pixels {
        let t = atomicLoad(&vis[2u * i + 1u]);
        var covered = false;
        var c = vec3<f32>(0.0);
        if t != NO_TRIANGLE {
            let b = pixel_bary(i, t);
            let tv = tri_vertices(t);
            let c0 = vstate[tv.x].shade.xyz;
            let c1 = vstate[tv.y].shade.xyz;
            let c2 = vstate[tv.z].shade.xyz;
            c = vec3<f32>(
                b.x * c0.x + b.y * c1.x + b.z * c2.x,
                b.x * c0.y + b.y * c1.y + b.z * c2.y,
                b.x * c0.z + b.y * c1.z + b.z * c2.z,
            );
            pix[2u * i] = vec4<f32>(b, 0.0);
            covered = true;
            atomicAdd(&acc[flag_word(FLAG_COVERED)], 1u);
        } else {
            if atomicLoad(&vis[2u * i]) != 0u {
                atomicAdd(&acc[flag_word(FLAG_HOLES)], 1u);
            }
            pix[2u * i] = vec4<f32>(0.0);
        }
        if covered || params.has_background != 0u {
            if !covered {
                c = vec3<f32>(params.bg_r, params.bg_g, params.bg_b);
            }
            let tgt = target_px[i];
            let w = tgt.w;
            let r = c - tgt.xyz;
            let rho = penalty(r.x).x + penalty(r.y).x + penalty(r.z).x;
            pix[2u * i].w = w;
            pix[2u * i + 1u] = vec4<f32>(r, rho);
            num = w * rho;
            den = w;
        } else {
            pix[2u * i + 1u] = vec4<f32>(0.0);
        }
    }
    red[lid] = num;
    red[WG + lid] = den;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            red[lid] = red[lid] + red[lid + stride];
            red[WG + lid] = red[WG + lid] + red[WG + lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u && g < params.pixel_groups {
        partials[2u * g] = red[0];
        partials[2u * g + 1u] = red[WG];
    }
}

// Loss = Σ w·ρ / Σ w; also records the job tag and, after the last optimiser step, completion.
@compute @workgroup_size(64)
fn reduce_loss(@builtin(local_invocation_index) lid: u32) {
    var num = 0.0;
    var den = 0.0;
    for (var g = lid; g < params.pixel_groups; g += WG) {
        num = num + partials[2u * g];
        den = den + partials[2u * g + 1u];
    }
    red[lid] = num;
    red[WG + lid] = den;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            red[lid] = red[lid] + red[lid + stride];
            red[WG + lid] = red[WG + lid] + red[WG + lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        let n = red[0];
        let d = red[WG];
        var loss = 0.0;
        var inv_w = 0.0;
        if d > 0.0 {
            loss = n / d;
            inv_w = 1.0 / d;
        }
        state[ST_TAG] = params.job_tag;
        state[ST_PHOTOMETRIC] = bitcast<u32>(loss);
        state[ST_WEIGHT_SUM] = bitcast<u32>(d);
        state[ST_INV_W] = bitcast<u32>(inv_w);
        if state[ST_STEPS] >= params.total_steps {
            state[ST_FINAL] = 1u;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward

// Per pixel: dL/dC (before the 1/Σw normalisation, applied when the accumulators are read),
// back-propagated to the colour, screen position and depth of its triangle's corners and added
// to their fixed-point accumulators (6 per vertex: colour rgb, u, v, z).
@compute @workgroup_size(64)
fn backward_pixels(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if i >= params.num_pixels {
        return;
    }
    let t = atomicLoad(&vis[2u * i + 1u]);
    let bw = pix[2u * i];
    let w = bw.w;
    if t == NO_TRIANGLE || w == 0.0 {
        return;
    }
    let r = pix[2u * i + 1u].xyz;
    let g = vec3<f32>(w * penalty(r.x).y, w * penalty(r.y).y, w * penalty(r.z).y);
    let b = array<f32, 3>(bw.x, bw.y, bw.z);
    let p = vec2<f32>(f32(i % params.width) + 0.5, f32(i / params.width) + 0.5);
    let tv = tri_vertices(t);
    let ids = array<u32, 3>(tv.x, tv.y, tv.z);
    let vs = array<VertexState, 3>(vstate[tv.x], vstate[tv.y], vstate[tv.z]);
    var gb = array<f32, 3>(0.0, 0.0, 0.0);
    for (var k = 0u; k < 3u; k++) {
        let c = vs[k].shade;
        gb[k] = g.x * c.x + g.y * c.y + g.z * c.z;
        let o = 6u * ids[k];
        fx_add(o, b[k] * g.x);
        fx_add(o + 1u, b[k] * g.y);
        fx_add(o + 2u, b[k] * g.z);
    }
    // Through the perspective correction b_k = λ_k w_k / Σ_j λ_j w_j.
    var lam = b;
    var glam = gb;
    var gz = array<f32, 3>(0.0, 0.0, 0.0);
    if params.perspective != 0u {
        let z = array<f32, 3>(vs[0].proj.z, vs[1].proj.z, vs[2].proj.z);
        let bz = b[0] * z[0] + b[1] * z[1] + b[2] * z[2];
        let gbar = gb[0] * b[0] + gb[1] * b[1] + gb[2] * b[2];
        let ibz = 1.0 / bz;
        for (var k = 0u; k < 3u; k++) {
            let tk = gb[k] - gbar;
            lam[k] = b[k] * z[k] * ibz;
            glam[k] = tk * bz / z[k];
            gz[k] = -b[k] * tk / z[k];
        }
    }
    // Through the screen-space barycentrics λ_k = E_k(p) / A.
    let gl_bar = glam[0] * lam[0] + glam[1] * lam[1] + glam[2] * lam[2];
    let h = array<f32, 3>(glam[0] - gl_bar, glam[1] - gl_bar, glam[2] - gl_bar);
    let a = array<vec2<f32>, 3>(
        vec2<f32>(vs[0].proj.x - p.x, vs[0].proj.y - p.y),
        vec2<f32>(vs[1].proj.x - p.x, vs[1].proj.y - p.y),
        vec2<f32>(vs[2].proj.x - p.x, vs[2].proj.y - p.y),
    );
    let area = (a[1].x - a[0].x) * (a[2].y - a[0].y) - (a[1].y - a[0].y) * (a[2].x - a[0].x);
    let ia = 1.0 / area;
    for (var j = 0u; j < 3u; j++) {
        let j1 = (j + 1u) % 3u;
        let j2 = (j + 2u) % 3u;
        let gx = (-h[j1] * a[j2].y + h[j2] * a[j1].y) * ia;
        let gy = (h[j1] * a[j2].x - h[j2] * a[j1].x) * ia;
        let o = 6u * ids[j];
        fx_add(o + 3u, gx);
        fx_add(o + 4u, gy);
        fx_add(o + 5u, gz[j]);
    }
}

// Per vertex: albedo gradient, SH and camera partial sums, the gradient with respect to the
// area-weighted normal sum, and the vertex gradient through the projection.
@compute @workgroup_size(64)
fn backward_vertices(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let grp = linear_group(wid, nwg);
    let v = grp * WG + lid;
    for (var k = 0u; k < PARTIALS; k++) {
        red[k * WG + lid] = 0.0;
    }
    if v < params.num_vertices {
        let inv_w = bitcast<f32>(state[ST_INV_W]);
        var g = array<f32, 6>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        var nonzero = false;
        for (var k = 0u; k < 6u; k++) {
            g[k] = fx_get(6u * v + k) * inv_w;
            nonzero = nonzero || g[k] != 0.0;
        }
        let vs = vstate[v];
        let ao = VERT_OFF + 3u * params.num_vertices + 3u * v;
        grads[ao] = g[0] * vs.irradiance.x;
        grads[ao + 1u] = g[1] * vs.irradiance.y;
        grads[ao + 2u] = g[2] * vs.irradiance.z;
        let vo = VERT_OFF + 3u * v;
        if !nonzero {
            grads[vo] = 0.0;
            grads[vo + 1u] = 0.0;
            grads[vo + 2u] = 0.0;
            vgrad[v] = vec4<f32>(0.0);
        } else {
            let a = albedo(v);
            let gca = vec3<f32>(g[0] * a.x, g[1] * a.y, g[2] * a.z);
            let nn = vs.normal.xyz;
            let basis = sh_basis(nn);
            var q = array<f32, 9>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
            for (var k = 0u; k < 9u; k++) {
                red[(3u * k) * WG + lid] = gca.x * basis[k];
                red[(3u * k + 1u) * WG + lid] = gca.y * basis[k];
                red[(3u * k + 2u) * WG + lid] = gca.z * basis[k];
                q[k] = q[k] + gca.x * sh_coeff(k, 0u);
                q[k] = q[k] + gca.y * sh_coeff(k, 1u);
                q[k] = q[k] + gca.z * sh_coeff(k, 2u);
            }
            let gn = sh_basis_vjp(nn, q);
            let d = dot3(gn, nn);
            vgrad[v] = vec4<f32>((gn - nn * d) * vs.normal.w, 0.0);
            // Projection backward (visage_core::render::Camera::project_backward).
            let p = position(v);
            let gu = g[3];
            let gv = g[4];
            let gzv = g[5];
            var gp = vec3<f32>(0.0);
            if params.perspective != 0u {
                let fx = cam(0u);
                let fy = cam(1u);
                let x = p.x + cam(4u);
                let y = p.y + cam(5u);
                let z = -(p.z + cam(6u));
                let w = 1.0 / z;
                let gx = gu * fx * w;
                let gy = -gv * fy * w;
                let gzc = (gu * fx * x - gv * fy * y) * w * w - gzv;
                red[(27u) * WG + lid] = gu * x * w;
                red[(28u) * WG + lid] = -(gv * y * w);
                red[(29u) * WG + lid] = gu;
                red[(30u) * WG + lid] = gv;
                red[(31u) * WG + lid] = gx;
                red[(32u) * WG + lid] = gy;
                red[(33u) * WG + lid] = gzc;
                gp = vec3<f32>(gx, gy, gzc);
            } else {
                let s = cam(0u);
                red[(27u) * WG + lid] = gu * p.x - gv * p.y;
                red[(28u) * WG + lid] = gu;
                red[(29u) * WG + lid] = gv;
                gp = vec3<f32>(gu * s, -gv * s, 0.0);
            }
            grads[vo] = gp.x;
            grads[vo + 1u] = gp.y;
            grads[vo + 2u] = gp.z;
        }
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            for (var k = 0u; k < PARTIALS; k++) {
                red[k * WG + lid] = red[k * WG + lid] + red[k * WG + lid + stride];
            }
        }
        workgroupBarrier();
    }
    if lid < PARTIALS && grp < params.vertex_groups {
        partials[PARTIALS * grp + lid] = red[lid * WG];
    }
}

// Per vertex: the gradient through the area-weighted normals (gathered over incident triangles),
// added to the projection part.
@compute @workgroup_size(64)
fn backward_normals(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let v = linear_group(wid, nwg) * WG + lid;
    if v >= params.num_vertices {
        return;
    }
    var sum = vec3<f32>(0.0);
    let e0 = mesh[params.adj_start_off + v];
    let e1 = mesh[params.adj_start_off + v + 1u];
    for (var e = e0; e < e1; e++) {
        let ec = mesh[params.adj_off + e];
        let tv = tri_vertices(ec / 3u);
        let gt = (vgrad[tv.x].xyz + vgrad[tv.y].xyz) + vgrad[tv.z].xyz;
        if gt.x == 0.0 && gt.y == 0.0 && gt.z == 0.0 {
            continue;
        }
        let p0 = position(tv.x);
        let a = position(tv.y) - p0;
        let b = position(tv.z) - p0;
        let ga = cross3(b, gt);
        let gb = cross3(gt, a);
        let corner = ec % 3u;
        if corner == 0u {
            sum = sum + (ga + gb) * -1.0;
        } else if corner == 1u {
            sum = sum + ga;
        } else {
            sum = sum + gb;
        }
    }
    let vo = VERT_OFF + 3u * v;
    grads[vo] = grads[vo] + sum.x;
    grads[vo + 1u] = grads[vo + 1u] + sum.y;
    grads[vo + 2u] = grads[vo + 2u] + sum.z;
}

// SH and camera gradients: one workgroup per scalar, summing the per-workgroup partials.
@compute @workgroup_size(64)
fn reduce_grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = wid.x;
    var s = 0.0;
    for (var g = lid; g < params.vertex_groups; g += WG) {
        s = s + partials[PARTIALS * g + k];
    }
    red[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            red[lid] = red[lid] + red[lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        grads[k] = red[0];
    }
}

// ---------------------------------------------------------------------------------------------
// Adam

fn group_of(i: u32) -> u32 {
    if i < CAM_OFF {
        return 2u;
    }
    if i < VERT_OFF {
        return 3u;
    }
    if i < VERT_OFF + 3u * params.num_vertices {
        return 0u;
    }
    return 1u;
}

// One Adam update of every optimised parameter, with the L2 pull towards the initial values;
// workgroup sums of the regulariser.
@compute @workgroup_size(64)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let grp = linear_group(wid, nwg);
    let i = grp * WG + lid;
    var reg = 0.0;
    if i < params.num_params {
        let st = steps[state[ST_STEPS]];
        let gi = group_of(i);
        var on = (st.groups_on & (1u << gi)) != 0u;
        if gi == 3u {
            on = on && (st.camera_mask & (1u << (i - CAM_OFF))) != 0u;
        }
        if on {
            let n = params.num_params;
            let l2 = st.l2[gi];
            let th = theta[i];
            let d = th - opt[2u * n + i];
            let g = params.photometric_weight * grads[i] + 2.0 * l2 * d;
            reg = l2 * (d * d);
            var m = opt[i];
            var v = opt[n + i];
            if st.first_step != 0u {
                m = 0.0;
                v = 0.0;
            }
            let b1 = params.beta1;
            let b2 = params.beta2;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            opt[i] = m;
            opt[n + i] = v;
            theta[i] = th - st.lr_step[gi] * m / (sqrt(v * st.inv_bc2) + params.eps);
        }
    }
    red[lid] = reg;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            red[lid] = red[lid] + red[lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u && grp < params.param_groups {
        partials[grp] = red[0];
    }
}

// Objective of the step (weighted loss + regularisers, before the update) into the history;
// advances the step counter (the generation number the CPU side reads back).
@compute @workgroup_size(64)
fn finish_step(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var g = lid; g < params.param_groups; g += WG) {
        s = s + partials[g];
    }
    red[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            red[lid] = red[lid] + red[lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        let done = state[ST_STEPS];
        let photometric = bitcast<f32>(state[ST_PHOTOMETRIC]);
        let objective = params.photometric_weight * photometric + red[0];
        state[ST_HISTORY + 2u * done] = bitcast<u32>(objective);
        state[ST_HISTORY + 2u * done + 1u] = bitcast<u32>(photometric);
        state[ST_STEPS] = done + 1u;
    }
}
