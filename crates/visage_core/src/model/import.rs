//! Import of official FLAME `.pkl` files (FLAME 2020 `generic_model.pkl`, FLAME 2023, FLAME
//! 2023 Open) through the restricted pickle reader ([`crate::pickle`]), which builds arrays
//! and never runs code from the file.
//!
//! Keys read (FLAME's names):
//!
//! | key | shape | becomes |
//! |---|---|---|
//! | `v_template` | [V, 3] | [`FlameModel::template`] (metres) |
//! | `f` (or `faces`) | [F, 3] | [`FlameModel::triangles`] |
//! | `shapedirs` | [V, 3, K] | identity and expression bases, see below |
//! | `expressiondirs` (optional) | [V, 3, K'] | the expression basis, when a file keeps it apart |
//! | `posedirs` | [V, 3, 36] | [`FlameModel::pose_correctives`] (36 components, component-major `[36][V][3]`) |
//! | `J_regressor` | [5, V], scipy sparse or dense | [`Skeleton::regressor`], densified |
//! | `weights` | [V, 5] | [`Skeleton::weights`] |
//! | `kintree_table` | [2, 5] | [`Skeleton::parents`]; row 0 holds each joint's parent, the root's being a sentinel (2³²−1) that becomes −1 |
//!
//! Other keys (`J`, `bs_style`, `bs_type`, …) are listed in [`ImportReport::ignored_keys`].
//!
//! **The identity/expression split.** FLAME 2020 and 2023 store 400 `shapedirs` columns: the
//! first 300 are identity (shape) components and the last 100 expression components. The
//! importer therefore reads the first [`FLAME_SHAPE_COMPONENTS`] (300) columns as identity and
//! any further columns as expression. A file with at most 300 columns is read as identity only,
//! unless it has a separate `expressiondirs` array, which then becomes the expression basis
//! (all `shapedirs` columns are identity). [`ImportOptions::identity_components`] overrides the
//! split point. FLAME has no expression names; components are named `exp000`, `exp001`, ….
//!
//! Joints follow FLAME's order: 0 root (global rotation), 1 neck, 2 jaw, 3 left eye, 4 right
//! eye, named as in [`super::npz_import::FLAME_JOINT_NAMES`].
//!
//! The FLAME variant is told from the file name (`…2023…open…`, `…2023…`, `…2020…` or
//! `generic_model…`) and otherwise from the pickle: a Python 2 pickle or one with chumpy
//! objects is FLAME 2020; a Python 3 pickle is reported as FLAME 2023 (FLAME 2023 and 2023 Open
//! share keys and topology and cannot be told apart by content).

use std::fmt;
use std::path::{Path, PathBuf};

use super::npz_import::FLAME_JOINT_NAMES;
use super::{
    Basis, FlameModel, ModelError, ModelMeta, NUM_JOINTS, NUM_POSE_CORRECTIVES, Skeleton, storage,
};
use crate::pickle::{self, NdArray, PickleError, PickleInfo, PickleValue};

/// Number of identity (shape) components at the start of FLAME's `shapedirs`.
pub const FLAME_SHAPE_COMPONENTS: usize = 300;

/// Licence text stored in the metadata of models imported from official FLAME files.
pub const FLAME_LICENCE: &str = "FLAME licence of the file's owner: see flame.is.tue.mpg.de";

/// Which official FLAME release a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlameVariant {
    /// FLAME 2020 (and the 2017/2019 releases with the same layout): `generic_model.pkl`,
    /// a Python 2 pickle with chumpy objects.
    Flame2020,
    /// FLAME 2023 (revised eye region): a Python 3 pickle.
    Flame2023,
    /// FLAME 2023 Open (CC-BY-4.0 release): same keys and topology as FLAME 2023.
    Flame2023Open,
}

impl FlameVariant {
    /// Human-readable name, e.g. `"FLAME 2023 Open"`.
    pub fn label(self) -> &'static str {
        match self {
            FlameVariant::Flame2020 => "FLAME 2020",
            FlameVariant::Flame2023 => "FLAME 2023",
            FlameVariant::Flame2023Open => "FLAME 2023 Open",
        }
    }
}

impl fmt::Display for FlameVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Choices for [`import_flame_pickle`]. The default reads a FLAME file the standard way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Number of leading `shapedirs` columns that are identity components; the remaining
    /// columns become expression components. `None`: FLAME's 300 when there are more than 300
    /// columns and no `expressiondirs`, otherwise all columns.
    pub identity_components: Option<usize>,
    /// Keep at most this many identity components (the leading ones).
    pub max_identity: Option<usize>,
    /// Keep at most this many expression components (the leading ones).
    pub max_expression: Option<usize>,
    /// The FLAME variant, instead of detecting it.
    pub variant: Option<FlameVariant>,
    /// Model name for the metadata; default `"<variant> (<file name>)"`.
    pub name: Option<String>,
}

/// What an import found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The file name the model was read from.
    pub source: String,
    /// The FLAME variant.
    pub variant: FlameVariant,
    /// How the variant was decided, in words.
    pub variant_evidence: String,
    /// Whether the arrays came from a NumPy `.npz` archive rather than a pickle (then the
    /// pickle fields below are meaningless).
    pub from_npz: bool,
    /// The pickle protocol (`None` for protocols 0 and 1).
    pub pickle_protocol: Option<u8>,
    /// Whether the pickle was written by Python 2.
    pub python2: bool,
    /// Number of chumpy objects read as arrays.
    pub chumpy_objects: usize,
    /// Number of vertices.
    pub vertices: usize,
    /// Number of triangles.
    pub triangles: usize,
    /// Columns of `shapedirs` in the file.
    pub shapedirs_columns: usize,
    /// Identity components in the model.
    pub identity_components: usize,
    /// Expression components in the model.
    pub expression_components: usize,
    /// Pose-corrective components in the model (36 or 0).
    pub pose_correctives: usize,
    /// Joints in the model (5 or 0).
    pub joints: usize,
    /// Keys of the file that were not used.
    pub ignored_keys: Vec<String>,
    /// Remarks about choices made (e.g. how `shapedirs` was split).
    pub notes: Vec<String>,
    /// Where the model was written, for [`convert_flame_file`].
    pub output: Option<PathBuf>,
    /// Size of the written file in bytes, for [`convert_flame_file`].
    pub output_bytes: Option<u64>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = self
            .pickle_protocol
            .map_or("protocol 0/1".to_string(), |p| format!("protocol {p}"));
        let python = if self.python2 { "Python 2" } else { "Python 3" };
        writeln!(f, "read        {}", self.source)?;
        writeln!(
            f,
            "variant     {} ({})",
            self.variant, self.variant_evidence
        )?;
        if self.from_npz {
            writeln!(f, "archive     NumPy .npz")?;
        } else {
            write!(f, "pickle      {python}, {protocol}")?;
            if self.chumpy_objects > 0 {
                write!(f, ", {} chumpy objects", self.chumpy_objects)?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "mesh        {} vertices, {} triangles",
            self.vertices, self.triangles
        )?;
        writeln!(
            f,
            "bases       {} identity + {} expression components (shapedirs has {} columns), {} \
             pose correctives",
            self.identity_components,
            self.expression_components,
            self.shapedirs_columns,
            self.pose_correctives
        )?;
        writeln!(f, "joints      {}", self.joints)?;
        if !self.ignored_keys.is_empty() {
            writeln!(f, "ignored     {}", self.ignored_keys.join(", "))?;
        }
        for n in &self.notes {
            writeln!(f, "note        {n}")?;
        }
        if let Some(out) = &self.output {
            write!(f, "wrote       {}", out.display())?;
            if let Some(b) = self.output_bytes {
                write!(f, " ({b} bytes)")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Why a FLAME file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input could not be read.
    #[error("could not read `{path}`: {source}")]
    Io {
        /// Path of the file.
        path: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The pickle reader refused or could not parse the file.
    #[error("cannot import `{path}`: {source}")]
    Pickle {
        /// Name of the file.
        path: String,
        /// What the pickle reader said.
        source: PickleError,
    },
    /// The pickle is readable but is not a FLAME model (missing keys, wrong kinds).
    #[error("`{path}` is not a FLAME model: {detail}")]
    NotFlame {
        /// Name of the file.
        path: String,
        /// What is missing or wrong.
        detail: String,
    },
    /// FLAME arrays whose shapes or values do not fit together.
    #[error("`{path}` has inconsistent FLAME arrays: {detail}")]
    Inconsistent {
        /// Name of the file.
        path: String,
        /// Which arrays disagree, and how.
        detail: String,
    },
    /// The converted model failed validation or could not be written.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Reads an official FLAME `.pkl` file into a model, with a report of what was found.
pub fn import_flame_pickle(
    path: &Path,
    options: &ImportOptions,
) -> Result<(FlameModel, ImportReport), ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    import_flame_pickle_bytes(&bytes, &name, options)
}

/// Reads an official FLAME pickle from memory. `file_name` names it in messages and metadata
/// and helps tell the variant apart.
pub fn import_flame_pickle_bytes(
    bytes: &[u8],
    file_name: &str,
    options: &ImportOptions,
) -> Result<(FlameModel, ImportReport), ImportError> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(ImportError::NotFlame {
            path: file_name.to_string(),
            detail: "it is a zip archive (a NumPy `.npz`?), not a pickle; `.npz` files are read \
                     by `model::npz_import`"
                .into(),
        });
    }
    let (root, info) =
        pickle::load_with_limits(bytes, &pickle::PickleLimits::default()).map_err(|source| {
            ImportError::Pickle {
                path: file_name.to_string(),
                source,
            }
        })?;
    import_flame_dict(&root, &info, file_name, options)
}

/// Builds a model from an already loaded FLAME dictionary (`info` describes the pickle it came
/// from and helps tell the variant apart).
pub fn import_flame_dict(
    root: &PickleValue,
    info: &PickleInfo,
    file_name: &str,
    options: &ImportOptions,
) -> Result<(FlameModel, ImportReport), ImportError> {
    Importer {
        file: file_name.to_string(),
        options: options.clone(),
    }
    .import(root, info)
}

/// Converts an official FLAME `.pkl` file into Visage's model format at `output` (written
/// atomically with [`FlameModel::save`]), with default [`ImportOptions`].
pub fn convert_flame_file(input: &Path, output: &Path) -> Result<ImportReport, ImportError> {
    convert_flame_file_with(input, output, &ImportOptions::default())
}

/// [`convert_flame_file`] with explicit options.
pub fn convert_flame_file_with(
    input: &Path,
    output: &Path,
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let (model, mut report) = import_flame_pickle(input, options)?;
    model.save(output)?;
    report.output = Some(output.to_path_buf());
    report.output_bytes = std::fs::metadata(output).ok().map(|m| m.len());
    Ok(report)
}

/// Tells the FLAME variant from the file name, else from the pickle's style.
pub fn detect_variant(file_name: &str, info: &PickleInfo) -> (FlameVariant, String) {
    let lower = file_name.to_ascii_lowercase();
    if lower.contains("2023") && lower.contains("open") {
        return (FlameVariant::Flame2023Open, "from the file name".into());
    }
    if lower.contains("2023") {
        return (FlameVariant::Flame2023, "from the file name".into());
    }
    if ["2020", "2019", "2017", "generic_model"]
        .iter()
        .any(|k| lower.contains(k))
    {
        return (FlameVariant::Flame2020, "from the file name".into());
    }
    if info.python2_strings || info.chumpy_objects > 0 {
        return (
            FlameVariant::Flame2020,
            "a Python 2 pickle with chumpy objects, as FLAME 2020 ships".into(),
        );
    }
    (
        FlameVariant::Flame2023,
        "a Python 3 pickle; FLAME 2023 and 2023 Open cannot be told apart by content".into(),
    )
}

/// Keys FLAME files hold that the importer reads.
const USED_KEYS: [&str; 9] = [
    "v_template",
    "f",
    "faces",
    "shapedirs",
    "expressiondirs",
    "posedirs",
    "J_regressor",
    "weights",
    "kintree_table",
];

struct Importer {
    file: String,
    options: ImportOptions,
}

/// A float array with its shape, as `f32`.
struct Floats {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Importer {
    fn not_flame(&self, detail: impl Into<String>) -> ImportError {
        ImportError::NotFlame {
            path: self.file.clone(),
            detail: detail.into(),
        }
    }

    fn inconsistent(&self, detail: impl Into<String>) -> ImportError {
        ImportError::Inconsistent {
            path: self.file.clone(),
            detail: detail.into(),
        }
    }

    /// The array under `key`, if present; an error if it is there but is not an array.
    fn array<'a>(
        &self,
        root: &'a PickleValue,
        keys: &[&'static str],
    ) -> Result<Option<(&'static str, &'a NdArray)>, ImportError> {
        for &key in keys {
            match root.get(key) {
                None => continue,
                Some(PickleValue::Array(a)) => return Ok(Some((key, a))),
                Some(other) => {
                    return Err(
                        self.not_flame(format!("`{key}` is a {}, not an array", other.kind()))
                    );
                }
            }
        }
        Ok(None)
    }

    fn floats(&self, key: &str, a: &NdArray) -> Result<Floats, ImportError> {
        let data = a.to_f32();
        if data.iter().any(|x| !x.is_finite()) {
            return Err(self.inconsistent(format!("`{key}` contains NaN or infinite values")));
        }
        Ok(Floats {
            shape: a.shape.clone(),
            data,
        })
    }

    fn import(
        &self,
        root: &PickleValue,
        info: &PickleInfo,
    ) -> Result<(FlameModel, ImportReport), ImportError> {
        if !matches!(root, PickleValue::Dict(_)) {
            return Err(self.not_flame(format!(
                "the pickle holds a {}, not a dictionary of FLAME arrays",
                root.kind()
            )));
        }
        let mut notes = Vec::new();

        // Template.
        let Some((_, vt)) = self.array(root, &["v_template"])? else {
            return Err(self.not_flame(format!(
                "it has no `v_template` array (keys: {})",
                root.text_keys().join(", ")
            )));
        };
        let vt = self.floats("v_template", vt)?;
        if vt.shape.len() != 2 || vt.shape[1] != 3 || vt.shape[0] == 0 {
            return Err(self.inconsistent(format!(
                "`v_template` has shape {:?}; FLAME's is [V, 3]",
                vt.shape
            )));
        }
        let nv = vt.shape[0];
        let template: Vec<[f32; 3]> = vt
            .data
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]])
            .collect();

        // Triangles.
        let Some((fkey, f)) = self.array(root, &["f", "faces"])? else {
            return Err(self.not_flame("it has no `f` (triangle) array"));
        };
        if f.shape.len() != 2 || f.shape[1] != 3 {
            return Err(self.inconsistent(format!(
                "`{fkey}` has shape {:?}; FLAME's is [F, 3]",
                f.shape
            )));
        }
        let idx = match f.to_i64() {
            Some(v) => v,
            None => {
                let v = f.to_f64();
                if v.iter().any(|x| x.fract() != 0.0 || !x.is_finite()) {
                    return Err(
                        self.inconsistent(format!("`{fkey}` holds non-integer vertex indices"))
                    );
                }
                v.into_iter().map(|x| x as i64).collect()
            }
        };
        if let Some(&bad) = idx.iter().find(|&&i| i < 0 || i as u64 >= nv as u64) {
            return Err(self.inconsistent(format!(
                "`{fkey}` refers to vertex {bad} but `v_template` has {nv} vertices"
            )));
        }
        let triangles: Vec<[u32; 3]> = idx
            .chunks_exact(3)
            .map(|t| [t[0] as u32, t[1] as u32, t[2] as u32])
            .collect();

        // Blendshapes.
        let Some((_, sd)) = self.array(root, &["shapedirs"])? else {
            return Err(self.not_flame("it has no `shapedirs` array"));
        };
        let sd = self.floats("shapedirs", sd)?;
        self.check_vx3k("shapedirs", &sd.shape, nv)?;
        let k_all = sd.shape[2];
        let expr_dirs = match self.array(root, &["expressiondirs"])? {
            Some((_, e)) => {
                let e = self.floats("expressiondirs", e)?;
                self.check_vx3k("expressiondirs", &e.shape, nv)?;
                Some(e)
            }
            None => None,
        };
        let split = match (self.options.identity_components, &expr_dirs) {
            (Some(n), _) => {
                if n > k_all {
                    return Err(self.inconsistent(format!(
                        "{n} identity components were asked for but `shapedirs` has {k_all} \
                         columns"
                    )));
                }
                n
            }
            (None, Some(_)) => k_all,
            (None, None) if k_all > FLAME_SHAPE_COMPONENTS => FLAME_SHAPE_COMPONENTS,
            (None, None) => {
                notes.push(format!(
                    "`shapedirs` has {k_all} columns (not more than FLAME's \
                     {FLAME_SHAPE_COMPONENTS} identity components) and there is no \
                     `expressiondirs`: all are read as identity; the model has no expressions"
                ));
                k_all
            }
        };
        let keep_id = self.options.max_identity.unwrap_or(split).min(split);
        let identity = Basis {
            names: Vec::new(),
            deltas: to_component_major(&sd.data, nv, k_all, 0, keep_id),
        };
        let (expr_src, expr_from, expr_to) = match &expr_dirs {
            Some(e) if self.options.identity_components.is_none() => {
                notes.push(format!(
                    "expressions read from `expressiondirs` ({} columns); all {k_all} \
                     `shapedirs` columns are identity",
                    e.shape[2]
                ));
                if split < k_all {
                    notes.push(format!("`shapedirs` columns {split}..{k_all} are dropped"));
                }
                (&e.data, 0, e.shape[2])
            }
            Some(_) => {
                notes.push(format!(
                    "`expressiondirs` is ignored: the split of `shapedirs` was given \
                     ({split} identity + {} expression)",
                    k_all - split
                ));
                (&sd.data, split, k_all)
            }
            None => (&sd.data, split, k_all),
        };
        let expr_k_all = match &expr_dirs {
            Some(e) if self.options.identity_components.is_none() => e.shape[2],
            _ => k_all,
        };
        let n_expr = expr_to - expr_from;
        let keep_ex = self.options.max_expression.unwrap_or(n_expr).min(n_expr);
        let expression = Basis {
            names: (0..keep_ex).map(|i| format!("exp{i:03}")).collect(),
            deltas: to_component_major(expr_src, nv, expr_k_all, expr_from, expr_from + keep_ex),
        };
        if keep_id < split || keep_ex < n_expr {
            notes.push(format!(
                "kept {keep_id} of {split} identity and {keep_ex} of {n_expr} expression components"
            ));
        }

        // Skeleton and pose correctives.
        let regressor = root.get("J_regressor");
        let weights = self.array(root, &["weights"])?;
        let kintree = self.array(root, &["kintree_table"])?;
        let skeleton = match (regressor, weights, kintree) {
            (None, None, None) => None,
            (Some(r), Some((_, w)), Some((_, k))) => Some(self.skeleton(r, w, k, nv)?),
            _ => {
                let have: Vec<&str> = ["J_regressor", "weights", "kintree_table"]
                    .into_iter()
                    .filter(|k| root.get(k).is_some())
                    .collect();
                return Err(self.not_flame(format!(
                    "it has {} but a FLAME skeleton needs `J_regressor`, `weights` and \
                     `kintree_table` together",
                    have.iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )));
            }
        };
        let pose_correctives = match self.array(root, &["posedirs"])? {
            None => None,
            Some(_) if skeleton.is_none() => {
                notes.push("`posedirs` is ignored: the file has no skeleton".into());
                None
            }
            Some((_, p)) => {
                let p = self.floats("posedirs", p)?;
                self.check_vx3k("posedirs", &p.shape, nv)?;
                if p.shape[2] != NUM_POSE_CORRECTIVES {
                    return Err(self.inconsistent(format!(
                        "`posedirs` has shape {:?}; FLAME's has {NUM_POSE_CORRECTIVES} pose \
                         correctives (4 joints × 9)",
                        p.shape
                    )));
                }
                Some(Basis {
                    names: Vec::new(),
                    deltas: to_component_major(
                        &p.data,
                        nv,
                        NUM_POSE_CORRECTIVES,
                        0,
                        NUM_POSE_CORRECTIVES,
                    ),
                })
            }
        };

        let (variant, evidence) = match self.options.variant {
            Some(v) => (v, "as given".to_string()),
            None => detect_variant(&self.file, info),
        };
        let ignored_keys: Vec<String> = root
            .text_keys()
            .into_iter()
            .filter(|k| !USED_KEYS.contains(k))
            .map(str::to_string)
            .collect();

        let n_id = keep_id;
        let meta = ModelMeta {
            name: self
                .options
                .name
                .clone()
                .unwrap_or_else(|| format!("{variant} ({})", self.file)),
            format_version: storage::FORMAT_VERSION,
            units: "metres".into(),
            licence: FLAME_LICENCE.into(),
            source: format!(
                "{} ({variant}; FLAME: Li, Bolkart, Black, Li, Romero, \"Learning a model of \
                 facial shape and expression from 4D scans\", SIGGRAPH Asia 2017)",
                self.file
            ),
            changes: format!(
                "imported from the FLAME pickle by Visage: float32; bases component-major; \
                 {n_id} identity + {keep_ex} expression components (expressions named exp000…); \
                 J_regressor densified; root parent −1"
            ),
            extra: [
                ("flame_variant".to_string(), variant.label().to_string()),
                ("flame_shapedirs_columns".to_string(), k_all.to_string()),
            ]
            .into_iter()
            .collect(),
        };
        let model = FlameModel {
            meta,
            template,
            triangles,
            identity,
            expression,
            pose_correctives,
            skeleton,
            ..FlameModel::default()
        };
        model.validate(&self.file)?;
        let report = ImportReport {
            from_npz: false,
            source: self.file.clone(),
            variant,
            variant_evidence: evidence,
            pickle_protocol: info.protocol,
            python2: info.python2_strings,
            chumpy_objects: info.chumpy_objects,
            vertices: nv,
            triangles: model.num_triangles(),
            shapedirs_columns: k_all,
            identity_components: model.num_identity(),
            expression_components: model.num_expression(),
            pose_correctives: model.pose_correctives.as_ref().map_or(0, |p| p.count(nv)),
            joints: model.num_joints(),
            ignored_keys,
            notes,
            output: None,
            output_bytes: None,
        };
        Ok((model, report))
    }

    fn check_vx3k(&self, key: &str, shape: &[usize], nv: usize) -> Result<(), ImportError> {
        if shape.len() != 3 || shape[1] != 3 {
            return Err(
                self.inconsistent(format!("`{key}` has shape {shape:?}; FLAME's is [V, 3, K]"))
            );
        }
        if shape[0] != nv {
            return Err(self.inconsistent(format!(
                "`{key}` has shape {shape:?} but `v_template` has {nv} vertices"
            )));
        }
        Ok(())
    }

    fn skeleton(
        &self,
        regressor: &PickleValue,
        weights: &NdArray,
        kintree: &NdArray,
        nv: usize,
    ) -> Result<Skeleton, ImportError> {
        let dense;
        let reg = match regressor {
            PickleValue::Sparse(m) => {
                dense = m.to_dense().map_err(|source| ImportError::Pickle {
                    path: self.file.clone(),
                    source,
                })?;
                &dense
            }
            PickleValue::Array(a) => a,
            other => {
                return Err(
                    self.not_flame(format!("`J_regressor` is a {}, not a matrix", other.kind()))
                );
            }
        };
        let reg = self.floats("J_regressor", reg)?;
        if reg.shape.len() != 2 || reg.shape[0] != NUM_JOINTS {
            return Err(self.inconsistent(format!(
                "`J_regressor` has shape {:?}; FLAME's is [{NUM_JOINTS}, V] (root, neck, jaw, \
                 two eyes)",
                reg.shape
            )));
        }
        if reg.shape[1] != nv {
            return Err(self.inconsistent(format!(
                "`J_regressor` has shape {:?} but `v_template` has {nv} vertices",
                reg.shape
            )));
        }
        let w = self.floats("weights", weights)?;
        if w.shape != [nv, NUM_JOINTS] {
            return Err(self.inconsistent(format!(
                "`weights` has shape {:?}; with {nv} vertices and {NUM_JOINTS} joints FLAME's \
                 is [{nv}, {NUM_JOINTS}]",
                w.shape
            )));
        }
        if kintree.shape != [2, NUM_JOINTS] {
            return Err(self.inconsistent(format!(
                "`kintree_table` has shape {:?}; FLAME's is [2, {NUM_JOINTS}]",
                kintree.shape
            )));
        }
        let Some(kt) = kintree.to_i64() else {
            return Err(self.inconsistent("`kintree_table` does not hold integers"));
        };
        let (parent_row, id_row) = kt.split_at(NUM_JOINTS);
        if id_row.iter().enumerate().any(|(i, &id)| id != i as i64) {
            return Err(self.inconsistent(format!(
                "`kintree_table` lists joints {id_row:?}; FLAME's order is 0..{NUM_JOINTS} \
                 (root, neck, jaw, eye_left, eye_right)"
            )));
        }
        let mut parents = Vec::with_capacity(NUM_JOINTS);
        for (j, &p) in parent_row.iter().enumerate() {
            if j == 0 {
                // The root's parent is a sentinel: 2³²−1 in FLAME's files, or −1.
                if (0..NUM_JOINTS as i64).contains(&p) {
                    return Err(self.inconsistent(format!(
                        "`kintree_table` gives the root joint the parent {p}"
                    )));
                }
                parents.push(-1);
            } else if (0..j as i64).contains(&p) {
                parents.push(p as i32);
            } else {
                return Err(self.inconsistent(format!(
                    "`kintree_table` gives joint {j} ({}) the parent {p}; each joint's parent \
                     must come before it",
                    FLAME_JOINT_NAMES[j]
                )));
            }
        }
        Ok(Skeleton {
            names: FLAME_JOINT_NAMES.iter().map(|s| s.to_string()).collect(),
            parents,
            regressor: reg.data,
            weights: w.data,
        })
    }
}

/// Columns `from..to` of a `[V][3][K]` array as a component-major `[to − from][V][3]` basis.
fn to_component_major(src: &[f32], nv: usize, k_all: usize, from: usize, to: usize) -> Vec<f32> {
    let k = to.saturating_sub(from);
    let mut out = vec![0.0f32; k * nv * 3];
    for v in 0..nv {
        for c in 0..3 {
            let row = &src[(v * 3 + c) * k_all..(v * 3 + c + 1) * k_all];
            for (kk, &x) in row[from..to].iter().enumerate() {
                out[(kk * nv + v) * 3 + c] = x;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_major_transposes() {
        // V = 2, K = 3: src[v][c][k] = 100v + 10c + k.
        let mut src = Vec::new();
        for v in 0..2 {
            for c in 0..3 {
                for k in 0..3 {
                    src.push((100 * v + 10 * c + k) as f32);
                }
            }
        }
        let out = to_component_major(&src, 2, 3, 1, 3);
        // Component 0 of the result is k = 1.
        assert_eq!(&out[..6], &[1.0, 11.0, 21.0, 101.0, 111.0, 121.0]);
        assert_eq!(&out[6..], &[2.0, 12.0, 22.0, 102.0, 112.0, 122.0]);
    }

    #[test]
    fn variant_from_name_then_content() {
        let py2 = PickleInfo {
            python2_strings: true,
            ..PickleInfo::default()
        };
        let py3 = PickleInfo::default();
        assert_eq!(
            detect_variant("FLAME2023_Open.pkl", &py2).0,
            FlameVariant::Flame2023Open
        );
        assert_eq!(
            detect_variant("flame2023.pkl", &py2).0,
            FlameVariant::Flame2023
        );
        assert_eq!(
            detect_variant("generic_model.pkl", &py3).0,
            FlameVariant::Flame2020
        );
        assert_eq!(detect_variant("model.pkl", &py2).0, FlameVariant::Flame2020);
        assert_eq!(detect_variant("model.pkl", &py3).0, FlameVariant::Flame2023);
    }
}
