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
            return o;
        }
    }
}
