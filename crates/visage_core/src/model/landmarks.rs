//! Landmark embeddings: points fixed on the surface by a triangle and barycentric coordinates.
//!
//! The FLAME 68-point embedding has 51 static points (iBUG points 17–67) and a 17-point jaw
//! contour that depends on the head's yaw: the contour a camera sees slides over the cheek as
//! the head turns, so FLAME stores one contour per integer yaw angle. [`Landmarks68`] follows
//! FLAME's convention for choosing the row (see [`Landmarks68::yaw_bin`]).

use super::geometry::barycentric_point;

/// Landmarks given as a triangle index and barycentric coordinates each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BaryLandmarks {
    /// Triangle of each landmark.
    pub faces: Vec<u32>,
    /// Barycentric coordinates of each landmark in its triangle (summing to one).
    pub bary: Vec<[f32; 3]>,
}

impl BaryLandmarks {
    /// Number of landmarks.
    pub fn len(&self) -> usize {
        self.faces.len()
    }

    /// Whether there are no landmarks.
    pub fn is_empty(&self) -> bool {
        self.faces.is_empty()
    }

    /// Positions of the landmarks on a mesh with the model's triangles, written into `out`.
    pub fn evaluate_into(
        &self,
        vertices: &[[f32; 3]],
        triangles: &[[u32; 3]],
        out: &mut [[f32; 3]],
    ) {
        for ((o, &f), &b) in out.iter_mut().zip(&self.faces).zip(&self.bary) {
            *o = barycentric_point(vertices, triangles[f as usize], b);
        }
    }

    /// Positions of the landmarks on a mesh with the model's triangles.
    pub fn evaluate(&self, vertices: &[[f32; 3]], triangles: &[[u32; 3]]) -> Vec<[f32; 3]> {
        let mut out = vec![[0.0; 3]; self.len()];
        self.evaluate_into(vertices, triangles, &mut out);
        out
    }

    pub(crate) fn validate(&self, label: &str, num_triangles: usize) -> Result<(), String> {
        if self.faces.len() != self.bary.len() {
            return Err(format!(
                "the {label} landmarks have {} triangles but {} barycentric triples",
                self.faces.len(),
                self.bary.len()
            ));
        }
        if self.faces.iter().any(|&f| f as usize >= num_triangles) {
            return Err(format!("a {label} landmark refers to a missing triangle"));
        }
        if self
            .bary
            .iter()
            .any(|b| (b[0] + b[1] + b[2] - 1.0).abs() > 1e-3)
        {
            return Err(format!(
                "a {label} landmark's barycentric coordinates do not sum to one"
            ));
        }
        Ok(())
    }
}

/// Number of jaw-contour landmarks (iBUG points 0–16).
pub const CONTOUR_POINTS: usize = 17;

/// The FLAME 68-point embedding: 51 static points and a yaw-dependent 17-point jaw contour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Landmarks68 {
    /// iBUG points 17–67.
    pub static_points: BaryLandmarks,
    /// Jaw contour per yaw bin, bin-major: entry `bin * 17 + i` is contour point `i` of `bin`.
    pub dynamic: BaryLandmarks,
}

impl Landmarks68 {
    /// Number of yaw bins of the dynamic contour (79 in FLAME: one per degree in −39..=39).
    pub fn num_bins(&self) -> usize {
        self.dynamic.len() / CONTOUR_POINTS
    }

    /// The contour row for a head yaw of `yaw_degrees`. Yaw is the head's rotation about +y;
    /// positive turns the face towards +x (the subject's left). The rule is FLAME's: the angle is
    /// negated and rounded, `y = round(min(-yaw, 39))`; non-negative `y` selects row `y`
    /// (0..=39), negative `y` selects row `39 - y` (40..=78), and `y < -39` row 78.
    pub fn yaw_bin(&self, yaw_degrees: f32) -> usize {
        if !yaw_degrees.is_finite() {
            return 0;
        }
        let y = (-yaw_degrees).min(39.0).round() as i64;
        let bin = if y >= 0 {
            y
        } else if y < -39 {
            78
        } else {
            39 - y
        };
        (bin.max(0) as usize).min(self.num_bins().saturating_sub(1))
    }

    /// The 68 landmarks (iBUG order) on a posed mesh, using the contour for `yaw_degrees`.
    pub fn evaluate_into(
        &self,
        vertices: &[[f32; 3]],
        triangles: &[[u32; 3]],
        yaw_degrees: f32,
        out: &mut [[f32; 3]; 68],
    ) {
        let bin = self.yaw_bin(yaw_degrees);
        let (contour, inner) = out.split_at_mut(CONTOUR_POINTS);
        for (i, o) in contour.iter_mut().enumerate() {
            let k = bin * CONTOUR_POINTS + i;
            *o = barycentric_point(
                vertices,
                triangles[self.dynamic.faces[k] as usize],
                self.dynamic.bary[k],
            );
        }
        self.static_points.evaluate_into(vertices, triangles, inner);
    }

    /// The 68 landmarks (iBUG order) on a posed mesh, using the contour for `yaw_degrees`.
    pub fn evaluate(
        &self,
        vertices: &[[f32; 3]],
        triangles: &[[u32; 3]],
        yaw_degrees: f32,
    ) -> [[f32; 3]; 68] {
        let mut out = [[0.0; 3]; 68];
        self.evaluate_into(vertices, triangles, yaw_degrees, &mut out);
        out
    }

    pub(crate) fn validate(&self, num_triangles: usize) -> Result<(), String> {
        self.static_points
            .validate("68-point static", num_triangles)?;
        self.dynamic.validate("68-point contour", num_triangles)?;
        if self.static_points.len() != 68 - CONTOUR_POINTS {
            return Err(format!(
                "the 68-point embedding has {} static points, expected 51",
                self.static_points.len()
            ));
        }
        if self.dynamic.is_empty() || !self.dynamic.len().is_multiple_of(CONTOUR_POINTS) {
            return Err(format!(
                "the 68-point contour has {} points, not a positive multiple of 17",
                self.dynamic.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lm(bins: usize) -> Landmarks68 {
        Landmarks68 {
            static_points: BaryLandmarks {
                faces: vec![0; 51],
                bary: vec![[1.0, 0.0, 0.0]; 51],
            },
            dynamic: BaryLandmarks {
                faces: vec![0; 17 * bins],
                bary: vec![[1.0, 0.0, 0.0]; 17 * bins],
            },
        }
    }

    #[test]
    fn yaw_bins_follow_flame_convention() {
        let l = lm(79);
        assert_eq!(l.yaw_bin(0.0), 0);
        assert_eq!(l.yaw_bin(-10.2), 10);
        assert_eq!(l.yaw_bin(-80.0), 39);
        assert_eq!(l.yaw_bin(1.0), 40);
        assert_eq!(l.yaw_bin(39.0), 78);
        assert_eq!(l.yaw_bin(60.0), 78);
        assert_eq!(l.yaw_bin(f32::NAN), 0);
    }
}
