using System;
using Kiln.Interop;

namespace Kiln
{
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
        /// <summary>Seed of Kiln's portable noise (same seed, same image everywhere).</summary>
        public ulong Seed;
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
            return o;
        }
    }
}
