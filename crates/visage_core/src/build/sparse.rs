//! A minimal compressed-sparse-row matrix and a Jacobi-preconditioned conjugate-gradient
//! solver, enough for the Laplacian systems of the model builder (a few thousand unknowns).
//! Sequential on purpose: the result is bit-for-bit reproducible.

/// A sparse matrix in compressed-sparse-row form.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrMatrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row start offsets into `indices`/`values` (`rows + 1` entries).
    pub offsets: Vec<usize>,
    /// Column index of each stored value, ascending within a row.
    pub indices: Vec<usize>,
    /// Stored values.
    pub values: Vec<f64>,
}

impl CsrMatrix {
    /// Builds a matrix from `(row, col, value)` triplets; duplicates are summed.
    pub fn from_triplets(rows: usize, cols: usize, mut trip: Vec<(usize, usize, f64)>) -> Self {
        trip.sort_by_key(|a| (a.0, a.1));
        let mut offsets = vec![0; rows + 1];
        let mut indices = Vec::with_capacity(trip.len());
        let mut values: Vec<f64> = Vec::with_capacity(trip.len());
        let mut last: Option<(usize, usize)> = None;
        for (r, c, v) in trip {
            if last == Some((r, c)) {
                if let Some(x) = values.last_mut() {
                    *x += v;
                }
            } else {
                indices.push(c);
                values.push(v);
                offsets[r + 1] += 1;
                last = Some((r, c));
            }
        }
        for r in 0..rows {
            offsets[r + 1] += offsets[r];
        }
        Self {
            rows,
            cols,
            offsets,
            indices,
            values,
        }
    }

    /// A diagonal matrix.
    pub fn diagonal(d: &[f64]) -> Self {
        Self::from_triplets(
            d.len(),
            d.len(),
            d.iter().enumerate().map(|(i, &x)| (i, i, x)).collect(),
        )
    }

    /// `y = A x`.
    pub fn mul_vec(&self, x: &[f64], y: &mut [f64]) {
        for (r, yr) in y.iter_mut().enumerate().take(self.rows) {
            let mut s = 0.0;
            for k in self.offsets[r]..self.offsets[r + 1] {
                s += self.values[k] * x[self.indices[k]];
            }
            *yr = s;
        }
    }

    /// `A x` as a new vector.
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; self.rows];
        self.mul_vec(x, &mut y);
        y
    }

    /// The transpose.
    pub fn transpose(&self) -> Self {
        let mut trip = Vec::with_capacity(self.values.len());
        for r in 0..self.rows {
            for k in self.offsets[r]..self.offsets[r + 1] {
                trip.push((self.indices[k], r, self.values[k]));
            }
        }
        Self::from_triplets(self.cols, self.rows, trip)
    }

    /// The product `A B`.
    pub fn matmul(&self, b: &CsrMatrix) -> Self {
        let mut trip = Vec::new();
        for r in 0..self.rows {
            for k in self.offsets[r]..self.offsets[r + 1] {
                let (m, a) = (self.indices[k], self.values[k]);
                for q in b.offsets[m]..b.offsets[m + 1] {
                    trip.push((r, b.indices[q], a * b.values[q]));
                }
            }
        }
        Self::from_triplets(self.rows, b.cols, trip)
    }

    /// `alpha A + beta B` (same shape).
    pub fn add_scaled(&self, alpha: f64, b: &CsrMatrix, beta: f64) -> Self {
        let mut trip = Vec::with_capacity(self.values.len() + b.values.len());
        for (m, s) in [(self, alpha), (b, beta)] {
            for r in 0..m.rows {
                for k in m.offsets[r]..m.offsets[r + 1] {
                    trip.push((r, m.indices[k], s * m.values[k]));
                }
            }
        }
        Self::from_triplets(self.rows, self.cols, trip)
    }

    /// The diagonal entries.
    pub fn diag(&self) -> Vec<f64> {
        let mut d = vec![0.0; self.rows.min(self.cols)];
        for (r, dr) in d.iter_mut().enumerate() {
            for k in self.offsets[r]..self.offsets[r + 1] {
                if self.indices[k] == r {
                    *dr += self.values[k];
                }
            }
        }
        d
    }
}

/// Outcome of a conjugate-gradient solve.
#[derive(Debug, Clone, Copy)]
pub struct CgInfo {
    /// Iterations run.
    pub iterations: usize,
    /// Final relative residual `|b - A x| / |b|`.
    pub relative_residual: f64,
}

/// Solves `A x = b` for symmetric positive-definite `A` by Jacobi-preconditioned conjugate
/// gradients, starting from the `x` given; stops at `max_iter` or a relative residual `tol`.
pub fn conjugate_gradient(
    a: &CsrMatrix,
    b: &[f64],
    x: &mut [f64],
    max_iter: usize,
    tol: f64,
) -> CgInfo {
    let n = b.len();
    let inv_d: Vec<f64> = a
        .diag()
        .iter()
        .map(|&d| if d.abs() > 1e-300 { 1.0 / d } else { 1.0 })
        .collect();
    let mut r = vec![0.0; n];
    a.mul_vec(x, &mut r);
    for i in 0..n {
        r[i] = b[i] - r[i];
    }
    let bnorm = b.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
    let mut z: Vec<f64> = (0..n).map(|i| r[i] * inv_d[i]).collect();
    let mut p = z.clone();
    let mut ap = vec![0.0; n];
    let mut rz: f64 = (0..n).map(|i| r[i] * z[i]).sum();
    let mut rel = r.iter().map(|v| v * v).sum::<f64>().sqrt() / bnorm;
    let mut it = 0;
    while it < max_iter && rel > tol {
        a.mul_vec(&p, &mut ap);
        let pap: f64 = (0..n).map(|i| p[i] * ap[i]).sum();
        if pap <= 0.0 {
            break;
        }
        let alpha = rz / pap;
        for i in 0..n {
            x[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
        }
        rel = r.iter().map(|v| v * v).sum::<f64>().sqrt() / bnorm;
        for i in 0..n {
            z[i] = r[i] * inv_d[i];
        }
        let rz_new: f64 = (0..n).map(|i| r[i] * z[i]).sum();
        let beta = rz_new / rz;
        rz = rz_new;
        for i in 0..n {
            p[i] = z[i] + beta * p[i];
        }
        it += 1;
    }
    CgInfo {
        iterations: it,
        relative_residual: rel,
    }
}

/// Solves the harmonic (Laplace) interpolation problem on a graph: values are fixed at the
/// constrained vertices (`fixed[i] = Some(value)`) and every other vertex becomes the average
/// of its neighbours (`L x = 0` on free vertices). Vertices in components without any
/// constraint get zero.
pub fn harmonic_interpolation(
    laplacian: &CsrMatrix,
    fixed: &[Option<f64>],
    max_iter: usize,
) -> Vec<f64> {
    let n = fixed.len();
    let mut free_index = vec![usize::MAX; n];
    let mut free = Vec::new();
    for i in 0..n {
        if fixed[i].is_none() {
            free_index[i] = free.len();
            free.push(i);
        }
    }
    // L_ff x_f = -L_fc x_c ; a tiny diagonal shift keeps unconstrained components solvable.
    let mut trip = Vec::new();
    let mut rhs = vec![0.0; free.len()];
    for (fi, &i) in free.iter().enumerate() {
        for k in laplacian.offsets[i]..laplacian.offsets[i + 1] {
            let j = laplacian.indices[k];
            let v = laplacian.values[k];
            match fixed[j] {
                Some(c) => rhs[fi] -= v * c,
                None => trip.push((fi, free_index[j], v)),
            }
        }
        trip.push((fi, fi, 1e-9));
    }
    let a = CsrMatrix::from_triplets(free.len(), free.len(), trip);
    let mut x = vec![0.0; free.len()];
    conjugate_gradient(&a, &rhs, &mut x, max_iter, 1e-12);
    let mut out = vec![0.0; n];
    for i in 0..n {
        out[i] = match fixed[i] {
            Some(c) => c,
            None => x[free_index[i]],
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cg_solves_a_small_spd_system() {
        // 1D Laplacian + identity.
        let n = 50;
        let mut trip = Vec::new();
        for i in 0..n {
            trip.push((i, i, 3.0));
            if i > 0 {
                trip.push((i, i - 1, -1.0));
            }
            if i + 1 < n {
                trip.push((i, i + 1, -1.0));
            }
        }
        let a = CsrMatrix::from_triplets(n, n, trip);
        let truth: Vec<f64> = (0..n).map(|i| (i as f64 * 0.3).sin()).collect();
        let b = a.apply(&truth);
        let mut x = vec![0.0; n];
        let info = conjugate_gradient(&a, &b, &mut x, 500, 1e-12);
        assert!(info.relative_residual < 1e-10);
        for i in 0..n {
            assert!((x[i] - truth[i]).abs() < 1e-9);
        }
        let at = a.transpose();
        assert_eq!(at, a);
        let a2 = a.matmul(&a);
        let y = a2.apply(&truth);
        let y2 = a.apply(&a.apply(&truth));
        assert!(y.iter().zip(&y2).all(|(p, q)| (p - q).abs() < 1e-12));
    }

    #[test]
    fn harmonic_interpolation_is_linear_on_a_path() {
        let n = 11;
        let mut trip = Vec::new();
        for i in 0..n {
            let deg = if i == 0 || i == n - 1 { 1.0 } else { 2.0 };
            trip.push((i, i, deg));
            if i > 0 {
                trip.push((i, i - 1, -1.0));
            }
            if i + 1 < n {
                trip.push((i, i + 1, -1.0));
            }
        }
        let l = CsrMatrix::from_triplets(n, n, trip);
        let mut fixed = vec![None; n];
        fixed[0] = Some(0.0);
        fixed[n - 1] = Some(1.0);
        let x = harmonic_interpolation(&l, &fixed, 1000);
        for (i, xi) in x.iter().enumerate() {
            assert!((xi - i as f64 / 10.0).abs() < 1e-6, "{i}: {xi}");
        }
    }
}
