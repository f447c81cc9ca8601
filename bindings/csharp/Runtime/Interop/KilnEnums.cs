// Enumerations mirrored from include/kiln.h. Every enum is a uint32_t in C, so each is
// `: uint` here. [NativeEnum] gives the C constant prefix; a member's C name is the prefix
// plus its name in UPPER_SNAKE_CASE unless [NativeName] says otherwise (the ABI manifest
// and the drift guard read these attributes).
using System;

namespace Kiln.Interop
{
    /// <summary>Result of every fallible call (C: <c>kiln_status</c>). 0 is success.</summary>
    [NativeEnum("KILN_STATUS_")]
    public enum KilnStatus : uint
    {
        Ok = 0,
        NullArgument = 100,
        InvalidArgument = 101,
        InvalidUtf8 = 102,
        BufferTooSmall = 103,
        InvalidSize = 104,
        StructSizeMismatch = 105,
        InvalidHandle = 106,
        ModelNotFound = 200,
        ModelInvalid = 201,
        Io = 202,
        Unsupported = 203,
        /// <summary>A LoRA or embedding file made for another model (architecture, width, ranks, keys).</summary>
        AdapterMismatch = 204,
        RuntimeLoadFailed = 300,
        ProviderUnavailable = 301,
        InferenceFailed = 302,
        Cancelled = 400,
        Busy = 401,
        /// <summary>An allocation failed even after Kiln freed what it could.</summary>
        OutOfMemory = 500,
        Internal = 900,
    }

    /// <summary>Severity of a log line (C: <c>kiln_log_level</c>).</summary>
    [NativeEnum("KILN_LOG_LEVEL_")]
    public enum KilnLogLevel : uint
    {
        Debug = 0,
        Info = 1,
        Warning = 2,
        Error = 3,
    }

    /// <summary>Schedulers (C: <c>kiln_scheduler</c>).</summary>
    [NativeEnum("KILN_SCHEDULER_")]
    public enum KilnScheduler : uint
    {
        Default = 0,
        Ddim = 1,
        Euler = 2,
        Pndm = 3,
        DpmPp2m = 4,
        DpmPp2mKarras = 5,
        Lms = 6,
        Heun = 7,
        EulerA = 8,
        DpmPp2mSde = 9,
        UniPc = 10,
        Lcm = 11,
    }

    /// <summary>Where a job is in its life (C: <c>kiln_job_state</c>).</summary>
    [NativeEnum("KILN_JOB_STATE_")]
    public enum KilnJobState : uint
    {
        Queued = 0,
        Running = 1,
        Succeeded = 2,
        Failed = 3,
        Cancelled = 4,
    }

    /// <summary>What a job event reports (C: <c>kiln_job_event_kind</c>).</summary>
    [NativeEnum("KILN_JOB_EVENT_KIND_")]
    public enum KilnJobEventKind : uint
    {
        Progress = 0,
        Preview = 1,
        Finished = 2,
    }

    /// <summary>Execution providers (C: <c>kiln_provider</c>).</summary>
    [NativeEnum("KILN_PROVIDER_")]
    public enum KilnProvider : uint
    {
        Cpu = 0,
        Cuda = 1,
        [NativeName("KILN_PROVIDER_TENSORRT")] TensorRT = 2,
        [NativeName("KILN_PROVIDER_DIRECTML")] DirectML = 3,
        [NativeName("KILN_PROVIDER_COREML")] CoreML = 4,
    }

    /// <summary>The graphs of a model (C: <c>kiln_graph</c>).</summary>
    [NativeEnum("KILN_GRAPH_")]
    public enum KilnGraph : uint
    {
        TextEncoder = 0,
        Unet = 1,
        VaeDecoder = 2,
    }

    /// <summary>Which generator a seed drives (C: <c>kiln_noise_generator</c>): Kiln's portable
    /// noise, PyTorch's CPU generator, which gives diffusers' image for the seed, or PyTorch's CUDA
    /// generator computed on the host (AUTOMATIC1111's default seeds).</summary>
    [NativeEnum("KILN_NOISE_GENERATOR_")]
    public enum KilnNoiseGenerator : uint
    {
        Kiln = 0,
        TorchCpu = 1,
        TorchCuda = 2,
    }

    /// <summary>Which graphs stay loaded (C: <c>kiln_residency</c>).</summary>
    [NativeEnum("KILN_RESIDENCY_")]
    public enum KilnResidency : uint
    {
        AllResident = 0,
        PerStage = 1,
    }

    /// <summary>Whether CUDA may use TF32 tensor cores (C: <c>kiln_gpu_math</c>).</summary>
    [NativeEnum("KILN_GPU_MATH_")]
    public enum KilnGpuMath : uint
    {
        Fast = 0,
        Exact = 1,
    }

    /// <summary>Axes an image tiles along (C: <c>kiln_seamless</c>).</summary>
    [NativeEnum("KILN_SEAMLESS_")]
    public enum KilnSeamless : uint
    {
        None = 0,
        X = 1,
        Y = 2,
        XY = 3,
    }

    /// <summary>How a model's weights are stored once loaded (C: <c>kiln_quantization</c>): as
    /// exported, or the text encoders' and U-Net's matrix-product weights as int8 (ONNX Runtime's
    /// <c>quantize_dynamic</c>; less memory, pictures close to but not equal to the float model's).</summary>
    [NativeEnum("KILN_QUANTIZATION_")]
    public enum KilnQuantization : uint
    {
        None = 0,
        Int8 = 1,
    }

    /// <summary>How the U-Net's (and ControlNets') attention layers run (C: <c>kiln_attention</c>):
    /// <c>Auto</c> (the default) fuses each into one ONNX Runtime <c>MultiHeadAttention</c> node at
    /// load when the graphs run on the CPU provider, <c>Exported</c> runs the graphs as
    /// exported, <c>Fused</c> fuses whatever the providers. Pictures differ from the exported
    /// graph's by float rounding only; fused attention needs far less memory at large sizes.</summary>
    [NativeEnum("KILN_ATTENTION_")]
    public enum KilnAttention : uint
    {
        Auto = 0,
        Exported = 1,
        Fused = 2,
    }

    /// <summary>Green channel convention of a normal map (C: <c>kiln_normal_convention</c>).</summary>
    [NativeEnum("KILN_NORMAL_CONVENTION_")]
    public enum KilnNormalConvention : uint
    {
        [NativeName("KILN_NORMAL_CONVENTION_OPENGL")] OpenGL = 0,
        [NativeName("KILN_NORMAL_CONVENTION_DIRECTX")] DirectX = 1,
    }

    /// <summary>How a pixel-art cell becomes one colour (C: <c>kiln_cell_color</c>).</summary>
    [NativeEnum("KILN_CELL_COLOR_")]
    public enum KilnCellColor : uint
    {
        Mean = 0,
        Mode = 1,
    }

    /// <summary>Where a sprite's alpha comes from (C: <c>kiln_matte</c>).</summary>
    [NativeEnum("KILN_MATTE_")]
    public enum KilnMatte : uint
    {
        Auto = 0,
        Key = 1,
        Graph = 2,
    }

    /// <summary>How a ControlNet's image becomes its control image (C: <c>kiln_control_preprocess</c>).</summary>
    [NativeEnum("KILN_CONTROL_PREPROCESS_")]
    public enum KilnControlPreprocess : uint
    {
        None = 0,
        Canny = 1,
        Height = 2,
        Tile = 3,
    }

    /// <summary>How an image with transparency has its alpha upscaled (C: <c>kiln_upscale_alpha</c>).</summary>
    [NativeEnum("KILN_UPSCALE_ALPHA_")]
    public enum KilnUpscaleAlpha : uint
    {
        /// <summary>Through the graph as a grey image: crisp sprite edges, twice the work.</summary>
        Graph = 0,
        /// <summary>Bilinear (half-pixel centres; wraps on seamless axes).</summary>
        Bilinear = 1,
    }

    /// <summary>Names the C constant prefix of an enum mirrored from kiln.h.</summary>
    [AttributeUsage(AttributeTargets.Enum)]
    public sealed class NativeEnumAttribute : Attribute
    {
        /// <summary>The prefix, e.g. <c>KILN_STATUS_</c>.</summary>
        public readonly string Prefix;
        /// <summary>Declares the prefix.</summary>
        public NativeEnumAttribute(string prefix) { Prefix = prefix; }
    }

    /// <summary>The exact C name of a struct or enum constant, where the default spelling differs.</summary>
    [AttributeUsage(AttributeTargets.Field | AttributeTargets.Struct)]
    public sealed class NativeNameAttribute : Attribute
    {
        /// <summary>The C name.</summary>
        public readonly string Name;
        /// <summary>Declares the C name.</summary>
        public NativeNameAttribute(string name) { Name = name; }
    }
}
