//! `generate`: Kiln's command-line face. Generates one image and writes a PNG
//! (with the prompt, seed and settings in PNG text chunks).
//!
//! ```text
//! cargo run --release --example generate -- --prompt "mossy stone brick wall" --out brick.png
//! ```
use std::path::PathBuf;
use std::process::ExitCode;

use kiln::pipeline::outputs::{self, PostProcess};
use kiln::pipeline::{GenerateRequest, Hooks, InitialNoise, PromptSyntax};
use kiln::{Model, Runtime, RuntimeOptions, SchedulerKind};

const USAGE: &str = "usage: generate [options]
  --model DIR             model folder (default: the bundled default model)
  --prompt TEXT           what to draw (default: empty)
  --negative-prompt TEXT  what to avoid
  --weighted-prompt       read both prompts with AUTOMATIC1111 syntax: (word) x1.1, [word] /1.1,
                          (word:1.5), \\( \\) escapes, BREAK, and more than 75 tokens
  --steps N               denoising steps (default 20)
  --guidance G            classifier-free guidance scale (default 7.5; <= 1 disables)
  --scheduler NAME        default | ddim | euler | euler_a | pndm | dpmpp_2m | dpmpp_2m_karras |
                          dpmpp_2m_sde | lms | heun | unipc | lcm
  --guidance-rescale PHI  diffusers' guidance_rescale, 0..=1 (default 0)
  --scheduler-config JSON fields that override scheduler_config.json, e.g. {\"timestep_spacing\": \"trailing\"}
  --width N, --height N   size in pixels (default: the model's native size)
  --seed N                seed of the noise (default 0)
  --noise NAME            kiln (default: Kiln's portable noise, the same on every platform) | torch
                          (PyTorch's CPU generator: the seed gives diffusers' image for that seed,
                          generator=torch.Generator(\"cpu\").manual_seed(N), and ComfyUI's noise) |
                          torch_cuda (PyTorch's CUDA generator, computed here: AUTOMATIC1111's
                          default seeds, diffusers with torch.Generator(\"cuda\"))
  --variation-seed N      AUTOMATIC1111's variation seed: the starting noise is blended with this
  --variation-strength S  seed's (same generator) by S in 0..1 (default 0: none; 1: its noise)
  --init-noise FILE.npy   exact initial latents, float32 [1, C, H/8, W/8] (as diffusers' latents=)
  --noise-draws FILE.npz  replay diffusers' random draws exactly: arrays draw_0, draw_1, ... in the
                          order its pipeline asks for them after the txt2img initial latents (img2img:
                          VAE posterior sample, add-noise draw; then each stochastic sampler step);
                          other arrays are ignored
  --init-image FILE.png   img2img: start from this picture (resized if its size differs)
  --strength S            img2img: how much of the schedule runs, 0..=1 (default 0.8)
  --mask FILE.png         inpainting: white (>= 128) is repainted, the rest kept exactly
  --extend L,R,T,B        outpaint the --init-image by these pixels per side
  --make-tileable BAND    make the --init-image tile (inpaint a BAND-pixel cross after offsetting it;
                          implies --seamless xy)
  --seamless AXES         x | y | xy: the texture tiles along these axes
  --clip-skip N           take text embeddings N layers before the encoder's end
  --quantize int8|none    load the text encoders and U-Net (the --refiner's too) with int8
                          matrix weights (less memory; pictures close to, not equal to, the
                          float model's)
  --attention MODE        auto | exported | fused: run the U-Net's attention layers as ONNX
                          Runtime's fused MultiHeadAttention (auto, the default: when the
                          graphs run on the CPU provider) or as exported
  --lora-slots            load the U-Net and text encoders with LoRA slots: --lora files that
                          are plain low-rank LoRAs are fed at run time instead of merged
  --vae-tile SIZE|auto    tiled VAE decode/encode: SIZE-pixel tiles, or auto = tiles only when a
                          whole pass is estimated above --vae-memory (wrap on --seamless axes)
  --vae-tile-overlap PX   overlap of VAE tiles (default: a quarter of the tile)
  --vae-memory MIB        memory budget for --vae-tile auto (default 2048)
  --fast-decode           final image from the model's tiny preview decoder (preview_decoder/)
  --prompt-2 TEXT         SDXL: prompt for the second text encoder (default: --prompt)
  --negative-prompt-2 TEXT
                          SDXL: negative prompt for the second text encoder (default: --negative-prompt)
  --original-size WxH     SDXL: size conditioning (default: the output size)
  --target-size WxH       SDXL: target size conditioning (default: the output size)
  --crop-top-left T,L     SDXL: crop conditioning (default 0,0)
  --negative-original-size WxH, --negative-target-size WxH, --negative-crop-top-left T,L
                          SDXL: the unconditional side's (text-to-image uses them when both sizes are given)
  --aesthetic-score S, --negative-aesthetic-score S
                          SDXL refiner-style U-Nets (default 6.0, 2.5)
  --refiner DIR           hand the latents to this second model part-way through the schedule
                          (diffusers' denoising_end/denoising_start); it finishes and decodes
  --refiner-start F       fraction of the schedule --model runs before --refiner, 0 < F < 1 (default 0.8)
  --lora FILE[:SCALE[:TE]]
                          merge a LoRA (.safetensors, kohya or diffusers/PEFT layout; LyCORIS
                          LoHa/LoKr/full too) into the U-Net and text encoder with this strength
                          (default 1.0; TE: the text encoders' own, as ComfyUI's strength_clip);
                          repeatable
  --embedding FILE[:TOKEN]
                          add a textual-inversion embedding (.safetensors: A1111 emb_params or
                          diffusers learned_embeds) as TOKEN (default: the file's); repeatable;
                          a --refiner takes it too (an SDXL file's clip_g)
  --controlnet NAME       guide with the model's controlnet/NAME (repeatable; the --control-*
                          flags after it set that ControlNet's image and settings)
  --control-image FILE    its control image (resized to the output; same aspect ratio)
  --control-scale S       its conditioning scale (default 1)
  --control-start A       fraction of the schedule before it starts (default 0)
  --control-end B         fraction after which it stops (default 1)
  --control-preprocess canny|height|tile|none
                          make the control image from FILE first (default none)
  --guess-mode            diffusers' guess mode (ControlNet on the conditional half only)
  --sprite                cut out a sprite with alpha: the model's matting graph (matting/model.onnx)
                          when it has one, else a chroma key of the flat background (despill)
  --matting PATH          matting graph for --sprite: a folder with model.onnx (+ config.json) or
                          an ONNX file (+ the .json of its name)
  --pixel-art CELL:COLORS snap to CELL-pixel cells and quantize to COLORS colours
  --upscale PATH          upscale the result with a super-resolution graph (ESRGAN family: a folder
                          with model.onnx (+ config.json) or an ONNX file (+ the .json of its name)),
                          tile by tile, wrapping on the --seamless axes so a tileable texture stays
                          tileable; before --sprite and the maps
  --upscale-tile N        tile side in pixels for --upscale (default 256; 0 = whole image at once)
  --upscale-context N     pixels read around each tile and discarded (default 16)
  --height-map FILE.png   also write a height map of the result
  --normal-map FILE.png   also write an OpenGL normal map (tiles when --seamless)
  --out FILE.png          output image (default: kiln.png)
  --batch FILE.tsv        many images, one model load: each line is OUT.png<TAB>SEED<TAB>PROMPT
                          (every other option applies to all; blank lines and # comments skipped)
  --out-npy FILE.npy      float32 HWC RGB image in [0,1] before quantization
  --out-latents FILE.npy  final latents before VAE decoding (unscaled)
  --onnxruntime PATH      ONNX Runtime library to load (default: search)
  --threads N             threads per graph (default: all cores)
  --provider LIST         execution providers, best first: cpu,cuda,tensorrt,directml,coreml
  --require-provider      fail instead of falling back to the CPU
  --gpu-math fast|exact   fast (default): CUDA uses TF32 tensor cores; exact: full float32, matches the CPU
  --gpu-mem-limit MIB     cap each CUDA session's memory arena at MIB mebibytes
  --static-unet           run the U-Net specialised to the job's size and batch (shapes folded to
                          constants, so nothing of it stays on the CPU under CUDA)
  --cuda-graph            with CUDA: capture the specialised U-Net in a CUDA graph and replay it
                          each step (implies --static-unet)
  --device-latents        keep latents, guidance and the scheduler step on the U-Net's device between
                          steps (CUDA or CPU; linear schedulers; others run the host loop)
  --graph-cache DIR       keep ONNX Runtime's optimized graphs in DIR so later starts skip optimizing
  --residency all|per-stage
                          per-stage: only the graph in use is loaded (least memory; each loads when its stage runs)
  --sequential-load       load the graphs one after another instead of at once on three threads
  --help                  this text";

/// The model used without --model: the bundled default model when present,
/// else the tiny random-weight test fixture (which makes noise-like images).
fn default_model() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bundled = root.join("models").join("kiln-tiny-textures");
    if bundled.join("model_index.json").is_file() {
        bundled
    } else {
        root.join("tests").join("fixtures").join("tiny-sd")
    }
}


struct Args {
    model: PathBuf,
    request: GenerateRequest,
    init_noise: Option<PathBuf>,
    noise_draws: Option<PathBuf>,
    out: PathBuf,
    out_npy: Option<PathBuf>,
    out_latents: Option<PathBuf>,
    onnxruntime: Option<PathBuf>,
    threads: usize,
    providers: kiln::runtime::ProviderPolicy,
    graph_cache: Option<PathBuf>,
    residency: kiln::model::Residency,
    sequential_load: bool,
    init_image: Option<PathBuf>,
    mask: Option<PathBuf>,
    seamless: kiln::model::seamless::Seamless,
    quantization: kiln::model::quantize::Quantization,
    attention: kiln::model::attention::Attention,
    lora_slots: bool,
    extend: Option<kiln::pipeline::texture::Extend>,
    make_tileable: Option<usize>,
    sprite: bool,
    matting: Option<PathBuf>,
    pixel_art: Option<(u32, u32)>,
    upscaler: Option<PathBuf>,
    upscale: kiln::model::upscaler::UpscaleOptions,
    height_map: Option<PathBuf>,
    normal_map: Option<PathBuf>,
    batch: Option<PathBuf>,
    loras: Vec<kiln::model::LoraSpec>,
    embeddings: Vec<kiln::model::EmbeddingSpec>,
    /// `--controlnet` entries with their `--control-*` settings.
    controls: Vec<(kiln::pipeline::control::Control, Option<PathBuf>)>,
    /// `--refiner` folder and `--refiner-start` fraction.
    refiner: Option<PathBuf>,
    refiner_start: f32,
}

/// `FILE[:TOKEN]`; a drive letter (`C:\...`) is not a token.
fn embedding_arg(v: &str) -> kiln::model::EmbeddingSpec {
    match v.rsplit_once(':') {
        Some((p, t)) if p.len() > 1 && !t.is_empty() && !t.contains(['/', '\\']) => {
            kiln::model::EmbeddingSpec { path: PathBuf::from(p), token: Some(t.to_string()) }
        }
        _ => kiln::model::EmbeddingSpec { path: PathBuf::from(v), token: None },
    }
}

/// `FILE[:SCALE[:TEXT_ENCODER_SCALE]]`: scales are what follow the last
/// `:`s when they are numbers, so Windows paths (`C:\...`) without a scale
/// still work; a second number is the text encoders' own strength.
fn lora_arg(v: &str) -> Result<kiln::model::LoraSpec, String> {
    // `rest:number` → (rest, number); None when what follows the last `:` is not a number.
    let number_after = |v: &str| -> Result<Option<(String, f32)>, String> {
        match v.rsplit_once(':') {
            Some((p, s)) if !p.is_empty() => match s.parse::<f32>() {
                Ok(x) if x.is_finite() => Ok(Some((p.to_string(), x))),
                Ok(_) => Err(format!("--lora: scale {s:?} is not finite")),
                Err(_) => Ok(None),
            },
            _ => Ok(None),
        }
    };
    let Some((rest, last)) = number_after(v)? else { return Ok(kiln::model::LoraSpec::new(v, 1.0)) };
    Ok(match number_after(&rest)? {
        Some((path, scale)) => kiln::model::LoraSpec { text_encoder_scale: Some(last), ..kiln::model::LoraSpec::new(path, scale) },
        None => kiln::model::LoraSpec::new(rest, last),
    })
}

/// One image to make: where it goes, and the seed and prompt that differ per `--batch` line.
struct Job {
    out: PathBuf,
    seed: u64,
    prompt: String,
}

/// Reads a `--batch` file: `OUT.png<TAB>SEED<TAB>PROMPT` per line.
fn read_batch(path: &std::path::Path) -> Result<Vec<Job>, kiln::Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| kiln::Error::new(kiln::ErrorKind::Io, format!("{}: {e}", path.display())))?;
    let mut jobs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || kiln::Error::new(kiln::ErrorKind::InvalidArgument, format!("{}:{}: expected OUT.png<TAB>SEED<TAB>PROMPT", path.display(), n + 1));
        let mut cols = line.splitn(3, '\t');
        let (Some(out), Some(seed), Some(prompt)) = (cols.next(), cols.next(), cols.next()) else { return Err(bad()) };
        let seed = seed.trim().parse().map_err(|_| bad())?;
        jobs.push(Job { out: PathBuf::from(out), seed, prompt: prompt.to_string() });
    }
    Ok(jobs)
}

fn parse(argv: &[String]) -> Result<Option<Args>, String> {
    let mut a = Args {
        model: default_model(),
        request: GenerateRequest::default(),
        init_noise: None,
        noise_draws: None,
        out: PathBuf::from("kiln.png"),
        out_npy: None,
        out_latents: None,
        onnxruntime: None,
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        providers: Default::default(),
        graph_cache: None,
        residency: Default::default(),
        sequential_load: false,
        init_image: None,
        mask: None,
        seamless: Default::default(),
        quantization: Default::default(),
        attention: Default::default(),
        lora_slots: false,
        extend: None,
        make_tileable: None,
        sprite: false,
        matting: None,
        pixel_art: None,
        upscaler: None,
        upscale: Default::default(),
        height_map: None,
        normal_map: None,
        batch: None,
        loras: Vec::new(),
        embeddings: Vec::new(),
        controls: Vec::new(),
        refiner: None,
        refiner_start: 0.8,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        fn number<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: {v:?} is not a valid number"))
        }
        // "WxH" sizes and "T,L" crops: two whole numbers around `sep`.
        fn two(flag: &str, v: &str, sep: char) -> Result<[usize; 2], String> {
            v.split_once(sep)
                .and_then(|(a, b)| Some([a.trim().parse().ok()?, b.trim().parse().ok()?]))
                .ok_or_else(|| format!("{flag}: {v:?} is not two whole numbers separated by '{sep}'"))
        }
        match flag.as_str() {
            "--model" => a.model = PathBuf::from(value()?),
            "--prompt" => a.request.prompt = value()?,
            "--negative-prompt" => a.request.negative_prompt = value()?,
            "--weighted-prompt" => a.request.prompt_syntax = PromptSyntax::Weighted,
            "--steps" => a.request.steps = number(flag, value()?)?,
            "--guidance" => a.request.guidance_scale = number(flag, value()?)?,
            "--guidance-rescale" => {
                let phi: f32 = number(flag, value()?)?;
                if !(0.0..=1.0).contains(&phi) {
                    return Err(format!("--guidance-rescale must be within 0..=1, got {phi}"));
                }
                a.request.guidance_rescale = phi;
            }
            "--scheduler" => {
                let v = value()?;
                a.request.scheduler = SchedulerKind::from_name(&v)
                    .ok_or_else(|| format!("--scheduler: unknown {v:?}; one of {}", SchedulerKind::NAMES.join(", ")))?;
            }
            "--width" => a.request.width = number(flag, value()?)?,
            "--height" => a.request.height = number(flag, value()?)?,
            "--seed" => a.request.seed = number(flag, value()?)?,
            "--variation-seed" => a.request.variation_seed = number(flag, value()?)?,
            "--variation-strength" => a.request.variation_strength = number(flag, value()?)?,
            "--noise" => {
                let v = value()?;
                a.request.noise = kiln::pipeline::NoiseGenerator::from_name(&v).ok_or_else(|| format!("--noise: unknown {v:?}; one of {}", kiln::pipeline::NoiseGenerator::NAMES.join(", ")))?;
            }
            "--init-noise" => a.init_noise = Some(PathBuf::from(value()?)),
            "--noise-draws" => a.noise_draws = Some(PathBuf::from(value()?)),
            "--out" => a.out = PathBuf::from(value()?),
            "--batch" => a.batch = Some(PathBuf::from(value()?)),
            "--init-image" => a.init_image = Some(PathBuf::from(value()?)),
            "--mask" => a.mask = Some(PathBuf::from(value()?)),
            "--extend" => {
                let v = value()?;
                let parts: Vec<usize> = v.split(',').map(|p| p.trim().parse::<usize>()).collect::<Result<_, _>>()
                    .map_err(|_| format!("--extend: {v:?} is not four numbers L,R,T,B"))?;
                let [l, r, t, b] = parts[..] else { return Err(format!("--extend: {v:?} is not four numbers L,R,T,B")) };
                a.extend = Some(kiln::pipeline::texture::Extend { left: l, right: r, top: t, bottom: b });
            }
            "--make-tileable" => a.make_tileable = Some(number(flag, value()?)?),
            "--sprite" => a.sprite = true,
            "--matting" => a.matting = Some(PathBuf::from(value()?)),
            "--pixel-art" => {
                let v = value()?;
                let (cell, colors) = v
                    .split_once(':')
                    .and_then(|(c, n)| Some((c.parse::<u32>().ok()?, n.parse::<u32>().ok()?)))
                    .ok_or_else(|| format!("--pixel-art: {v:?} is not CELL:COLORS"))?;
                a.pixel_art = Some((cell, colors));
            }
            "--upscale" => a.upscaler = Some(PathBuf::from(value()?)),
            "--upscale-tile" => a.upscale.tile = number(flag, value()?)?,
            "--upscale-context" => a.upscale.context = number(flag, value()?)?,
            "--height-map" => a.height_map = Some(PathBuf::from(value()?)),
            "--normal-map" => a.normal_map = Some(PathBuf::from(value()?)),
            "--strength" => a.request.strength = number(flag, value()?)?,
            "--clip-skip" => a.request.clip_skip = number(flag, value()?)?,
            "--prompt-2" => a.request.prompt_2 = value()?,
            "--negative-prompt-2" => a.request.negative_prompt_2 = value()?,
            "--original-size" => a.request.xl.original_size = Some(two(flag, &value()?, 'x')?),
            "--target-size" => a.request.xl.target_size = Some(two(flag, &value()?, 'x')?),
            "--crop-top-left" => a.request.xl.crop_top_left = two(flag, &value()?, ',')?,
            "--negative-original-size" => a.request.xl.negative_original_size = Some(two(flag, &value()?, 'x')?),
            "--negative-target-size" => a.request.xl.negative_target_size = Some(two(flag, &value()?, 'x')?),
            "--negative-crop-top-left" => a.request.xl.negative_crop_top_left = two(flag, &value()?, ',')?,
            "--aesthetic-score" => a.request.xl.aesthetic_score = number(flag, value()?)?,
            "--negative-aesthetic-score" => a.request.xl.negative_aesthetic_score = number(flag, value()?)?,
            "--refiner" => a.refiner = Some(PathBuf::from(value()?)),
            "--refiner-start" => a.refiner_start = number(flag, value()?)?,
            "--lora" => a.loras.push(lora_arg(&value()?)?),
            "--embedding" => a.embeddings.push(embedding_arg(&value()?)),
            "--controlnet" => {
                let empty = kiln::image::control::ControlImage { width: 0, height: 0, channels: 3, data: Vec::new() };
                a.controls.push((kiln::pipeline::control::Control::new(value()?, empty), None));
            }
            "--control-image" | "--control-scale" | "--control-start" | "--control-end" | "--control-preprocess" => {
                let v = value()?;
                let (c, image) = a.controls.last_mut().ok_or_else(|| format!("{flag} needs a --controlnet NAME before it"))?;
                match flag.as_str() {
                    "--control-image" => *image = Some(PathBuf::from(v)),
                    "--control-scale" => c.scale = number(flag, v)?,
                    "--control-start" => c.start = number(flag, v)?,
                    "--control-end" => c.end = number(flag, v)?,
                    _ => {
                        c.preprocess = kiln::image::control::Preprocess::from_name(&v)
                            .ok_or_else(|| format!("--control-preprocess: {v:?} is not canny, height, tile or none"))?
                    }
                }
            }
            "--guess-mode" => a.request.guess_mode = true,
            "--scheduler-config" => {
                let v = value()?;
                let json: serde_json::Value = serde_json::from_str(&v).map_err(|e| format!("--scheduler-config: {e}"))?;
                if !json.is_object() {
                    return Err("--scheduler-config must be a JSON object".into());
                }
                a.request.scheduler_overrides = Some(json);
            }
            "--vae-tile" => {
                let v = value()?;
                if v == "auto" {
                    if a.request.vae_tiling.memory_budget == 0 {
                        a.request.vae_tiling.memory_budget = 2048 << 20;
                    }
                } else {
                    a.request.vae_tiling.tile_size = v.parse().map_err(|_| format!("--vae-tile: {v:?} is not a pixel size or auto"))?;
                }
            }
            "--vae-tile-overlap" => {
                let v = value()?;
                a.request.vae_tiling.overlap = v.parse().map_err(|_| format!("--vae-tile-overlap: {v:?} is not a pixel count"))?;
            }
            "--vae-memory" => {
                let v = value()?;
                let mib: u64 = v.parse().map_err(|_| format!("--vae-memory: {v:?} is not a MiB count"))?;
                a.request.vae_tiling.memory_budget = mib << 20;
            }
            "--fast-decode" => a.request.decoder = kiln::pipeline::FinalDecoder::Preview,
            "--seamless" => {
                let v = value()?;
                a.seamless = kiln::model::seamless::Seamless::from_name(&v)
                    .ok_or_else(|| format!("--seamless: {v:?} is not x, y, xy or none"))?;
            }
            "--quantize" => {
                let v = value()?;
                a.quantization = kiln::model::quantize::Quantization::from_name(&v).ok_or_else(|| format!("--quantize: {v:?} is not int8 or none"))?;
            }
            "--attention" => {
                let v = value()?;
                a.attention = kiln::model::attention::Attention::from_name(&v)
                    .ok_or_else(|| format!("--attention: {v:?} is not auto, exported or fused"))?;
            }
            "--lora-slots" => a.lora_slots = true,
            "--out-npy" => a.out_npy = Some(PathBuf::from(value()?)),
            "--out-latents" => a.out_latents = Some(PathBuf::from(value()?)),
            "--onnxruntime" => a.onnxruntime = Some(PathBuf::from(value()?)),
            "--threads" => a.threads = number(flag, value()?)?,
            "--provider" => a.providers.preferred.extend(kiln::runtime::Provider::list_from_names(&value()?).map_err(|e| format!("--provider: {e}"))?),
            "--require-provider" => a.providers.require = true,
            "--gpu-math" => {
                let v = value()?;
                a.providers.gpu_math = kiln::runtime::GpuMath::from_name(&v).ok_or(format!("--gpu-math: fast or exact, not {v:?}"))?
            }
            "--gpu-mem-limit" => {
                let v = value()?;
                let mib: usize = v.parse().map_err(|_| format!("--gpu-mem-limit: a number of MiB, not {v:?}"))?;
                a.providers.gpu_memory_limit = mib.checked_mul(1 << 20).ok_or("--gpu-mem-limit: too large")?;
            }
            "--static-unet" => a.providers.static_unet = true,
            "--cuda-graph" => a.providers.cuda_graph = true,
            "--device-latents" => a.providers.device_latents = true,
            "--graph-cache" => a.graph_cache = Some(PathBuf::from(value()?)),
            "--residency" => {
                let v = value()?;
                a.residency = kiln::model::Residency::from_name(&v).ok_or_else(|| format!("--residency: {v:?} is not all or per-stage"))?;
            }
            "--sequential-load" => a.sequential_load = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if a.request.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    if a.matting.is_some() && !a.sprite {
        return Err("--matting is for --sprite".into());
    }
    if a.upscaler.is_some() && a.pixel_art.is_some() {
        return Err("--upscale and --pixel-art do not combine: pixel art scales its cells itself".into());
    }
    let picture_jobs = [("--mask", a.mask.is_some()), ("--extend", a.extend.is_some()), ("--make-tileable", a.make_tileable.is_some())];
    if let [first, second, ..] = picture_jobs.iter().filter(|(_, on)| *on).map(|(f, _)| *f).collect::<Vec<_>>()[..] {
        return Err(format!("{first} and {second} are different jobs on the picture; give one"));
    }
    if (a.extend.is_some() || a.make_tileable.is_some()) && (a.request.width != 0 || a.request.height != 0) {
        return Err("--extend and --make-tileable take their size from the picture: drop --width and --height".into());
    }
    if a.make_tileable.is_some() {
        // The result tiles on both axes, so the upscale and the material maps
        // wrap on both (and the model loads as the xy view make_tileable runs).
        use kiln::model::seamless::Seamless;
        if !matches!(a.seamless, Seamless::None | Seamless::Xy) {
            return Err("--make-tileable makes the picture tile on both axes: --seamless must be xy or left out".into());
        }
        a.seamless = Seamless::Xy;
    }
    Ok(Some(a))
}

fn run(mut a: Args) -> Result<(), kiln::Error> {
    let runtime = Runtime::new(&RuntimeOptions {
        onnxruntime_path: a.onnxruntime.clone(),
        intra_op_threads: a.threads,
        providers: a.providers.clone(),
        graph_cache_dir: a.graph_cache.clone(),
        residency: a.residency,
        sequential_load: a.sequential_load,
        ..Default::default()
    })?;
    let t0 = std::time::Instant::now();
    // A seamless load holds only the rewritten U-Net and decoder.
    let options = kiln::ModelOptions { seamless: a.seamless, matting: a.matting.clone(), quantization: a.quantization, attention: a.attention, lora_slots: a.lora_slots };
    let mut model = Model::load_with(&runtime, &a.model, &options)?;
    if !a.loras.is_empty() || !a.embeddings.is_empty() {
        let adapters = kiln::model::Adapters { loras: a.loras.clone(), embeddings: a.embeddings.clone(), ..Default::default() };
        model = model.with_adapters(&adapters)?;
        for line in model.adapter_descriptions() {
            eprintln!("lora: {line}");
        }
    }
    if let Some(dir) = &a.refiner {
        // --quantize covers every model the run loads.
        let mut refiner = Model::load_with(&runtime, dir, &kiln::ModelOptions { quantization: a.quantization, attention: a.attention, ..Default::default() })?;
        // The refiner reads the same prompt, so it learns the same tokens (an
        // SDXL file's `clip_g` into its one encoder); LoRAs stay --model's.
        if !a.embeddings.is_empty() {
            refiner = refiner.with_adapters(&kiln::model::Adapters { embeddings: a.embeddings.clone(), ..Default::default() })?;
            for line in refiner.adapter_descriptions() {
                eprintln!("refiner: {line}");
            }
        }
        a.request.refiner = Some(kiln::pipeline::handoff::Refiner { model: refiner, start: a.refiner_start });
    }
    let upscaler = a.upscaler.as_deref().map(|p| kiln::model::upscaler::Upscaler::load(&runtime, p)).transpose()?;
    let load_s = t0.elapsed().as_secs_f64();
    for (graph, choice) in model.graph_providers() {
        eprintln!("{graph}: {}", choice.describe());
    }
    let jobs = match &a.batch {
        Some(path) => read_batch(path)?,
        None => vec![Job { out: a.out.clone(), seed: a.request.seed, prompt: a.request.prompt.clone() }],
    };
    for job in &jobs {
        let mut request = a.request.clone();
        request.seed = job.seed;
        request.prompt = job.prompt.clone();
        generate_one(&a, &runtime, &model, upscaler.as_ref(), request, &job.out, load_s)?;
    }
    Ok(())
}

fn generate_one(
    a: &Args,
    runtime: &Runtime,
    model: &Model,
    upscaler: Option<&kiln::model::upscaler::Upscaler>,
    mut request: GenerateRequest,
    out_path: &std::path::Path,
    load_s: f64,
) -> Result<(), kiln::Error> {
    if let Some(path) = &a.init_noise {
        let (shape, data) = kiln::image::npy::read_f32(path)?;
        let shape: [usize; 4] = shape.try_into().map_err(|s: Vec<usize>| {
            kiln::Error::new(kiln::ErrorKind::InvalidSize, format!("{}: expected a rank-4 array, got shape {s:?}", path.display()))
        })?;
        request.initial_noise = Some(InitialNoise { shape, data });
    }
    if let Some(path) = &a.noise_draws {
        request.step_noise = Some(read_noise_draws(path)?);
    }
    if let Some(path) = &a.init_image {
        request.init_image = Some(kiln::pipeline::inputs::read_init_image(path)?);
    }
    for (c, image) in &a.controls {
        let path = image.as_ref().ok_or_else(|| {
            kiln::Error::new(kiln::ErrorKind::InvalidArgument, format!("--controlnet {} needs --control-image FILE", c.controlnet))
        })?;
        let rgb = kiln::pipeline::inputs::read_init_image(path)?;
        let image = kiln::image::control::ControlImage { width: rgb.width, height: rgb.height, channels: 3, data: rgb.rgb };
        request.controls.push(kiln::pipeline::control::Control { image, ..c.clone() });
    }
    if let Some(path) = &a.mask {
        request.mask = Some(kiln::pipeline::inputs::read_mask(path)?);
    }
    let t1 = std::time::Instant::now();
    let mut report = |p: &kiln::pipeline::StepProgress<'_>| eprint!("\rstep {}/{}", p.step, p.total);
    let out = match (a.extend, a.make_tileable, request.init_image.take()) {
        (Some(extend), _, Some(picture)) => model.extend_texture(&request, &picture, extend)?,
        (None, Some(band), Some(picture)) => model.make_tileable(&request, &picture, band)?,
        (Some(_), _, None) | (_, Some(_), None) => {
            return Err(kiln::Error::new(kiln::ErrorKind::InvalidArgument, "--extend and --make-tileable need --init-image"));
        }
        (None, None, picture) => {
            request.init_image = picture;
            // Progress only: no step's latents need to leave the device.
            let hooks = Hooks { on_step: Some(&mut report), step_latents: kiln::pipeline::StepLatents::Never, ..Default::default() };
            model.generate_with(&request, hooks)?
        }
    };
    eprintln!();
    let gen_s = t1.elapsed().as_secs_f64();

    let post = PostProcess {
        upscale: upscaler.map(|_| a.upscale),
        sprite: a.sprite,
        pixel_art: a.pixel_art,
        height_map: a.height_map.is_some(),
        normal_map: a.normal_map.is_some(),
        seamless: a.seamless,
    };
    let finished = outputs::finish(model, out.image.to_rgba8(), &post, upscaler)?;
    for (path, map) in [(&a.height_map, &finished.height), (&a.normal_map, &finished.normal)] {
        if let (Some(p), Some(map)) = (path, map) {
            map.save_png(p)?;
        }
    }
    if let Some(note) = &finished.sprite_note {
        eprintln!("{note}");
    }
    let image = finished.image;
    let from = outputs::Provenance {
        model: &a.model,
        init_noise: a.init_noise.as_deref(),
        init_image: a.init_image.as_deref(),
        picture_job: outputs::PictureJob::of(a.mask.as_deref(), a.extend, a.make_tileable),
        upscaler: a.upscaler.as_deref(),
        quantization: a.quantization,
    };
    let text = outputs::png_text(&request, &post, &from, image.width, image.height);
    let text: Vec<(&str, &str)> = text.iter().map(|(k, v)| (*k, v.as_str())).collect();
    image.save_png_with_text(out_path, &text)?;
    if let Some(p) = &a.out_npy {
        kiln::image::npy::write_f32(p, &[out.image.height, out.image.width, 3], &out.image.data)?;
    }
    if let Some(p) = &a.out_latents {
        let data: Vec<f32> = out.latents.iter().copied().collect();
        kiln::image::npy::write_f32(p, out.latents.shape(), &data)?;
    }
    // Says whether --device-latents took effect (the log says why not).
    let device = if out.device_steps > 0 { format!(", {} steps with device-resident latents", out.device_steps) } else { String::new() };
    println!(
        "wrote {} ({}x{}) in {gen_s:.2}s (model load {load_s:.2}s, ONNX Runtime {}{device})",
        out_path.display(),
        image.width,
        image.height,
        runtime.onnxruntime_version()
    );
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match parse(&argv) {
        Ok(None) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("generate: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Ok(Some(args)) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("generate: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `--noise-draws`: the arrays `draw_0`, `draw_1`, ... of an `.npz` file (as
/// `numpy.savez` or `savez_compressed` write it), in index order, joined into
/// the request's `step_noise`. Every draw must have one shape, rank 4 with
/// batch 1 (a latent); the pipeline then checks that the count matches what
/// the scheduler and the img2img set-up draw. Other arrays are ignored.
fn read_noise_draws(path: &std::path::Path) -> Result<Vec<f32>, kiln::Error> {
    let invalid = |m: String| kiln::Error::new(kiln::ErrorKind::InvalidArgument, format!("--noise-draws {}: {m}", path.display()));
    let file = std::fs::File::open(path)
        .map_err(|e| kiln::Error::new(kiln::ErrorKind::Io, format!("--noise-draws {}: {e}", path.display())))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| invalid(format!("not an .npz (zip) archive: {e}")))?;
    let mut draws: Vec<(usize, String)> = (0..archive.len())
        .filter_map(|i| {
            let name = archive.name_for_index(i)?.ok()?.to_string();
            let index = name.strip_prefix("draw_")?.strip_suffix(".npy")?.parse::<usize>().ok()?;
            Some((index, name))
        })
        .collect();
    draws.sort();
    if draws.is_empty() {
        return Err(invalid("no draw_0, draw_1, ... arrays in it".into()));
    }
    let mut data = Vec::new();
    let mut first_shape: Option<Vec<usize>> = None;
    for (k, (index, name)) in draws.iter().enumerate() {
        if *index != k {
            return Err(invalid(format!("draw_{k} is missing (the draws must be numbered 0, 1, 2, ... without gaps)")));
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut archive.by_name(name).map_err(|e| invalid(format!("{name}: {e}")))?, &mut bytes)
            .map_err(|e| invalid(format!("{name}: {e}")))?;
        let (shape, values) = kiln::image::npy::parse_f32(&bytes).map_err(|e| invalid(format!("{name}: {e}")))?;
        if shape.len() != 4 || shape[0] != 1 {
            return Err(invalid(format!("{name} has shape {shape:?}; a draw is one latent, [1, C, H/8, W/8]")));
        }
        match &first_shape {
            Some(s) if *s != shape => return Err(invalid(format!("{name} has shape {shape:?}, draw_0 {s:?}; all draws share one shape"))),
            _ => first_shape = Some(shape),
        }
        data.extend(values);
    }
    Ok(data)
}
