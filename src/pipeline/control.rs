//! ControlNet guidance as diffusers' `StableDiffusionControlNetPipeline` runs
//! it: the control image in [0, 1] at the output size, duplicated for the CFG
//! batch (not in guess mode, where only the conditional half gets residuals),
//! the conditioning scale, the `control_guidance_start`/`_end` window as
//! fractions of the U-Net calls, guess mode's per-block scales, and several
//! ControlNets whose residuals add. On SDXL (diffusers'
//! `StableDiffusionXLControlNetPipeline`) the ControlNet also takes the
//! U-Net's pooled text embedding and time ids, of the same rows it runs on.
use std::sync::Arc;

use ndarray::{concatenate, ArrayD, Axis, IxDyn};

use crate::error::{Error, ErrorKind, Result};
use crate::image::control::{preprocess, ControlImage, Preprocess};
use crate::model::controlnet::{ControlNet, ResidualUnet};
use crate::model::{GraphInput, ModelInner, TensorSpec};

/// One ControlNet applied to a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    /// The ControlNet's folder name under the model's `controlnet/`.
    pub controlnet: String,
    /// The control image (an edge map, depth, the picture itself for tile...).
    /// It is resized (Lanczos3) to the output size when its size differs; its
    /// aspect ratio must be the output's.
    pub image: ControlImage,
    /// How the image is turned into the control image first.
    pub preprocess: Preprocess,
    /// diffusers' `controlnet_conditioning_scale` (default 1).
    pub scale: f32,
    /// diffusers' `control_guidance_start`: fraction of the U-Net calls before
    /// the ControlNet starts (default 0).
    pub start: f32,
    /// diffusers' `control_guidance_end`: fraction after which it stops (default 1).
    pub end: f32,
}

impl Control {
    /// A ControlNet at scale 1 over the whole schedule, image used as given.
    pub fn new(controlnet: impl Into<String>, image: ControlImage) -> Self {
        Self { controlnet: controlnet.into(), image, preprocess: Preprocess::None, scale: 1.0, start: 0.0, end: 1.0 }
    }
}

/// Which rows of a U-Net batch get ControlNet residuals.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rows {
    /// Every row.
    All,
    /// The last row only (guess mode in a CFG batch: the conditional half).
    Last,
    /// None (guess mode's unconditional call when CFG runs as two calls).
    Zero,
}

/// One ControlNet of a generation: the graph, its control image
/// `[1, 3, H, W]`, scale and window.
struct ActiveNet {
    net: Arc<ControlNet>,
    image: ArrayD<f32>,
    scale: f32,
    start: f32,
    end: f32,
}

impl ActiveNet {
    /// Whether it runs at U-Net call `k` of `total`. diffusers: keep =
    /// 1 - (i / len < start or (i + 1) / len > end), on the fractions'
    /// shortest decimal forms, as Python holds 0.2.
    fn in_window(&self, k: usize, total: usize) -> bool {
        let (i, n) = (k as f64, total as f64);
        !(i / n < decimal(self.start) || (i + 1.0) / n > decimal(self.end))
    }
}

/// The ControlNets of one generation, ready to run.
pub(crate) struct ActiveControls {
    pub(crate) unet: Arc<ResidualUnet>,
    nets: Vec<ActiveNet>,
    guess_mode: bool,
    /// SDXL: how many of the added conditioning's columns are time ids.
    time_id_count: Option<usize>,
    /// Residual shapes for batch 1, learnt from the first run (zeros need them).
    shapes: parking_lot::Mutex<Option<Vec<Vec<usize>>>>,
}

impl ActiveControls {
    /// Loads the ControlNets and prepares their images; `None` without controls.
    pub(crate) fn prepare(m: &ModelInner, controls: &[Control], guess_mode: bool, width: usize, height: usize) -> Result<Option<Self>> {
        if controls.is_empty() {
            if guess_mode {
                return Err(Error::invalid("guess mode needs at least one ControlNet"));
            }
            return Ok(None);
        }
        let mut nets = Vec::with_capacity(controls.len());
        for (i, c) in controls.iter().enumerate() {
            let at = |e: Error| e.context(format!("control {i} ({})", c.controlnet));
            if !c.scale.is_finite() {
                return Err(at(Error::invalid(format!("scale {} must be a finite number", c.scale))));
            }
            if !(0.0..=1.0).contains(&c.start) || !(0.0..=1.0).contains(&c.end) || c.start >= c.end {
                return Err(at(Error::invalid(format!(
                    "start {} and end {} must satisfy 0 <= start < end <= 1 (fractions of the schedule)",
                    c.start, c.end
                ))));
            }
            let image = preprocess(&c.image, c.preprocess).map_err(at)?;
            let tensor = control_tensor(&image, width, height).map_err(at)?;
            let net = m.controlnet(&c.controlnet).map_err(at)?;
            nets.push(ActiveNet { net, image: tensor, scale: c.scale, start: c.start, end: c.end });
        }
        let unet = m.residual_unet()?;
        let time_id_count = m.xl.as_ref().map(|xl| xl.time_id_count());
        Ok(Some(Self { unet, nets, guess_mode, time_id_count, shapes: Default::default() }))
    }

    /// Why the device-resident latent loop cannot run these ControlNets
    /// (the host loop then does), or `None` when it can.
    pub(crate) fn device_refusal(&self) -> Option<String> {
        if let Some(n) = self.nets.iter().find(|n| n.net.io.down.len() != self.unet.down.len()) {
            return Some(format!(
                "ControlNet {:?} gives {} residuals; unet_controlnet takes {}",
                n.net.name,
                n.net.io.down.len() + 1,
                self.unet.down.len() + 1
            ));
        }
        None
    }

    /// How many ControlNets the generation runs.
    pub(crate) fn len(&self) -> usize {
        self.nets.len()
    }

    /// The `j`th ControlNet.
    pub(crate) fn net(&self, j: usize) -> &ControlNet {
        &self.nets[j].net
    }

    /// The nets (by index) that run at U-Net call `k` of `total`.
    pub(crate) fn active_at(&self, k: usize, total: usize) -> Vec<usize> {
        (0..self.nets.len()).filter(|&j| self.nets[j].in_window(k, total)).collect()
    }

    /// Net `j`'s inputs that stay the same through a generation (see
    /// `steady_inputs`), for text embeddings `e` of the U-Net's batch.
    pub(crate) fn steady_inputs_of(&self, j: usize, e: &ArrayD<f32>, added: Option<&ArrayD<f32>>) -> Result<Vec<(&TensorSpec, GraphInput)>> {
        let n = &self.nets[j];
        self.steady_inputs(&n.net, &n.image, e, added, n.scale)
    }

    /// The summed residuals (down blocks, then mid) for a U-Net call on
    /// `sample` / `embeds` / SDXL's `added` `[B, pooled | time ids]` (batch
    /// B) at U-Net call `k` of `total`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn residuals(
        &self,
        sample: &ArrayD<f32>,
        t: f64,
        embeds: &ArrayD<f32>,
        added: Option<&ArrayD<f32>>,
        rows: Rows,
        k: usize,
        total: usize,
        options: Option<&ort::session::RunOptions>,
    ) -> Result<Vec<ArrayD<f32>>> {
        let b = sample.shape()[0];
        let (x, e, a) = match rows {
            Rows::All => (sample.clone(), embeds.clone(), added.cloned()),
            Rows::Last => (last_row(sample), last_row(embeds), added.map(last_row)),
            Rows::Zero => return self.zeros(b, sample, t, embeds, added, options),
        };
        let mut sum: Option<Vec<ArrayD<f32>>> = None;
        for active in &self.nets {
            if !active.in_window(k, total) {
                continue; // its residuals are scaled by 0: they add nothing
            }
            let ActiveNet { net, image, scale, .. } = active;
            let out = self.run_net(net, &x, t, &e, a.as_ref(), image, *scale, options)?;
            sum = Some(match sum {
                None => out,
                Some(mut acc) => {
                    for (a, o) in acc.iter_mut().zip(&out) {
                        *a += o;
                    }
                    acc
                }
            });
        }
        let res = match sum {
            Some(r) => r,
            None => return self.zeros(b, sample, t, embeds, added, options),
        };
        if rows == Rows::Last && b > 1 {
            return res
                .into_iter()
                .map(|r| {
                    let mut shape = r.shape().to_vec();
                    shape[0] = b - 1;
                    let z = ArrayD::<f32>::zeros(IxDyn(&shape));
                    concatenate(Axis(0), &[z.view(), r.view()]).map_err(|e| Error::internal(e.to_string()))
                })
                .collect();
        }
        Ok(res)
    }

    /// Zero residuals for a batch of `b` (shapes from an earlier run, or from
    /// one run of the first ControlNet).
    fn zeros(
        &self,
        b: usize,
        sample: &ArrayD<f32>,
        t: f64,
        embeds: &ArrayD<f32>,
        added: Option<&ArrayD<f32>>,
        options: Option<&ort::session::RunOptions>,
    ) -> Result<Vec<ArrayD<f32>>> {
        if self.shapes.lock().is_none() {
            let first = &self.nets[0];
            let a = added.map(last_row);
            self.run_net(&first.net, &last_row(sample), t, &last_row(embeds), a.as_ref(), &first.image, 0.0, options)?;
        }
        let shapes = self.shapes.lock().clone().ok_or_else(|| Error::internal("ControlNet residual shapes unknown"))?;
        Ok(shapes
            .into_iter()
            .map(|mut s| {
                s[0] = b;
                ArrayD::zeros(IxDyn(&s))
            })
            .collect())
    }

    /// A ControlNet call's inputs but the sample and timestep (the ones that
    /// stay the same through a generation): text embeddings `e` (batch B),
    /// the control image repeated B times, SDXL's added conditioning, and the
    /// conditioning scale when the graph takes one.
    fn steady_inputs<'n>(
        &self,
        net: &'n ControlNet,
        image: &ArrayD<f32>,
        e: &ArrayD<f32>,
        added: Option<&ArrayD<f32>>,
        scale: f32,
    ) -> Result<Vec<(&'n TensorSpec, GraphInput)>> {
        let io = &net.io;
        let b = e.shape()[0];
        let images = if b == 1 {
            image.clone()
        } else {
            let views: Vec<_> = std::iter::repeat_n(image.view(), b).collect();
            concatenate(Axis(0), &views).map_err(|e| Error::internal(e.to_string()))?
        };
        // Guess mode scales the residuals 0.1 .. 1 (log-spaced) by block, on
        // top of the conditioning scale; the graph gets 1 then.
        let graph_scale = if self.guess_mode { 1.0 } else { scale };
        let mut inputs = vec![(&io.encoder_hidden_states, GraphInput::Float(e.clone())), (&io.cond, GraphInput::Float(images))];
        match (&io.added, added, self.time_id_count) {
            (Some((text_embeds, time_ids)), Some(added), Some(n)) => {
                let (pooled, ids) = split_added(added, n)?;
                inputs.push((text_embeds, GraphInput::Float(pooled)));
                inputs.push((time_ids, GraphInput::Float(ids)));
            }
            (None, None, _) => {}
            _ => return Err(Error::internal(format!("ControlNet {:?}: SDXL conditioning and graph disagree", net.name))),
        }
        if let Some(spec) = &io.scale {
            inputs.push((spec, GraphInput::Float(ArrayD::from_elem(IxDyn(&vec![1; spec.shape.len()]), graph_scale))));
        }
        Ok(inputs)
    }

    /// The factor residual `i` of `n` from `net` is multiplied by after its
    /// graph ran, or `None` when the graph applied the scale itself.
    fn host_factor(&self, net: &ControlNet, scale: f32, i: usize, n: usize) -> Option<f32> {
        if self.guess_mode {
            // torch.logspace(-1, 0, n) * scale: the mid block gets the last.
            Some((10f64.powf(-1.0 + i as f64 / (n - 1) as f64) as f32) * scale)
        } else if net.io.scale.is_none() {
            Some(scale)
        } else {
            None
        }
    }

    /// Net `j`'s factors for its `n` residuals (`host_factor`, 1 where the
    /// graph applied the scale), for the device loop's combine graph.
    pub(crate) fn factors_of(&self, j: usize, n: usize) -> Vec<f32> {
        let a = &self.nets[j];
        (0..n).map(|i| self.host_factor(&a.net, a.scale, i, n).unwrap_or(1.0)).collect()
    }

    /// Whether residuals are scaled after the graphs run (guess mode, or a
    /// net without a `conditioning_scale` input at a scale other than 1).
    pub(crate) fn scales_on_host(&self) -> bool {
        self.guess_mode || self.nets.iter().any(|a| a.net.io.scale.is_none() && a.scale != 1.0)
    }

    /// diffusers' guess mode.
    pub(crate) fn guess_mode(&self) -> bool {
        self.guess_mode
    }

    /// One ControlNet call on a batch, its residuals scaled as diffusers does.
    #[allow(clippy::too_many_arguments)]
    fn run_net(
        &self,
        net: &ControlNet,
        x: &ArrayD<f32>,
        t: f64,
        e: &ArrayD<f32>,
        added: Option<&ArrayD<f32>>,
        image: &ArrayD<f32>,
        scale: f32,
        options: Option<&ort::session::RunOptions>,
    ) -> Result<Vec<ArrayD<f32>>> {
        let io = &net.io;
        let b = x.shape()[0];
        let mut inputs = vec![
            (&io.sample, GraphInput::Float(x.clone())),
            (&io.timestep, GraphInput::Float(timestep(&io.timestep, t, b))),
        ];
        inputs.extend(self.steady_inputs(net, image, e, added, scale)?);
        let names: Vec<String> = io.down.iter().chain(std::iter::once(&io.mid)).map(|s| s.name.clone()).collect();
        let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut out = net.graph.run_many(inputs, &wanted, options).map_err(|e| e.context(format!("controlnet {}", net.name)))?;
        if out.len() != self.unet.down.len() + 1 {
            return Err(Error::adapter_mismatch(format!(
                "ControlNet {:?} returned {} residuals; unet_controlnet takes {}",
                net.name,
                out.len(),
                self.unet.down.len() + 1
            )));
        }
        let n = out.len();
        for (i, r) in out.iter_mut().enumerate() {
            if let Some(factor) = self.host_factor(net, scale, i, n) {
                r.mapv_inplace(|v| v * factor);
            }
        }
        let mut shapes = self.shapes.lock();
        if shapes.is_none() {
            *shapes = Some(out.iter().map(|r| r.shape().to_vec()).collect());
        }
        Ok(out)
    }
}

/// An f32 as the f64 of its shortest decimal form (0.2f32 → 0.2, not 0.2000000029).
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

pub(crate) fn last_row(a: &ArrayD<f32>) -> ArrayD<f32> {
    let b = a.shape()[0];
    a.slice_axis(Axis(0), ndarray::Slice::from(b - 1..b)).to_owned()
}

/// A timestep tensor as the graph declares it: rank 0 or `[batch]`.
pub(crate) fn timestep(spec: &TensorSpec, t: f64, batch: usize) -> ArrayD<f32> {
    if spec.shape.is_empty() {
        ArrayD::from_elem(IxDyn(&[]), t as f32)
    } else {
        ArrayD::from_elem(IxDyn(&[batch]), t as f32)
    }
}

/// SDXL's `[B, pooled | time ids]` split into `text_embeds` and `time_ids`.
fn split_added(added: &ArrayD<f32>, time_ids: usize) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
    let width = added.shape()[1];
    let pooled = width
        .checked_sub(time_ids)
        .ok_or_else(|| Error::internal(format!("SDXL conditioning of {width} values holds no {time_ids} time ids")))?;
    Ok((
        added.slice_axis(Axis(1), ndarray::Slice::from(..pooled)).to_owned(),
        added.slice_axis(Axis(1), ndarray::Slice::from(pooled..)).to_owned(),
    ))
}

impl ActiveControls {
    /// The U-Net call with ControlNet residuals added (`added`: SDXL's
    /// `[B, pooled | time ids]`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn unet_call(
        &self,
        m: &ModelInner,
        sample: ArrayD<f32>,
        t: f64,
        embeds: ArrayD<f32>,
        added: Option<&ArrayD<f32>>,
        residuals: Vec<ArrayD<f32>>,
        timestep_cond: Option<ArrayD<f32>>,
        options: Option<&ort::session::RunOptions>,
    ) -> Result<ArrayD<f32>> {
        let split = match (added, self.time_id_count) {
            (Some(a), Some(n)) => Some(split_added(a, n)?),
            _ => None,
        };
        residual_unet_call(m, &self.unet, sample, t, embeds, split, residuals, timestep_cond, options)
    }
}

/// A plain U-Net call (`inputs` as `pipeline::unet_inputs` makes them for
/// `unet/`) run through `unet_controlnet` with zero residuals, which gives
/// the plain U-Net's output (see `ModelInner::residual_unet_for_plain_calls`).
pub(crate) fn zero_residual_call(
    m: &ModelInner,
    unet: &ResidualUnet,
    inputs: Vec<(&TensorSpec, GraphInput)>,
    options: Option<&ort::session::RunOptions>,
) -> Result<ArrayD<f32>> {
    let mapped = zero_residual_inputs(m, unet, inputs)?;
    super::run_unet_graph(m, &unet.graph, &unet.static_unets, &unet.io.output, mapped, options)
}

/// A plain U-Net call's inputs (`inputs` as `pipeline::unet_inputs` makes
/// them for `unet/`, the sample first) as `unet_controlnet` takes them: each
/// under its name there, then a zero residual for every residual input.
pub(crate) fn zero_residual_inputs<'a>(
    m: &'a ModelInner,
    unet: &'a ResidualUnet,
    inputs: Vec<(&'a TensorSpec, GraphInput)>,
) -> Result<Vec<(&'a TensorSpec, GraphInput)>> {
    let (ours, theirs) = (&m.unet_io, &unet.io);
    let xl = m.xl.as_ref();
    // Each input by what it is, the residual graph's spec for it.
    let pairs: [(Option<&TensorSpec>, Option<&TensorSpec>); 6] = [
        (Some(&ours.sample), Some(&theirs.sample)),
        (Some(&ours.timestep), Some(&theirs.timestep)),
        (Some(&ours.encoder_hidden_states), Some(&theirs.encoder_hidden_states)),
        (ours.timestep_cond.as_ref(), theirs.timestep_cond.as_ref()),
        (xl.map(|x| &x.text_embeds), theirs.text_embeds.as_ref()),
        (xl.map(|x| &x.time_ids), theirs.time_ids.as_ref()),
    ];
    let mut sample_shape = None;
    let mut mapped = Vec::with_capacity(inputs.len() + unet.down.len() + 1);
    for (spec, data) in inputs {
        let to = pairs
            .iter()
            .find(|(a, _)| a.is_some_and(|a| std::ptr::eq(a, spec)))
            .and_then(|(_, b)| *b)
            .ok_or_else(|| Error::internal(format!("unet_controlnet has no input for the U-Net's `{}`", spec.name)))?;
        let data = match data {
            GraphInput::Float(a) if std::ptr::eq(spec, &ours.sample) => {
                sample_shape = <[usize; 4]>::try_from(a.shape()).ok();
                GraphInput::Float(a)
            }
            // One export may take the timestep as rank 0 and the other per row.
            GraphInput::Float(a) if std::ptr::eq(spec, &ours.timestep) && to.shape.len() != a.ndim() => {
                let batch = sample_shape.map_or(1, |s| s[0]);
                GraphInput::Float(timestep(to, a.iter().next().copied().unwrap_or(0.0) as f64, batch))
            }
            other => other,
        };
        mapped.push((to, data));
    }
    let sample = sample_shape.ok_or_else(|| Error::internal("plain U-Net call without a 4-D sample"))?;
    let shapes = crate::model::controlnet::zero_residual_shapes(&m.layout.unet_config, unet, sample)
        .ok_or_else(|| Error::internal("unet_controlnet's residual shapes are unknown"))?;
    for (spec, shape) in unet.down.iter().chain(std::iter::once(&unet.mid)).zip(shapes) {
        mapped.push((spec, GraphInput::Float(ArrayD::zeros(IxDyn(&shape)))));
    }
    Ok(mapped)
}

/// The U-Net call with ControlNet residuals added.
#[allow(clippy::too_many_arguments)]
fn residual_unet_call(
    m: &ModelInner,
    unet: &ResidualUnet,
    sample: ArrayD<f32>,
    t: f64,
    embeds: ArrayD<f32>,
    added: Option<(ArrayD<f32>, ArrayD<f32>)>,
    residuals: Vec<ArrayD<f32>>,
    timestep_cond: Option<ArrayD<f32>>,
    options: Option<&ort::session::RunOptions>,
) -> Result<ArrayD<f32>> {
    let io = &unet.io;
    let batch = sample.shape()[0];
    let mut inputs = vec![
        (&io.sample, GraphInput::Float(sample)),
        (&io.timestep, GraphInput::Float(timestep(&io.timestep, t, batch))),
        (&io.encoder_hidden_states, GraphInput::Float(embeds)),
    ];
    // In the order `zero_residual_inputs` gives a plain call's, so that plain
    // and ControlNet calls of one shape share a specialised graph.
    if let (Some(spec), Some(c)) = (&io.timestep_cond, timestep_cond) {
        inputs.push((spec, GraphInput::Float(c)));
    }
    match (&io.text_embeds, &io.time_ids, added) {
        (Some(a), Some(b), Some((pooled, ids))) => {
            inputs.push((a, GraphInput::Float(pooled)));
            inputs.push((b, GraphInput::Float(ids)));
        }
        (None, None, None) => {}
        _ => return Err(Error::internal("unet_controlnet: SDXL conditioning and graph disagree")),
    }
    for (spec, r) in unet.down.iter().chain(std::iter::once(&unet.mid)).zip(residuals) {
        inputs.push((spec, GraphInput::Float(r)));
    }
    super::run_unet_graph(m, &unet.graph, &unet.static_unets, &io.output, inputs, options)
}

/// The control image as `[1, 3, H, W]` in [0, 1] at the output size.
fn control_tensor(image: &ControlImage, width: usize, height: usize) -> Result<ArrayD<f32>> {
    let rgb = image.to_rgb()?;
    // Same aspect ratio (to a pixel): anything else would distort the control.
    let (w, h) = (image.width, image.height);
    let (asked, given) = (width as f64 / height as f64, w as f64 / h as f64);
    if (given / asked - 1.0).abs() > 0.01 {
        return Err(Error::new(
            ErrorKind::InvalidSize,
            format!("the control image is {w}x{h}; the output is {width}x{height}: give it the output's aspect ratio"),
        ));
    }
    let rgb = if (w, h) == (width, height) {
        rgb
    } else {
        let img = image::RgbImage::from_raw(w as u32, h as u32, rgb).ok_or_else(|| Error::internal("control image buffer"))?;
        image::imageops::resize(&img, width as u32, height as u32, image::imageops::FilterType::Lanczos3).into_raw()
    };
    let mut t = ArrayD::zeros(IxDyn(&[1, 3, height, width]));
    for y in 0..height {
        for x in 0..width {
            for c in 0..3 {
                t[[0, c, y, x]] = rgb[(y * width + x) * 3 + c] as f32 / 255.0;
            }
        }
    }
    Ok(t)
}
