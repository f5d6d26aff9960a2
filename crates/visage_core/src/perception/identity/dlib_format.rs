//! Reader for dlib's serialisation of the face-recognition ResNet (`anet_type` in dlib's
//! `face_recognition.cpp`), written from dlib's documented format:
//!
//! * integers: a control byte (low nibble = number of little-endian magnitude bytes that follow,
//!   bit 7 = negative) and the bytes;
//! * floats (scalars): `float_details`, i.e. an integer mantissa and an integer exponent, value
//!   `mantissa · 2^exponent`;
//! * strings: integer length + bytes; booleans: the ASCII byte `'0'` or `'1'`;
//! * tensors: integer version (2), four integer dimensions `(n, k, nr, nc)`, then `n·k·nr·nc`
//!   little-endian IEEE `f32`; alias tensors: version (1) and four dimensions, no data.
//!
//! A network is serialised outside-in: every layer wrapper writes its version integer and then
//! its sub-network before its own details, so the file holds the loss layer, then the version of
//! every wrapper from the output down to the input, then the input layer, then each computational
//! layer's details (plus bookkeeping tensors) from the input up to the output. Tag and skip
//! layers write only their version.

use std::fmt;

/// A parse failure: byte offset and what was expected.
#[derive(Debug)]
pub(crate) struct FormatError {
    pub offset: usize,
    pub detail: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.detail)
    }
}

type R<T> = Result<T, FormatError>;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, detail: impl Into<String>) -> R<T> {
        Err(FormatError {
            offset: self.pos,
            detail: detail.into(),
        })
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.bytes.len() - self.pos < n {
            return self.fail(format!(
                "the file ends early ({n} more bytes needed, {} left)",
                self.bytes.len() - self.pos
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn int(&mut self) -> R<i64> {
        let start = self.pos;
        let control = self.take(1)?[0];
        let n = (control & 0x0F) as usize;
        if n == 0 || n > 8 || control & 0x70 != 0 {
            self.pos = start;
            return self.fail(format!("invalid integer control byte 0x{control:02x}"));
        }
        let mut v: u64 = 0;
        for (i, &b) in self.take(n)?.iter().enumerate() {
            v |= (b as u64) << (8 * i);
        }
        if v > i64::MAX as u64 {
            self.pos = start;
            return self.fail("integer out of range");
        }
        Ok(if control & 0x80 != 0 {
            -(v as i64)
        } else {
            v as i64
        })
    }

    fn expect_int(&mut self, what: &str, allowed: &[i64]) -> R<i64> {
        let start = self.pos;
        let v = self.int()?;
        if !allowed.contains(&v) {
            self.pos = start;
            return self.fail(format!("{what} is {v}, expected one of {allowed:?}"));
        }
        Ok(v)
    }

    fn float(&mut self) -> R<f64> {
        let start = self.pos;
        let first = *self.bytes.get(self.pos).unwrap_or(&0);
        if first & 0x70 != 0 {
            return self.fail("an old text-format float (not supported)");
        }
        let mantissa = self.int()?;
        let exponent = self.int()?;
        match exponent {
            32000 => Ok(f64::INFINITY),
            32001 => Ok(f64::NEG_INFINITY),
            32002 => Ok(f64::NAN),
            e if (-2000..=2000).contains(&e) => Ok(mantissa as f64 * 2f64.powi(e as i32)),
            _ => {
                self.pos = start;
                self.fail(format!("float exponent {exponent} out of range"))
            }
        }
    }

    fn string(&mut self) -> R<String> {
        let start = self.pos;
        let n = self.int()?;
        if !(0..=1024).contains(&n) {
            self.pos = start;
            return self.fail(format!("string length {n} is not plausible"));
        }
        let s = self.take(n as usize)?;
        match std::str::from_utf8(s) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => {
                self.pos = start;
                self.fail("string is not UTF-8")
            }
        }
    }

    fn expect_string(&mut self, allowed: &[&str]) -> R<String> {
        let start = self.pos;
        let s = self.string()?;
        if !allowed.contains(&s.as_str()) {
            self.pos = start;
            return self.fail(format!(
                "found layer tag {s:?}, expected one of {allowed:?}"
            ));
        }
        Ok(s)
    }

    fn boolean(&mut self) -> R<bool> {
        match self.take(1)?[0] {
            b'0' => Ok(false),
            b'1' => Ok(true),
            b => {
                self.pos -= 1;
                self.fail(format!("invalid boolean byte 0x{b:02x}"))
            }
        }
    }

    fn dims(&mut self) -> R<[usize; 4]> {
        let start = self.pos;
        let mut d = [0usize; 4];
        for v in &mut d {
            let x = self.int()?;
            if !(0..=1 << 31).contains(&x) {
                self.pos = start;
                return self.fail(format!("tensor dimension {x} out of range"));
            }
            *v = x as usize;
        }
        Ok(d)
    }

    fn tensor(&mut self) -> R<([usize; 4], Vec<f32>)> {
        self.expect_int("tensor version", &[2])?;
        let start = self.pos;
        let d = self.dims()?;
        let n = d
            .iter()
            .try_fold(1usize, |acc, &x| acc.checked_mul(x))
            .filter(|&n| n.checked_mul(4).is_some());
        let Some(n) = n else {
            self.pos = start;
            return self.fail("tensor size overflows");
        };
        let raw = self.take(n * 4)?;
        let data = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((d, data))
    }

    /// Bookkeeping tensors (gradients, cached outputs) that trained files may carry: skip them.
    fn skip_tensor(&mut self) -> R<()> {
        self.tensor().map(|_| ())
    }

    fn alias(&mut self) -> R<[usize; 4]> {
        self.expect_int("alias tensor version", &[1])?;
        self.dims()
    }
}

/// One convolution (with its bias) followed by dlib's `affine` layer (per-channel scale and
/// shift: batch normalisation frozen after training).
#[derive(Debug, Clone)]
pub(crate) struct ConvAffine {
    /// `[out, in, kh, kw]`, row-major.
    pub weight: Vec<f32>,
    pub shape: [usize; 4],
    pub bias: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// Everything the network file holds that inference needs.
#[derive(Debug, Clone)]
pub(crate) struct DlibResNet {
    pub input_mean: [f32; 3],
    pub stem: ConvAffine,
    /// Residual blocks from the input side: `(down, conv1+affine1, conv2+affine2)`.
    pub blocks: Vec<(bool, ConvAffine, ConvAffine)>,
    /// `[in = 256][out = 128]` as dlib stores it.
    pub fc: Vec<f32>,
    pub fc_in: usize,
    pub fc_out: usize,
}

/// Layer kinds of the network, from the input to the output (the order their details appear).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// `con<filters, k, k, stride, stride>` (also fixes the channel count of the output).
    Con {
        filters: usize,
        k: usize,
        stride: usize,
    },
    Affine,
    Relu,
    MaxPool,
    AvgPool2,
    AvgPoolAll,
    AddPrev,
    Tag,
    Skip,
    Fc {
        out: usize,
    },
}

/// `ares<N>` (down = false) or `ares_down<N>` (down = true), input side first.
fn block(kinds: &mut Vec<Kind>, n: usize, down: bool) {
    use Kind::*;
    let s = if down { 2 } else { 1 };
    kinds.extend([
        Tag,
        Con {
            filters: n,
            k: 3,
            stride: s,
        },
        Affine,
        Relu,
        Con {
            filters: n,
            k: 3,
            stride: 1,
        },
        Affine,
    ]);
    if down {
        kinds.extend([Tag, Skip, AvgPool2]);
    }
    kinds.extend([AddPrev, Relu]);
}

/// The residual stages of dlib's face-recognition network, input side first:
/// `(channels, downsample)` per block.
pub(crate) const BLOCKS: [(usize, bool); 14] = [
    (32, false),
    (32, false),
    (32, false),
    (64, true),
    (64, false),
    (64, false),
    (64, false),
    (128, true),
    (128, false),
    (128, false),
    (256, true),
    (256, false),
    (256, false),
    (256, true),
];

fn architecture() -> Vec<Kind> {
    use Kind::*;
    let mut k = vec![
        Con {
            filters: 32,
            k: 7,
            stride: 2,
        },
        Affine,
        Relu,
        MaxPool,
    ];
    for (n, down) in BLOCKS {
        block(&mut k, n, down);
    }
    k.extend([AvgPoolAll, Fc { out: 128 }]);
    k
}

/// Parses the bytes of `dlib_face_recognition_resnet_model_v1.dat` (or a file of the same
/// architecture written by any dlib version since 19.x).
pub(crate) fn parse(bytes: &[u8]) -> Result<DlibResNet, FormatError> {
    let mut r = Reader { bytes, pos: 0 };
    // add_loss_layer: version, loss details, then the network.
    r.expect_int("loss layer version", &[1])?;
    let loss = r.expect_string(&["loss_metric_", "loss_metric_2"])?;
    if loss == "loss_metric_2" {
        r.float()?; // margin (training only)
        r.float()?; // distance threshold (training only)
    }
    let kinds = architecture();
    // Wrapper versions, outermost (output side) first.
    let mut versions = vec![0i64; kinds.len()];
    for (i, kind) in kinds.iter().enumerate().rev() {
        versions[i] = match kind {
            Kind::Tag | Kind::Skip => r.expect_int("tag/skip layer version", &[1])?,
            _ if i == 0 => r.expect_int("input-side layer version", &[2, 3])?,
            _ => r.expect_int("layer version", &[1, 2])?,
        };
    }
    // Input layer.
    r.expect_string(&["input_rgb_image_sized"])?;
    let mut input_mean = [0.0f32; 3];
    for m in &mut input_mean {
        *m = r.float()? as f32;
    }
    let nr = r.int()?;
    let nc = r.int()?;
    if nr != 150 || nc != 150 {
        return r.fail(format!("input size is {nr}×{nc}, expected 150×150"));
    }

    let mut channels = 3usize;
    let mut convs: Vec<ConvAffine> = Vec::new();
    let mut pending: Option<ConvAffine> = None;
    let mut fc = None;
    for (i, kind) in kinds.iter().enumerate() {
        match *kind {
            Kind::Tag | Kind::Skip => continue,
            Kind::Con { filters, k, stride } => {
                let tag = r.expect_string(&["con_4", "con_5", "con_6"])?;
                let (pshape, params) = r.tensor()?;
                let nf = r.int()? as usize;
                let knr = r.int()? as usize;
                let knc = r.int()? as usize;
                let sy = r.int()? as usize;
                let sx = r.int()? as usize;
                let py = r.int()? as usize;
                let px = r.int()? as usize;
                let expected_pad = if stride == 1 { k / 2 } else { 0 };
                if (nf, knr, knc, sy, sx, py, px)
                    != (filters, k, k, stride, stride, expected_pad, expected_pad)
                {
                    return r.fail(format!(
                        "convolution {} is {nf} filters {knr}×{knc} stride {sy}×{sx} padding {py}×{px}, expected {filters} filters {k}×{k} stride {stride} padding {expected_pad}",
                        convs.len() + 1
                    ));
                }
                let fshape = r.alias()?;
                let bshape = r.alias()?;
                for _ in 0..4 {
                    r.float()?; // learning-rate and weight-decay multipliers
                }
                if tag != "con_4" {
                    let use_bias = r.boolean()?;
                    if !use_bias {
                        return r.fail("convolution without bias is not expected here");
                    }
                }
                if tag == "con_6" {
                    r.boolean()?; // fused relu flag (not used by this network)
                }
                let wlen = filters * channels * k * k;
                if fshape != [filters, channels, k, k]
                    || bshape != [1, filters, 1, 1]
                    || params.len() != wlen + filters
                    || pshape.iter().product::<usize>() != params.len()
                {
                    return r.fail(format!(
                        "convolution {} has parameter shapes {pshape:?} / {fshape:?} / {bshape:?}, expected filters [{filters}, {channels}, {k}, {k}] and {filters} biases",
                        convs.len() + 1
                    ));
                }
                pending = Some(ConvAffine {
                    weight: params[..wlen].to_vec(),
                    shape: [filters, channels, k, k],
                    bias: params[wlen..].to_vec(),
                    gamma: Vec::new(),
                    beta: Vec::new(),
                });
                channels = filters;
            }
            Kind::Affine => {
                let tag = r.expect_string(&["affine_", "affine_2"])?;
                let (_, params) = r.tensor()?;
                let g = r.alias()?;
                let b = r.alias()?;
                let mode = r.int()?;
                if tag == "affine_2" {
                    r.boolean()?; // disabled flag
                }
                if g != [1, channels, 1, 1] || b != g || params.len() != 2 * channels || mode != 0 {
                    return r.fail(format!(
                        "affine layer has shapes {g:?} / {b:?} (mode {mode}) for {} values, expected per-channel [1, {channels}, 1, 1] in convolution mode",
                        params.len()
                    ));
                }
                let Some(mut conv) = pending.take() else {
                    return r.fail("affine layer without a preceding convolution");
                };
                conv.gamma = params[..channels].to_vec();
                conv.beta = params[channels..].to_vec();
                convs.push(conv);
            }
            Kind::Relu => {
                let tag = r.expect_string(&["relu_", "relu_2"])?;
                if tag == "relu_2" {
                    r.boolean()?;
                }
            }
            Kind::MaxPool | Kind::AvgPool2 | Kind::AvgPoolAll => {
                let (want_tag, want) = match kind {
                    Kind::MaxPool => ("max_pool_2", [3, 3, 2, 2, 0, 0]),
                    Kind::AvgPool2 => ("avg_pool_2", [2, 2, 2, 2, 0, 0]),
                    _ => ("avg_pool_2", [0, 0, 1, 1, 0, 0]),
                };
                r.expect_string(&[want_tag])?;
                let mut got = [0i64; 6];
                for g in &mut got {
                    *g = r.int()?;
                }
                if got != want {
                    return r.fail(format!(
                        "pooling layer is {got:?} (rows, cols, strides, paddings), expected {want:?}"
                    ));
                }
            }
            Kind::AddPrev => {
                r.expect_string(&["add_prev_"])?;
            }
            Kind::Fc { out } => {
                let tag = r.expect_string(&["fc_2", "fc_3"])?;
                let num_outputs = r.int()? as usize;
                let num_inputs = r.int()? as usize;
                let (_, params) = r.tensor()?;
                let w = r.alias()?;
                r.alias()?;
                let bias_mode = r.int()?;
                for _ in 0..4 {
                    r.float()?;
                }
                if tag == "fc_3" {
                    r.boolean()?;
                }
                if num_outputs != out
                    || num_inputs != channels
                    || w != [num_inputs, num_outputs, 1, 1]
                    || params.len() != num_inputs * num_outputs
                    || bias_mode != 1
                {
                    return r.fail(format!(
                        "fully connected layer is {num_inputs}→{num_outputs} (bias mode {bias_mode}, {} values), expected {channels}→{out} without bias",
                        params.len()
                    ));
                }
                fc = Some((params, num_inputs, num_outputs));
            }
        }
        // add_layer bookkeeping: three flags, x_grad, cached output, then params_grad (wrapper
        // version 2) or grad_final (+ sample expansion factor in version 3) for the input side.
        for _ in 0..3 {
            r.boolean()?;
        }
        r.skip_tensor()?;
        r.skip_tensor()?;
        if i == 0 {
            r.skip_tensor()?;
            if versions[0] >= 3 {
                r.int()?;
            }
        } else if versions[i] == 2 {
            r.skip_tensor()?;
        }
    }
    if r.pos != bytes.len() {
        return r.fail(format!(
            "{} unexpected bytes after the network",
            bytes.len() - r.pos
        ));
    }
    let Some((fc, fc_in, fc_out)) = fc else {
        return r.fail("no fully connected layer");
    };
    let mut convs = convs.into_iter();
    let stem = convs.next().ok_or(FormatError {
        offset: r.pos,
        detail: "no convolutions".into(),
    })?;
    let mut blocks = Vec::with_capacity(BLOCKS.len());
    for (_, down) in BLOCKS {
        match (convs.next(), convs.next()) {
            (Some(a), Some(b)) => blocks.push((down, a, b)),
            _ => return r.fail("too few convolutions for the residual blocks"),
        }
    }
    Ok(DlibResNet {
        input_mean,
        stem,
        blocks,
        fc,
        fc_in,
        fc_out,
    })
}
