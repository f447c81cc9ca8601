// Structs mirrored field for field from include/kiln.h, in header order, with C's field
// names so each can be read against the header. All blittable: fixed-width integers,
// float, IntPtr for pointers, UIntPtr for size_t, KilnFnPtr for callbacks; never bool
// (which would marshal as a 4-byte BOOL) and never string (the binding passes UTF-8
// bytes it pinned itself). LayoutKind.Sequential gives C's natural alignment on every
// platform, 32-bit included; the ABI manifest checks sizes and offsets against the header.
using System;
using System.Runtime.InteropServices;

namespace Kiln.Interop
{
    /// <summary>A C function pointer stored in a struct (a callback typedef in kiln.h).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct KilnFnPtr
    {
        /// <summary>From <see cref="Marshal.GetFunctionPointerForDelegate(Delegate)"/>, or zero for none.</summary>
        public IntPtr Value;
    }

    /// <summary>C: <c>kiln_job_event</c>. Borrowed: valid only during the callback.</summary>
    [NativeName("kiln_job_event"), StructLayout(LayoutKind.Sequential)]
    public struct KilnJobEvent
    {
        public uint struct_size;
        public uint kind;
        public ulong job;
        public uint step;
        public uint total_steps;
        public uint state;
        public uint width;
        public uint height;
        public UIntPtr row_pitch;
        public IntPtr pixels;
    }

    /// <summary>C: <c>kiln_job_options</c>.</summary>
    [NativeName("kiln_job_options"), StructLayout(LayoutKind.Sequential)]
    public struct KilnJobOptions
    {
        public uint struct_size;
        public int priority;
        public uint preview_interval;
        public KilnFnPtr callback;
        public IntPtr user_data;
    }

    /// <summary>C: <c>kiln_generate_options</c>.</summary>
    [NativeName("kiln_generate_options"), StructLayout(LayoutKind.Sequential)]
    public struct KilnGenerateOptions
    {
        public uint struct_size;
        public uint width;
        public uint height;
        public uint steps;
        public float guidance_scale;
        public uint scheduler;
        public ulong seed;
        public IntPtr prompt;
        public IntPtr negative_prompt;
        public IntPtr initial_noise;
        public UIntPtr initial_noise_len;
        public float guidance_rescale;
        public uint prompt_weighting;
        public uint reserved;
        public IntPtr init_image;
        public UIntPtr init_image_len;
        public uint init_image_width;
        public uint init_image_height;
        public UIntPtr init_image_row_pitch;
        public uint init_image_channels;
        public float strength;
        public uint posterior_mean;
        public uint noise_generator;
        public uint clip_skip;
        public uint reserved3;
        public IntPtr mask;
        public UIntPtr mask_len;
        public uint mask_width;
        public uint mask_height;
        public IntPtr scheduler_overrides;
        public uint vae_tile_size;
        public uint vae_tile_overlap;
        public uint vae_memory_budget_mib;
        public uint final_decoder;
        public IntPtr controls;
        public UIntPtr control_count;
        public uint guess_mode;
        public uint reserved4;
        public IntPtr prompt_2;
        public IntPtr negative_prompt_2;
        public uint original_width;
        public uint original_height;
        public uint crop_top;
        public uint crop_left;
        public uint target_width;
        public uint target_height;
        public uint negative_original_width;
        public uint negative_original_height;
        public uint negative_crop_top;
        public uint negative_crop_left;
        public uint negative_target_width;
        public uint negative_target_height;
        public float aesthetic_score;
        public float negative_aesthetic_score;
        public IntPtr refiner;
        public float refiner_start;
        public ulong variation_seed;
        public float variation_strength;
        public uint reserved5;
    }

    /// <summary>C: <c>kiln_control</c>: one ControlNet in <c>kiln_generate_options.controls</c>.</summary>
    [NativeName("kiln_control"), StructLayout(LayoutKind.Sequential)]
    public struct KilnControl
    {
        public uint struct_size;
        public uint preprocess;
        public IntPtr controlnet;
        public IntPtr image;
        public float scale;
        public float start;
        public float end;
        public float canny_low;
        public float canny_high;
        public uint reserved;
    }

    /// <summary>C: <c>kiln_job_progress</c>.</summary>
    [NativeName("kiln_job_progress"), StructLayout(LayoutKind.Sequential)]
    public struct KilnJobProgress
    {
        public uint struct_size;
        public uint state;
        public uint step;
        public uint total_steps;
        public uint preview_step;
        public uint preview_width;
        public uint preview_height;
    }

    /// <summary>C: <c>kiln_model_load_options</c>.</summary>
    [NativeName("kiln_model_load_options"), StructLayout(LayoutKind.Sequential)]
    public struct KilnModelLoadOptions
    {
        public uint struct_size;
        public uint seamless;
        public IntPtr matting_path;
        /// <summary>A <see cref="KilnQuantization"/> value (default none: as exported).</summary>
        public uint quantization;
        /// <summary>A <see cref="KilnAttention"/> value (default auto: fused when the graphs run on the CPU provider).</summary>
        public uint attention;
        /// <summary>1: LoRA slots beside every adaptable layer of the U-Net and text encoders, so that plain low-rank LoRAs are fed at run time instead of merged; 0 (the default): none. Other values are INVALID_ARGUMENT. (Was <c>reserved</c>.)</summary>
        public uint lora_slots;
    }

    /// <summary>C: <c>kiln_model_info</c>.</summary>
    [NativeName("kiln_model_info"), StructLayout(LayoutKind.Sequential)]
    public struct KilnModelInfo
    {
        public uint struct_size;
        public uint default_size;
        public uint size_multiple;
        public uint latent_channels;
        public uint vae_downsampling;
        public uint embedding_dim;
        public uint has_vae_encoder;
        public uint has_matting;
        /// <summary>The <see cref="KilnQuantization"/> the model was loaded with.</summary>
        public uint quantization;
        /// <summary>How many of the U-Net's attention layers run as one fused node (see <see cref="KilnAttention"/>); 0 when none do.</summary>
        public uint fused_attention;
        /// <summary>How many of the U-Net's layers have a LoRA slot (<see cref="KilnModelLoadOptions.lora_slots"/>); 0 when loaded without.</summary>
        public uint lora_slots;
    }

    /// <summary>C: <c>kiln_sprite_options</c>.</summary>
    [NativeName("kiln_sprite_options"), StructLayout(LayoutKind.Sequential)]
    public struct KilnSpriteOptions
    {
        public uint struct_size;
        public uint auto_key;
        public uint key_rgb;
        public float inner_tolerance;
        public float outer_tolerance;
        public uint despill;
        public uint feather_radius;
        public uint premultiplied;
        public uint bbox_threshold;
        public uint matte;
    }

    /// <summary>C: <c>kiln_rect</c>. Empty (all 0) when it holds no pixel.</summary>
    [NativeName("kiln_rect"), StructLayout(LayoutKind.Sequential)]
    public struct KilnRect
    {
        public uint x;
        public uint y;
        public uint width;
        public uint height;
    }

    /// <summary>C: <c>kiln_pixel_art_options</c>.</summary>
    [NativeName("kiln_pixel_art_options"), StructLayout(LayoutKind.Sequential)]
    public struct KilnPixelArtOptions
    {
        public uint struct_size;
        public uint cell;
        public uint scale;
        public uint colors;
        public uint cell_color;
        public uint alpha_threshold;
        public IntPtr palette_rgb;
        public UIntPtr palette_len;
    }

    /// <summary>C: <c>kiln_material_options</c>.</summary>
    [NativeName("kiln_material_options"), StructLayout(LayoutKind.Sequential)]
    public struct KilnMaterialOptions
    {
        public uint struct_size;
        public uint blur_radius;
        public float strength;
        public uint convention;
        public uint wrap;
        public uint invert_height;
    }

    /// <summary>C: <c>kiln_runtime_options</c>.</summary>
    [NativeName("kiln_runtime_options"), StructLayout(LayoutKind.Sequential)]
    public struct KilnRuntimeOptions
    {
        public uint struct_size;
        public uint intra_op_threads;
        public uint inter_op_threads;
        public uint allow_spinning;
        public IntPtr onnxruntime_path;
        public KilnFnPtr log_callback;
        public IntPtr log_user_data;
        public uint log_level;
        public uint job_workers;
        public IntPtr providers;
        public UIntPtr providers_len;
        public int device_id;
        public uint require_provider;
        public uint residency;
        public uint embedding_cache_entries;
        public IntPtr graph_cache_dir;
        public uint sequential_load;
        public ulong gpu_memory_limit;
        public uint gpu_math;
        public uint padding_after_gpu_math;
        public uint static_unet;
        public uint cuda_graph;
        public uint device_latents;
    }

    /// <summary>C: <c>kiln_lora</c>. One LoRA file and its strength; <c>path</c> is borrowed for the call.</summary>
    [NativeName("kiln_lora"), StructLayout(LayoutKind.Sequential)]
    public struct KilnLora
    {
        public uint struct_size;
        public float scale;
        public IntPtr path;
        /// <summary>Nonzero: text-encoder modules use <c>text_encoder_scale</c>, U-Net modules <c>scale</c>; 0 (default): <c>scale</c> for all.</summary>
        public uint has_text_encoder_scale;
        /// <summary>The text encoders' strength when <c>has_text_encoder_scale</c> is nonzero (default 1.0); must be finite then.</summary>
        public float text_encoder_scale;
    }

    /// <summary>C: <c>kiln_embedding</c>. A textual-inversion file and its token (IntPtr.Zero = the file's own).</summary>
    [NativeName("kiln_embedding"), StructLayout(LayoutKind.Sequential)]
    public struct KilnEmbedding
    {
        public uint struct_size;
        public IntPtr path;
        public IntPtr token;
    }

    /// <summary>C: <c>kiln_upscale_options</c>: how <c>kiln_upscaler_upscale</c> works through an image.</summary>
    [NativeName("kiln_upscale_options"), StructLayout(LayoutKind.Sequential)]
    public struct KilnUpscaleOptions
    {
        public uint struct_size;
        /// <summary>Tile side in input pixels (0 = the whole image in one run; default 256; ignored for fixed-size graphs).</summary>
        public uint tile;
        /// <summary>Extra input pixels read on each side of a tile and discarded (default 16, at most 1024).</summary>
        public uint context;
        /// <summary>A <see cref="KilnSeamless"/> value: axes along which the image tiles (default none).</summary>
        public uint seamless;
        /// <summary>A <see cref="KilnUpscaleAlpha"/> value, used only when the image has transparency (default graph).</summary>
        public uint alpha;
    }
}
