//! Camera models of the photometric pass and their derivatives.
//!
//! Conventions (see `docs/photometric.md`):
//! - The camera frame is the view frame of OpenGL: `x` right, `y` up, the camera at the origin
//!   looking down `−Z`. Vertices arrive in this frame, in metres (the FLAME forward pass with its
//!   global pose and translation already applied). A head at the origin of its own frame facing
//!   `+Z` is therefore seen frontally once it is translated to negative `z`.
//! - Pixel coordinates are those of OpenCV: origin at the top-left corner of the image, `u` to the
//!   right, `v` down, the centre of pixel `(x, y)` at `(x + 0.5, y + 0.5)`.

use serde::{Deserialize, Serialize};

/// Number of slots of the flat camera parameter vector ([`Camera::params`]).
pub const CAMERA_PARAMS: usize = 7;

/// A camera that maps camera-frame points (metres) to pixel coordinates.
///
/// The same value type holds the gradient of the loss with respect to the camera: in
/// [`Gradients::camera`](super::Gradients::camera) every field is the partial derivative of the
/// loss with respect to that field.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Camera {
    /// Pinhole camera. A camera-frame point `X = p + translation` with view depth
    /// `z = −X.z > 0` projects to `u = cx + fx·X.x / z`, `v = cy − fy·X.y / z`.
    Perspective {
        /// Horizontal focal length, pixels.
        fx: f32,
        /// Vertical focal length, pixels.
        fy: f32,
        /// Principal point, horizontal, pixels.
        cx: f32,
        /// Principal point, vertical (down), pixels.
        cy: f32,
        /// Translation added to every vertex before projection, metres.
        translation: [f32; 3],
    },
    /// Scaled orthographic camera: `u = scale·p.x + offset[0]`, `v = −scale·p.y + offset[1]`.
    /// Depth order comes from `p.z` (larger is nearer).
    WeakPerspective {
        /// Pixels per metre.
        scale: f32,
        /// Image position of the frame origin, pixels.
        offset: [f32; 2],
    },
}

impl Camera {
    /// A perspective camera with a square-pixel focal length `focal` and the principal point at the
    /// centre of a `width × height` image, with no translation.
    pub fn perspective_centered(focal: f32, width: u32, height: u32) -> Self {
        Camera::Perspective {
            fx: focal,
            fy: focal,
            cx: width as f32 * 0.5,
            cy: height as f32 * 0.5,
            translation: [0.0; 3],
        }
    }

    /// Whether this is the perspective model.
    pub fn is_perspective(&self) -> bool {
        matches!(self, Camera::Perspective { .. })
    }

    /// The same camera model with every parameter zero (the neutral element for accumulating
    /// gradients).
    pub fn zeroed(&self) -> Self {
        match self {
            Camera::Perspective { .. } => Camera::Perspective {
                fx: 0.0,
                fy: 0.0,
                cx: 0.0,
                cy: 0.0,
                translation: [0.0; 3],
            },
            Camera::WeakPerspective { .. } => Camera::WeakPerspective {
                scale: 0.0,
                offset: [0.0; 2],
            },
        }
    }

    /// Number of meaningful slots in [`Camera::params`]: 7 for perspective, 3 for weak
    /// perspective.
    pub fn num_params(&self) -> usize {
        match self {
            Camera::Perspective { .. } => 7,
            Camera::WeakPerspective { .. } => 3,
        }
    }

    /// Flat parameter vector: perspective `[fx, fy, cx, cy, tx, ty, tz]`; weak perspective
    /// `[scale, offset_u, offset_v, 0, 0, 0, 0]`. This is the layout a GPU buffer uses.
    pub fn params(&self) -> [f32; CAMERA_PARAMS] {
        match *self {
            Camera::Perspective {
                fx,
                fy,
                cx,
                cy,
                translation: t,
            } => [fx, fy, cx, cy, t[0], t[1], t[2]],
            Camera::WeakPerspective { scale, offset } => {
                [scale, offset[0], offset[1], 0.0, 0.0, 0.0, 0.0]
            }
        }
    }

    /// Overwrites the parameters from the flat layout of [`Camera::params`] (the model stays).
    pub fn set_params(&mut self, p: &[f32; CAMERA_PARAMS]) {
        match self {
            Camera::Perspective {
                fx,
                fy,
                cx,
                cy,
                translation,
            } => {
                *fx = p[0];
                *fy = p[1];
                *cx = p[2];
                *cy = p[3];
                *translation = [p[4], p[5], p[6]];
            }
            Camera::WeakPerspective { scale, offset } => {
                *scale = p[0];
                *offset = [p[1], p[2]];
            }
        }
    }

    /// Which flat slots (of [`Camera::params`]) belong to the focal length (scale), the
    /// principal point (weak perspective: none) and the translation (weak perspective: the
    /// 2-D offset). The CPU fitter and the GPU pass both select camera parameters with it.
    pub fn slot_mask(&self, focal: bool, principal: bool, translation: bool) -> [bool; 7] {
        match self {
            Camera::Perspective { .. } => [
                focal,
                focal,
                principal,
                principal,
                translation,
                translation,
                translation,
            ],
            Camera::WeakPerspective { .. } => {
                [focal, translation, translation, false, false, false, false]
            }
        }
    }

    /// Checks that the camera can project: finite parameters and a positive focal length/scale.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        let p = self.params();
        if p.iter().any(|x| !x.is_finite()) {
            return Err("the camera parameters contain NaN or infinity");
        }
        match self {
            Camera::Perspective { fx, fy, .. } if *fx <= 0.0 || *fy <= 0.0 => {
                Err("the focal length must be positive")
            }
            Camera::WeakPerspective { scale, .. } if *scale <= 0.0 => {
                Err("the weak-perspective scale must be positive")
            }
            _ => Ok(()),
        }
    }

    /// Projects one vertex. Returns `[u, v, z, w]`: pixel coordinates, then for perspective the
    /// view depth `z` and `w = 1/z`; for weak perspective `z = p.z` and `w = 1`. `None` when a
    /// perspective point is not in front of the near plane.
    #[inline(always)]
    pub(crate) fn project(&self, p: [f32; 3], near: f32) -> Option<[f32; 4]> {
        match *self {
            Camera::Perspective {
                fx,
                fy,
                cx,
                cy,
                translation: t,
            } => {
                let x = p[0] + t[0];
                let y = p[1] + t[1];
                let z = -(p[2] + t[2]);
                if z <= near || !z.is_finite() {
                    return None;
                }
                let w = 1.0 / z;
                Some([cx + fx * x * w, cy - fy * y * w, z, w])
            }
            Camera::WeakPerspective { scale, offset } => Some([
                scale * p[0] + offset[0],
                -scale * p[1] + offset[1],
                p[2],
                1.0,
            ]),
        }
    }

    /// Back-propagates `(g_u, g_v, g_z)` at one vertex (with `z` as returned by
    /// [`Camera::project`]) to the vertex position (returned) and to the camera parameters
    /// (accumulated into `gcam`, flat layout).
    #[inline(always)]
    pub(crate) fn project_backward(
        &self,
        p: [f32; 3],
        g: [f32; 3],
        gcam: &mut [f32; CAMERA_PARAMS],
    ) -> [f32; 3] {
        let [gu, gv, gz] = g;
        match *self {
            Camera::Perspective {
                fx,
                fy,
                translation: t,
                ..
            } => {
                let x = p[0] + t[0];
                let y = p[1] + t[1];
                let z = -(p[2] + t[2]);
                let w = 1.0 / z;
                let gx = gu * fx * w;
                let gy = -gv * fy * w;
                let gzc = (gu * fx * x - gv * fy * y) * w * w - gz;
                gcam[0] += gu * x * w;
                gcam[1] -= gv * y * w;
                gcam[2] += gu;
                gcam[3] += gv;
                gcam[4] += gx;
                gcam[5] += gy;
                gcam[6] += gzc;
                [gx, gy, gzc]
            }
            Camera::WeakPerspective { scale, .. } => {
                gcam[0] += gu * p[0] - gv * p[1];
                gcam[1] += gu;
                gcam[2] += gv;
                [gu * scale, -gv * scale, 0.0]
            }
        }
    }
}
