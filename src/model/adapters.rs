//! Models with LoRA adapters merged in: [`Model::with_adapters`].
use std::path::Path;
use std::sync::Arc;

use super::embedding::Embedding;
use super::lora::{self, Component, LoadedLora, LoraSpec};
use crate::tokenizer::ClipTokenizer;
use super::{graph, text, Adapters, AppliedAdapters, Model, ModelInner};
use crate::error::{Error, Result};

/// How many unmatched keys an error message lists before giving a count.
const LISTED_KEYS: usize = 12;

impl Model {
    /// A model with these LoRA files merged in, each with its scale (see
    /// [`Model::with_adapters`]).
    pub fn with_loras<P: AsRef<Path>>(&self, loras: &[(P, f32)]) -> Result<Model> {
        let loras = loras.iter().map(|(p, s)| LoraSpec::new(p.as_ref(), *s)).collect();
        self.with_adapters(&Adapters { loras, ..Default::default() })
    }

    /// A new model whose weights are this model's original ones plus the
    /// given adapters: the set replaces whatever this model had merged (a
    /// switch, not a stack), and an empty set gives the plain weights back.
    /// Its seamless and CLIP-skip settings are this model's.
    ///
    /// Only the graphs whose weights change get new sessions (the U-Net
    /// and/or the text encoder); the VAE, tokenizer and optional graphs are
    /// shared with this model. The merged weights are held once, by the new
    /// model's sessions; the base weights are read from the model files at
    /// the offsets of the adapted layers only. Each model stays usable on its
    /// own: dropping this one while the new one lives is safe.
    ///
    /// Errors: a missing file (`ModelNotFound`), a file that is not a
    /// readable safetensors LoRA (`ModelInvalid`), a norm adapter or a
    /// LyCORIS full `diff_b` for a bias the export shares (`Unsupported`), and a LoRA that does not fit this model — another
    /// architecture, ranks that disagree, keys that match no layer (listed)
    /// — (`AdapterMismatch`). On error this model is unchanged.
    pub fn with_adapters(&self, adapters: &Adapters) -> Result<Model> {
        self.with_adapters_under(adapters, None)
    }

    /// [`Model::with_adapters`] as a job runs it: `cancel` stops it between
    /// merges and inside the creation of each new session.
    pub(crate) fn with_adapters_under(&self, adapters: &Adapters, cancel: Option<&crate::runtime::LoadControl>) -> Result<Model> {
        let m = &self.inner;
        // New sessions answer to the cancel switch; the new model keeps m.runtime.
        let runtime = m.runtime.loading_under(cancel);
        let started = std::time::Instant::now();
        let mut loaded: Vec<LoadedLora> = adapters.loras.iter().map(LoadedLora::read).collect::<Result<_>>()?;
        runtime.check_load_cancel("merging the adapters")?;
        fit_to_family(&mut loaded, m)?;
        let embeddings: Vec<Embedding> = adapters.embeddings.iter().map(Embedding::read).collect::<Result<_>>()?;
        fit_embeddings_to_family(&embeddings, m)?;
        let wants = |c: Component| {
            let embeds = match c {
                Component::TextEncoder => !embeddings.is_empty(),
                // SDXL embeddings' `clip_g`, when the model has a second encoder
                // (a refiner-style export's one encoder is Component::TextEncoder).
                Component::TextEncoder2 => m.layout.text_encoder_2.is_some() && embeddings.iter().any(Embedding::is_sdxl),
                Component::Unet => false,
            };
            embeds || loaded.iter().any(|l| l.file.modules.iter().any(|x| x.component == c))
        };
        let index_of = |c: Component| -> Result<Option<Arc<lora::GraphIndex>>> {
            if !wants(c) {
                return Ok(None);
            }
            let file = match c {
                Component::Unet => &m.layout.unet,
                Component::TextEncoder => &m.layout.text_encoder,
                // fit_to_family refused TextEncoder2 modules for models without it.
                Component::TextEncoder2 => m.layout.text_encoder_2.as_ref().ok_or_else(|| Error::internal("no text_encoder_2"))?,
            };
            m.lora_indexes.get(file).map(Some)
        };
        let unet_index = index_of(Component::Unet)?;
        let text_index = index_of(Component::TextEncoder)?;
        let text2_index = index_of(Component::TextEncoder2)?;
        let mut unmatched = Vec::new();
        if let Some(i) = &unet_index {
            unmatched.extend(lora::unmatched(i, Component::Unet, &loaded));
        }
        if let Some(i) = &text_index {
            unmatched.extend(lora::unmatched(i, Component::TextEncoder, &loaded));
        }
        if let Some(i) = &text2_index {
            unmatched.extend(lora::unmatched(i, Component::TextEncoder2, &loaded));
        }
        let total: usize = loaded.iter().map(|l| l.file.modules.len()).sum();
        if !unmatched.is_empty() {
            let listed = unmatched.iter().take(LISTED_KEYS).cloned().collect::<Vec<_>>().join(", ");
            let more = if unmatched.len() > LISTED_KEYS { format!(" and {} more", unmatched.len() - LISTED_KEYS) } else { String::new() };
            let what = format!("{} of {total} LoRA modules match no layer of this model: {listed}{more}", unmatched.len());
            if !adapters.allow_unmatched {
                let hint = if unmatched.len() == total { " (a LoRA for another architecture, or an export without module names in its nodes?)" } else { "" };
                return Err(Error::adapter_mismatch(format!("{what}{hint}")));
            }
            m.runtime.logger().log(crate::runtime::LogLevel::Warning, &format!("{what}; skipped"));
        }
        // A graph with LoRA slots takes the set's factors as inputs when every
        // module of its component is a plain low-rank pair; otherwise merged.
        // `None`: merged.
        let slot_factors = |c: Component, g: &graph::Graph| -> Option<lora::slots::SlotMap> {
            if g.slot_inputs.is_empty() {
                return None;
            }
            match lora::slots::factors(c, &loaded, &lora::slots::slotted_keys(&g.slot_inputs)) {
                Some(f) => Some(Arc::new(f)),
                None => {
                    m.runtime.logger().info(&format!(
                        "{}: the LoRA set has modules a slot cannot take (LoHa, LoKr, full diff, DoRA, a kernel over 1x1, or a layer without a slot): merged into new sessions instead",
                        g.name
                    ));
                    None
                }
            }
        };
        let unet_factors = slot_factors(Component::Unet, &m.unet);
        let text_factors = slot_factors(Component::TextEncoder, &m.text_encoder);
        let text2_factors = m.xl.as_ref().and_then(|xl| xl.second.as_ref()).and_then(|(g, _, _)| slot_factors(Component::TextEncoder2, g));
        runtime.check_load_cancel("merging the U-Net's weights")?;
        let unet_overrides: lora::Overrides = match &unet_index {
            Some(_) if unet_factors.is_some() => Default::default(),
            Some(i) => Arc::new(lora::merge(i, Component::Unet, &loaded)?),
            None => Default::default(),
        };
        // SDXL: tokenizer_2 as it was before any embedding, and the one the new view uses.
        let base_tokenizer_2 =
            m.adapters.base_tokenizer_2.clone().or_else(|| m.xl.as_ref().and_then(|xl| xl.second.as_ref()).map(|(_, _, t)| Arc::clone(t)));
        let (text2_overrides, tokenizer_2): (lora::Overrides, _) = match &text2_index {
            Some(i) => {
                let mut merged = if text2_factors.is_some() { Vec::new() } else { lora::merge(i, Component::TextEncoder2, &loaded)? };
                let base = base_tokenizer_2.as_ref().ok_or_else(|| Error::internal("SDXL model without tokenizer_2"))?;
                let tokenizer = if embeddings.is_empty() {
                    Arc::clone(base)
                } else {
                    let rows: Vec<(&str, &[Vec<f32>])> =
                        embeddings.iter().filter_map(|e| e.vectors_2.as_deref().map(|v| (e.token.as_str(), v))).collect();
                    let (table, tokenizer) = extend_token_embedding(i, &rows, base, "SDXL `clip_g`, text_encoder_2: 1280")?;
                    merged.push(table);
                    Arc::new(tokenizer)
                };
                (Arc::new(merged), Some(tokenizer))
            }
            None => (Default::default(), base_tokenizer_2.clone()),
        };
        runtime.check_load_cancel("merging the text encoder's weights")?;
        let base_tokenizer = m.adapters.base_tokenizer.clone().unwrap_or_else(|| Arc::clone(&m.tokenizer));
        let (text_overrides, tokenizer): (lora::Overrides, _) = match &text_index {
            Some(i) => {
                let mut merged = if text_factors.is_some() { Vec::new() } else { lora::merge(i, Component::TextEncoder, &loaded)? };
                let tokenizer = if embeddings.is_empty() {
                    Arc::clone(&base_tokenizer)
                } else {
                    // A refiner-style export's one encoder is SDXL's second
                    // (`text_encoder_2`): it takes the `clip_g` vectors, as
                    // diffusers' refiner after `load_textual_inversion(state["clip_g"],
                    // text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)`.
                    let refiner = refiner_style(m);
                    let rows: Vec<(&str, &[Vec<f32>])> = embeddings
                        .iter()
                        .map(|e| (e.token.as_str(), if refiner { e.vectors_2.as_deref().unwrap_or(&[]) } else { e.vectors.as_slice() }))
                        .collect();
                    let widths = match (&m.xl, refiner) {
                        (_, true) => "SDXL `clip_g`, text_encoder_2, a refiner-style export's one encoder: 1280",
                        (Some(_), false) => "SDXL `clip_l`, text_encoder: 768",
                        (None, _) => "SD 1.x: 768, SD 2.x: 1024",
                    };
                    let (table, tokenizer) = extend_token_embedding(i, &rows, &base_tokenizer, widths)?;
                    merged.push(table);
                    Arc::new(tokenizer)
                };
                (Arc::new(merged), tokenizer)
            }
            None => (Default::default(), Arc::clone(&base_tokenizer)),
        };
        let merged_at = started.elapsed().as_secs_f64();
        let descriptions = loaded
            .iter()
            .map(|l| {
                let count = |c: Component| l.file.modules.iter().filter(|x| x.component == c).count();
                let (and, second) = match count(Component::TextEncoder2) {
                    0 => (" and", String::new()),
                    n => (",", format!(" and {n} text_encoder_2")),
                };
                let te_scale = l.spec.text_encoder_scale.map(|t| format!(", text encoders {t}")).unwrap_or_default();
                format!(
                    "{} scale {}{te_scale} ({} layout, {} U-Net{and} {} text-encoder{second} modules)",
                    l.spec.path.display(),
                    l.spec.scale,
                    l.file.layout,
                    count(Component::Unet),
                    count(Component::TextEncoder)
                )
            })
            .chain(embeddings.iter().map(|e| format!("embedding {} ({} vectors)", e.token, e.vectors.len())))
            .collect();
        let applied = AppliedAdapters {
            spec: adapters.clone(),
            descriptions,
            unet: unet_overrides,
            text_encoder: text_overrides,
            text_encoder_2: text2_overrides,
            unet_factors: unet_factors.unwrap_or_default(),
            text_encoder_factors: text_factors.unwrap_or_default(),
            text_encoder_2_factors: text2_factors.unwrap_or_default(),
            base_tokenizer: (!embeddings.is_empty()).then(|| Arc::clone(&base_tokenizer)),
            base_tokenizer_2: if embeddings.is_empty() { None } else { base_tokenizer_2.clone() },
        };

        // A graph whose overrides are empty here and in this model is the same graph: share it.
        // With LoRA slots the session is shared and only the feeds change.
        let same_unet = applied.unet.is_empty() && m.adapters.unet.is_empty();
        let same_text = applied.text_encoder.is_empty() && m.adapters.text_encoder.is_empty();
        let same_text_2 = applied.text_encoder_2.is_empty() && m.adapters.text_encoder_2.is_empty();
        let second = m.layout.text_encoder_2.as_deref().filter(|_| m.xl.is_some() && !same_text_2);
        let reopened: Vec<(&'static str, &std::path::Path)> = [(!same_unet).then_some(("unet", m.layout.unet.as_path())), (!same_text).then_some(("text_encoder", m.layout.text_encoder.as_path()))]
            .into_iter()
            .flatten()
            .chain(second.map(|p| ("text_encoder_2", p)))
            .collect();
        runtime.plan_load(&super::opened_at_load(&runtime, &m.layout, &reopened));
        let group = graph::ResidencyGroup::new(m.runtime.inner.residency);
        let unet = if same_unet {
            m.unet.refed(&applied.unet_factors)?.map_or_else(|| Arc::clone(&m.unet), Arc::new)
        } else {
            Arc::new(super::load_unet(&runtime, &m.layout, m.seamless, &group, &applied.unet)?.fed(&applied.unet_factors)?)
        };
        let fed = |a: &super::AppliedAdapters| (!a.text_encoder_factors.is_empty(), !a.text_encoder_2_factors.is_empty());
        // The same prompt gives other embeddings when either encoder's feeds change.
        let same_feeds = fed(&applied) == (false, false) && fed(&m.adapters) == (false, false);
        let text_encoder = if same_text {
            m.text_encoder.refed(&applied.text_encoder_factors)?.map_or_else(|| Arc::clone(&m.text_encoder), Arc::new)
        } else {
            Arc::new(super::load_text_encoder(&runtime, &m.layout, m.clip_skip, &group, &applied.text_encoder)?.fed(&applied.text_encoder_factors)?)
        };
        // SDXL caches both encoders' outputs in one cache: a new one when either changes.
        let embedding_cache = if same_text && same_text_2 && same_feeds {
            Arc::clone(&m.embedding_cache)
        } else {
            Arc::new(parking_lot::Mutex::new(text::EmbeddingCache::new(m.runtime.inner.embedding_cache_entries)))
        };
        let text2_refed = fed(&applied).1 || fed(&m.adapters).1;
        let xl = match (&m.xl, &m.layout.text_encoder_2) {
            // Only the second encoder's session (or its feeds) change; the rest is shared.
            (Some(xl), Some(path)) if !same_text_2 || text2_refed => {
                let (old, io, _) = xl.second.as_ref().ok_or_else(|| Error::internal("SDXL model without its second encoder"))?;
                let tokenizer = tokenizer_2.ok_or_else(|| Error::internal("SDXL model without tokenizer_2"))?;
                let g = match same_text_2 {
                    true => old.refed(&applied.text_encoder_2_factors)?.ok_or_else(|| Error::internal("text_encoder_2 fed without slots"))?,
                    false => super::load_text_encoder_2(&runtime, &m.layout, path, &group, &applied.text_encoder_2)?.fed(&applied.text_encoder_2_factors)?,
                };
                Some(Arc::new(super::xl::XlText {
                    second: Some((Arc::new(g), io.clone(), tokenizer)),
                    text_embeds: xl.text_embeds.clone(),
                    time_ids: xl.time_ids.clone(),
                    aesthetic: xl.aesthetic,
                    force_zeros: xl.force_zeros,
                }))
            }
            (xl, _) => xl.clone(),
        };
        // A fed U-Net on the model's own session: unet_controlnet too (loaded
        // once by the model, in a ControlNet folder, so no view opens its own).
        let fed_unet = applied.unet.is_empty() && m.adapters.unet.is_empty() && !m.unet.slot_inputs.is_empty();
        if fed_unet && m.layout.unet_controlnet.is_some() {
            // A failure is the ControlNet job's to report, as without slots.
            let _ = m.residual_unet();
        }
        let controlnets = match fed_unet {
            true => m.controlnets.for_fed_view(&applied.unet_factors)?.unwrap_or_else(|| m.controlnets.for_lora_view()),
            false => m.controlnets.for_lora_view(),
        };
        m.runtime.logger().info(&format!(
            "applied {} LoRA(s): {} U-Net, {} text-encoder and {} text_encoder_2 layers fed to LoRA slots; {} U-Net, {} text-encoder and {} text_encoder_2 weights merged in {:.2} s, sessions ready after {:.2} s",
            loaded.len(),
            applied.unet_factors.len(),
            applied.text_encoder_factors.len(),
            applied.text_encoder_2_factors.len(),
            applied.unet.len(),
            applied.text_encoder.len(),
            applied.text_encoder_2.len(),
            merged_at,
            started.elapsed().as_secs_f64()
        ));
        Ok(Model {
            inner: Arc::new(ModelInner {
                runtime: m.runtime.clone(),
                layout: m.layout.clone(),
                tokenizer,
                text_io: super::text_encoder_io(&text_encoder)?,
                text_encoder,
                unet_io: super::unet_io(&unet)?,
                unet,
                vae_io: m.vae_io.clone(),
                vae_decoder: Arc::clone(&m.vae_decoder),
                vae_decoder_f32: Arc::clone(&m.vae_decoder_f32),
                preview_decoder: m.preview_decoder.clone(),
                preview_projection: Arc::clone(&m.preview_projection),
                residency: group,
                embedding_cache,
                seamless: m.seamless,
                clip_skip: m.clip_skip,
                xl,
                variants: Default::default(),
                base: None,
                vae_encoder: Arc::clone(&m.vae_encoder),
                matting: Arc::clone(&m.matting),
                adapters: Arc::new(applied),
                lora_indexes: Arc::clone(&m.lora_indexes),
                controlnets,
                static_unets: Default::default(),
                step_graphs: Default::default(),
            }),
        })
    }

    /// The adapters merged into this model (empty for a plain model).
    pub fn adapters(&self) -> &Adapters {
        &self.inner.adapters.spec
    }

    /// One line per applied LoRA: file, scale, layout and module counts.
    pub fn adapter_descriptions(&self) -> &[String] {
        &self.inner.adapters.descriptions
    }

    /// Names of the initializers replaced by merged weights: (U-Net, text encoder).
    pub fn merged_initializers(&self) -> (Vec<&str>, Vec<&str>) {
        fn names(o: &lora::Overrides) -> Vec<&str> {
            o.iter().map(|(n, _)| n.as_str()).collect()
        }
        (names(&self.inner.adapters.unet), names(&self.inner.adapters.text_encoder))
    }

    /// Layers whose LoRA factors are fed to slots instead of merged
    /// ([`super::ModelOptions::lora_slots`]): (U-Net, text encoders).
    pub fn lora_fed_layers(&self) -> (usize, usize) {
        let a = &self.inner.adapters;
        (a.unet_factors.len(), a.text_encoder_factors.len() + a.text_encoder_2_factors.len())
    }
}

/// Checks the LoRAs are for this model's family and, on SDXL, maps kohya's
/// SGM-named U-Net keys to diffusers' names (the export's node names).
fn fit_to_family(loaded: &mut [LoadedLora], m: &ModelInner) -> Result<()> {
    for l in loaded.iter_mut() {
        let file = l.spec.path.display().to_string();
        match (&m.xl, &l.file.sdxl_key) {
            (None, Some(key)) => {
                return Err(Error::adapter_mismatch(format!("LoRA {file}: `{key}` is from a LoRA for SDXL (two text encoders, SGM U-Net names); this model is SD 1.x/2.x-shaped")))
            }
            (Some(_), _) if refiner_style(m) && l.file.modules.iter().any(|x| x.component != Component::Unet) => {
                return Err(Error::unsupported(format!(
                    "LoRA {file} adapts text encoders, and this SDXL export has only `text_encoder_2` as its one encoder (refiner-style): Kiln applies U-Net-only LoRAs to such exports"
                )))
            }
            (Some(_), _) => {
                for x in l.file.modules.iter_mut().filter(|x| x.component == Component::Unet) {
                    if let Some(key) = lora::sgm::to_diffusers(&x.key, m.layout.unet_config.layers_per_block) {
                        x.key = key;
                    }
                }
            }
            (None, None) => {}
        }
    }
    Ok(())
}

/// Whether `m` is an SDXL export with `text_encoder_2` as its one encoder (a refiner).
fn refiner_style(m: &ModelInner) -> bool {
    m.xl.as_ref().is_some_and(|xl| xl.second.is_none())
}

/// Checks each embedding is for this model's family: SD 1.x/2.x embeddings
/// (one vector set) on SD models, SDXL ones (`clip_l` + `clip_g`) on SDXL
/// models (a refiner-style export takes only their `clip_g`).
fn fit_embeddings_to_family(embeddings: &[Embedding], m: &ModelInner) -> Result<()> {
    for e in embeddings {
        match (&m.xl, e.is_sdxl()) {
            (None, true) => {
                return Err(Error::adapter_mismatch(format!("embedding {}: `clip_l`/`clip_g` tensors are an SDXL embedding; this model is SD 1.x/2.x-shaped", e.token)))
            }
            (Some(_), false) => {
                return Err(Error::adapter_mismatch(format!(
                    "embedding {}: an SD 1.x/2.x embedding (one vector set); this SDXL model needs an SDXL embedding with `clip_l` and `clip_g` tensors",
                    e.token
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A text encoder's token-embedding table with the embeddings' vectors
/// appended (`(token, vectors)` pairs), and the tokenizer that knows their
/// tokens. `widths` names the widths that fit, for the mismatch message.
fn extend_token_embedding(
    index: &lora::GraphIndex,
    embeddings: &[(&str, &[Vec<f32>])],
    tokenizer: &ClipTokenizer,
    widths: &str,
) -> Result<((String, Arc<ort::value::DynValue>), ClipTokenizer)> {
    let slot = index.token_embedding.as_ref().ok_or_else(|| {
        Error::unsupported(format!("{}: no token-embedding Gather found, so embeddings cannot be added", index.file.display()))
    })?;
    let (rows, dim) = match slot.dims.as_slice() {
        [r, d] => (*r, *d),
        other => return Err(Error::model(format!("token embedding `{}` has shape {other:?}", slot.initializer))),
    };
    let mut table = index.read_f32(slot)?;
    let mut tokens = Vec::new();
    let mut next = rows as u32;
    for &(token, vectors) in embeddings {
        if let Some(v) = vectors.iter().find(|v| v.len() != dim) {
            return Err(Error::adapter_mismatch(format!(
                "embedding {token}: its vectors are {} wide but this model's token embeddings in {} are {dim} ({widths}): made for another architecture",
                v.len(),
                index.file.display()
            )));
        }
        let ids: Vec<u32> = (0..vectors.len() as u32).map(|i| next + i).collect();
        next += ids.len() as u32;
        vectors.iter().for_each(|v| table.extend_from_slice(v));
        tokens.push((token.to_string(), ids));
    }
    let mut grown = slot.clone();
    grown.dims[0] = next as usize;
    let value = lora::tensor(&grown, table)?;
    Ok(((slot.initializer.clone(), Arc::new(value)), tokenizer.with_tokens(&tokens)?))
}
