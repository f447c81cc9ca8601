using System;
using Kiln.Interop;

namespace Kiln
{
    /// <summary>
    /// One ControlNet for a generation (C: <c>kiln_control</c>): a folder under the model's
    /// <c>controlnet/</c> and its control image (any size with the output's aspect ratio).
    /// The image is borrowed for the call (Submit copies it before queueing).
    /// </summary>
    public sealed class KilnControlSpec
    {
        /// <summary>The ControlNet's folder name under the model's <c>controlnet/</c>.</summary>
        public string ControlNet;
        /// <summary>The control image (an edge map, a depth map, the picture itself for tile).</summary>
        public KilnImage Image;
        /// <summary>How <see cref="Image"/> becomes the control image; None uses it as given.</summary>
        public KilnControlPreprocess Preprocess;
        /// <summary>diffusers' <c>controlnet_conditioning_scale</c>.</summary>
        public float Scale = 1f;
        /// <summary>Fraction of the schedule before the ControlNet starts, 0..1.</summary>
        public float Start;
        /// <summary>Fraction of the schedule after which it stops, 0..1.</summary>
        public float End = 1f;
        /// <summary>Canny's lower threshold (Preprocess Canny).</summary>
        public float CannyLow = 100f;
        /// <summary>Canny's upper threshold.</summary>
        public float CannyHigh = 200f;

        /// <summary>A ControlNet at <c>scale</c> over the whole schedule.</summary>
        public KilnControlSpec(string controlNet, KilnImage image, float scale = 1f, KilnControlPreprocess preprocess = KilnControlPreprocess.None)
        {
            ControlNet = controlNet;
            Image = image;
            Scale = scale;
            Preprocess = preprocess;
        }
    }

    /// <summary>
    /// One generation request (C: <c>kiln_generate_options</c>). Zero or null keeps Kiln's
    /// default: native size, 20 steps, guidance 7.5, the model's scheduler, seed 0.
    /// </summary>
    public sealed class KilnGenerateSettings
    {
        /// <summary>The prompt (required; may be empty).</summary>
        public string Prompt = "";
        /// <summary>Negative prompt, or null.</summary>
        public string NegativePrompt;
        /// <summary>Width in pixels; 0 = the model's native size.</summary>
        public uint Width;
        /// <summary>Height in pixels; 0 = the model's native size.</summary>
        public uint Height;
        /// <summary>Denoising steps; 0 = 20.</summary>
        public uint Steps;
        /// <summary>Classifier-free guidance; null = 7.5; ≤ 1 skips the unconditional pass.</summary>
        public float? GuidanceScale;
        /// <summary>The scheduler.</summary>
        public KilnScheduler Scheduler = KilnScheduler.Default;
        /// <summary>Seed of the noise generator below (same seed, same image everywhere).</summary>
        public ulong Seed;
        /// <summary>
        /// Which generator <see cref="Seed"/> drives (C: <c>noise_generator</c>).
        /// <see cref="KilnNoiseGenerator.Kiln"/>, the default, is Kiln's portable noise, identical
        /// on every platform. <see cref="KilnNoiseGenerator.TorchCpu"/> is PyTorch's CPU generator:
        /// a seed gives the image diffusers makes with
        /// <c>generator=torch.Generator("cpu").manual_seed(seed)</c> (and ComfyUI's initial noise),
        /// so a seed brought from those tools gives their picture (only the seed's low 32 bits
        /// count, as in PyTorch). <see cref="KilnNoiseGenerator.TorchCuda"/> is PyTorch's CUDA
        /// generator (<c>torch.manual_seed(seed)</c>, then <c>torch.randn(..., device="cuda")</c>),
        /// computed on the host, so no GPU is needed: a seed gives AUTOMATIC1111's initial noise
        /// with its default ("GPU") or "NV" random source, and the image diffusers makes with
        /// <c>torch.Generator("cuda")</c> (the whole 64-bit seed counts). Any other value throws
        /// <see cref="KilnException"/> with <see cref="KilnStatus.InvalidArgument"/>.
        /// </summary>
        public KilnNoiseGenerator NoiseGenerator = KilnNoiseGenerator.Kiln;
        /// <summary>
        /// AUTOMATIC1111's variation seed (C: <c>variation_seed</c>): with
        /// <see cref="VariationStrength"/> above 0 the starting noise (text-to-image's initial
        /// latents; img2img's and inpainting's start noise) is A1111's spherical blend of
        /// <see cref="Seed"/>'s draw and one draw of the same <see cref="NoiseGenerator"/> seeded
        /// with this. Every other draw (an ancestral sampler's step noise, for one) still comes from
        /// <see cref="Seed"/>, as in A1111. Unused while <see cref="VariationStrength"/> is 0.
        /// </summary>
        public ulong VariationSeed;
        /// <summary>
        /// How far the starting noise moves towards <see cref="VariationSeed"/>'s (C:
        /// <c>variation_strength</c>), 0..1: 0, the default, is no variation (the seed's picture),
        /// 1 the variation seed's starting noise. Outside 0..1 (NaN included), or above 0 together
        /// with <see cref="InitialNoise"/>, throws <see cref="KilnException"/> with
        /// <see cref="KilnStatus.InvalidArgument"/> naming <c>variation_strength</c>.
        /// </summary>
        public float VariationStrength;
        /// <summary>Guidance rescale φ in [0, 1]; 0 = off.</summary>
        public float GuidanceRescale;
        /// <summary>Read prompts with AUTOMATIC1111 weighting syntax.</summary>
        public bool PromptWeighting;
        /// <summary>Exact initial latents, float32 NCHW; null = seeded noise.</summary>
        public float[] InitialNoise;
        /// <summary>img2img: start picture, RGB8 or RGBA8 rows top-down; null = text-to-image.</summary>
        public byte[] InitImage;
        /// <summary>Width of <see cref="InitImage"/>.</summary>
        public uint InitImageWidth;
        /// <summary>Height of <see cref="InitImage"/>.</summary>
        public uint InitImageHeight;
        /// <summary>Bytes between rows of <see cref="InitImage"/>; 0 = width × channels.</summary>
        public uint InitImageRowPitch;
        /// <summary>3 (RGB) or 4 (RGBA).</summary>
        public uint InitImageChannels = 4;
        /// <summary>img2img strength 0..1; null = 0.8.</summary>
        public float? Strength;
        /// <summary>img2img: start from the VAE posterior's mean.</summary>
        public bool PosteriorMean;
        /// <summary>Text-encoder layers skipped from the end; 0 = off.</summary>
        public uint ClipSkip;
        /// <summary>Inpainting mask, one byte per init-image pixel (≥ 128 repainted); null = none.</summary>
        public byte[] Mask;
        /// <summary>Mask width.</summary>
        public uint MaskWidth;
        /// <summary>Mask height.</summary>
        public uint MaskHeight;
        /// <summary>JSON object overriding the model's scheduler_config.json values; null = none.</summary>
        public string SchedulerOverrides;
        /// <summary>SDXL: prompt for the second text encoder; null or "" = <see cref="Prompt"/>.
        /// SD 1.x/2.x models refuse every SDXL field below with InvalidArgument.</summary>
        public string Prompt2;
        /// <summary>SDXL: negative prompt for the second text encoder; null or "" = <see cref="NegativePrompt"/>.</summary>
        public string NegativePrompt2;
        /// <summary>SDXL original_size width; 0 (with the height 0) = the output size.</summary>
        public uint OriginalWidth;
        /// <summary>SDXL original_size height; give both or neither.</summary>
        public uint OriginalHeight;
        /// <summary>SDXL crops_coords_top_left: top (y) in pixels.</summary>
        public uint CropTop;
        /// <summary>SDXL crops_coords_top_left: left (x) in pixels.</summary>
        public uint CropLeft;
        /// <summary>SDXL target_size width; 0 (with the height 0) = the output size.</summary>
        public uint TargetWidth;
        /// <summary>SDXL target_size height.</summary>
        public uint TargetHeight;
        /// <summary>SDXL negative_original_size width; 0 = unset (text-to-image uses the negative
        /// sizes only when both negative sizes are given, as diffusers).</summary>
        public uint NegativeOriginalWidth;
        /// <summary>SDXL negative_original_size height.</summary>
        public uint NegativeOriginalHeight;
        /// <summary>SDXL negative crop: top.</summary>
        public uint NegativeCropTop;
        /// <summary>SDXL negative crop: left.</summary>
        public uint NegativeCropLeft;
        /// <summary>SDXL negative_target_size width; 0 = unset.</summary>
        public uint NegativeTargetWidth;
        /// <summary>SDXL negative_target_size height.</summary>
        public uint NegativeTargetHeight;
        /// <summary>Refiner-style SDXL U-Nets: aesthetic score; null = 6.0.</summary>
        public float? AestheticScore;
        /// <summary>Refiner-style SDXL U-Nets: negative aesthetic score; null = 2.5.</summary>
        public float? NegativeAestheticScore;
        /// <summary>Base-to-refiner hand-off: a second model that finishes the schedule from this
        /// model's latents and decodes (diffusers' denoising_end / denoising_start); null = none.</summary>
        public KilnModel Refiner;
        /// <summary>With <c>Refiner</c>: the fraction of the schedule this model runs, 0 &lt; f &lt; 1; null = 0.8.</summary>
        public float? RefinerStart;

        /// <summary>ControlNets (each a folder under the model's <c>controlnet/</c>); null or empty = none.</summary>
        public KilnControlSpec[] Controls;
        /// <summary>diffusers' guess mode (with CFG only the conditional half gets the residuals).</summary>
        public bool GuessMode;

        /// <summary>A copy (the arrays are shared, not copied).</summary>
        public KilnGenerateSettings Clone() { return (KilnGenerateSettings)MemberwiseClone(); }

        /// <summary>The C struct, its strings and arrays pinned in <c>pins</c> for the call.</summary>
        internal KilnGenerateOptions ToNative(Pins pins)
        {
            KilnGenerateOptions o = KilnDefaults.GenerateOptions();
            o.width = Width;
            o.height = Height;
            o.steps = Steps;
            if (GuidanceScale.HasValue) o.guidance_scale = GuidanceScale.Value;
            o.scheduler = (uint)Scheduler;
            o.seed = Seed;
            o.noise_generator = (uint)NoiseGenerator;
            o.variation_seed = VariationSeed;
            o.variation_strength = VariationStrength;
            o.prompt = pins.PinString(Prompt ?? "");
            o.negative_prompt = pins.PinString(NegativePrompt);
            o.initial_noise = pins.Pin(InitialNoise);
            o.initial_noise_len = new UIntPtr(InitialNoise == null ? 0u : (uint)InitialNoise.Length);
            o.guidance_rescale = GuidanceRescale;
            o.prompt_weighting = PromptWeighting ? 1u : 0u;
            o.init_image = pins.Pin(InitImage);
            o.init_image_len = new UIntPtr(InitImage == null ? 0u : (uint)InitImage.Length);
            o.init_image_width = InitImageWidth;
            o.init_image_height = InitImageHeight;
            o.init_image_row_pitch = new UIntPtr(InitImageRowPitch);
            o.init_image_channels = InitImageChannels;
            if (Strength.HasValue) o.strength = Strength.Value;
            o.posterior_mean = PosteriorMean ? 1u : 0u;
            o.clip_skip = ClipSkip;
            o.mask = pins.Pin(Mask);
            o.mask_len = new UIntPtr(Mask == null ? 0u : (uint)Mask.Length);
            o.mask_width = MaskWidth;
            o.mask_height = MaskHeight;
            o.scheduler_overrides = pins.PinString(SchedulerOverrides);
            if (Controls != null && Controls.Length > 0)
            {
                var c = new KilnControl[Controls.Length];
                for (int i = 0; i < c.Length; i++)
                {
                    KilnControlSpec spec = Controls[i];
                    if (spec == null) throw new ArgumentNullException("Controls[" + i + "]");
                    c[i] = KilnDefaults.Control();
                    c[i].controlnet = pins.PinString(spec.ControlNet);
                    c[i].image = spec.Image == null ? IntPtr.Zero : pins.Borrow(spec.Image.Handle);
                    c[i].preprocess = (uint)spec.Preprocess;
                    c[i].scale = spec.Scale;
                    c[i].start = spec.Start;
                    c[i].end = spec.End;
                    c[i].canny_low = spec.CannyLow;
                    c[i].canny_high = spec.CannyHigh;
                }
                o.controls = pins.Pin(c);
                o.control_count = new UIntPtr((uint)c.Length);
            }
            o.guess_mode = GuessMode ? 1u : 0u;
            o.prompt_2 = pins.PinString(Prompt2);
            o.negative_prompt_2 = pins.PinString(NegativePrompt2);
            o.original_width = OriginalWidth;
            o.original_height = OriginalHeight;
            o.crop_top = CropTop;
            o.crop_left = CropLeft;
            o.target_width = TargetWidth;
            o.target_height = TargetHeight;
            o.negative_original_width = NegativeOriginalWidth;
            o.negative_original_height = NegativeOriginalHeight;
            o.negative_crop_top = NegativeCropTop;
            o.negative_crop_left = NegativeCropLeft;
            o.negative_target_width = NegativeTargetWidth;
            o.negative_target_height = NegativeTargetHeight;
            if (AestheticScore.HasValue) o.aesthetic_score = AestheticScore.Value;
            if (NegativeAestheticScore.HasValue) o.negative_aesthetic_score = NegativeAestheticScore.Value;
            o.refiner = Refiner == null ? IntPtr.Zero : pins.Borrow(Refiner.Handle);
            if (RefinerStart.HasValue) o.refiner_start = RefinerStart.Value;
            return o;
        }
    }
}
