"""Kiln's C enums as IntEnums. Member names are the C constants without their prefix:
``Status.MODEL_NOT_FOUND`` is ``KILN_STATUS_MODEL_NOT_FOUND``."""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "Status", "LogLevel", "Scheduler", "NoiseGenerator", "JobState", "JobEventKind", "Provider", "Graph", "Residency", "GpuMath",
    "Seamless", "Quantization", "Attention", "NormalConvention", "CellColor", "Matte", "ControlPreprocess", "UpscaleAlpha", "C_PREFIXES",
]


class Status(IntEnum):
    """Result of a call (``kiln_status``): 1xx argument, 2xx model/IO, 3xx runtime, 4xx flow, 5xx resources, 9xx internal."""

    OK = 0
    NULL_ARGUMENT = 100
    INVALID_ARGUMENT = 101
    INVALID_UTF8 = 102
    BUFFER_TOO_SMALL = 103
    INVALID_SIZE = 104
    STRUCT_SIZE_MISMATCH = 105
    INVALID_HANDLE = 106
    MODEL_NOT_FOUND = 200
    MODEL_INVALID = 201
    IO = 202
    UNSUPPORTED = 203
    ADAPTER_MISMATCH = 204
    RUNTIME_LOAD_FAILED = 300
    PROVIDER_UNAVAILABLE = 301
    INFERENCE_FAILED = 302
    CANCELLED = 400
    BUSY = 401
    OUT_OF_MEMORY = 500
    INTERNAL = 900


class LogLevel(IntEnum):
    """Severity of a log line (``kiln_log_level``)."""

    DEBUG = 0
    INFO = 1
    WARNING = 2
    ERROR = 3


class Scheduler(IntEnum):
    """A scheduler (``kiln_scheduler``); DEFAULT is the one the model's config names."""

    DEFAULT = 0
    DDIM = 1
    EULER = 2
    PNDM = 3
    DPM_PP2M = 4
    DPM_PP2M_KARRAS = 5
    LMS = 6
    HEUN = 7
    EULER_A = 8
    DPM_PP2M_SDE = 9
    UNI_PC = 10
    LCM = 11


class JobState(IntEnum):
    """Where a job is in its life (``kiln_job_state``)."""

    QUEUED = 0
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELLED = 4


class JobEventKind(IntEnum):
    """What a job event reports (``kiln_job_event_kind``)."""

    PROGRESS = 0
    PREVIEW = 1
    FINISHED = 2


class Provider(IntEnum):
    """An execution provider (``kiln_provider``)."""

    CPU = 0
    CUDA = 1
    TENSORRT = 2
    DIRECTML = 3
    COREML = 4


class Graph(IntEnum):
    """A graph of a model (``kiln_graph``)."""

    TEXT_ENCODER = 0
    UNET = 1
    VAE_DECODER = 2


class NoiseGenerator(IntEnum):
    """Which generator a seed drives (``kiln_noise_generator``): Kiln's portable noise (default),
    PyTorch's CPU generator, which gives diffusers' image for the seed, or PyTorch's CUDA generator
    (computed on the host), which gives AUTOMATIC1111's default seeds and diffusers' with a CUDA
    generator."""

    KILN = 0
    TORCH_CPU = 1
    TORCH_CUDA = 2


class Residency(IntEnum):
    """Which graphs of a model stay loaded (``kiln_residency``)."""

    ALL_RESIDENT = 0
    PER_STAGE = 1


class GpuMath(IntEnum):
    """Whether CUDA may use TF32 tensor cores (``kiln_gpu_math``): fast (default) or exact float32."""

    FAST = 0
    EXACT = 1


class Seamless(IntEnum):
    """Which axes an image tiles along (``kiln_seamless``)."""

    NONE = 0
    X = 1
    Y = 2
    XY = 3


class Quantization(IntEnum):
    """How a model's weights are stored once loaded (``kiln_quantization``): as exported, or the text
    encoders' and U-Net's matrix-product weights as int8 (ONNX Runtime's ``quantize_dynamic``; less
    memory, pictures close to but not equal to the float model's)."""

    NONE = 0
    INT8 = 1


class Attention(IntEnum):
    """How the U-Net's (and ControlNets') attention layers run (``kiln_attention``): AUTO (the
    default) fuses each into one ONNX Runtime ``MultiHeadAttention`` node at load when the graphs
    run on the CPU provider, EXPORTED runs the graphs as exported, FUSED fuses whatever the
    providers. Pictures differ from the exported graph's by float rounding only; fused attention
    needs far less memory at large sizes."""

    AUTO = 0
    EXPORTED = 1
    FUSED = 2


class NormalConvention(IntEnum):
    """Green channel convention of a normal map (``kiln_normal_convention``)."""

    OPENGL = 0
    DIRECTX = 1


class CellColor(IntEnum):
    """How a pixel-art cell becomes one colour (``kiln_cell_color``)."""

    MEAN = 0
    MODE = 1


class Matte(IntEnum):
    """Where a sprite's alpha comes from (``kiln_matte``)."""

    AUTO = 0
    KEY = 1
    GRAPH = 2


class ControlPreprocess(IntEnum):
    """How a ControlNet's image becomes its control image (``kiln_control_preprocess``)."""

    NONE = 0
    CANNY = 1
    HEIGHT = 2
    TILE = 3


class UpscaleAlpha(IntEnum):
    """How an upscaler upscales the alpha of an image with transparency (``kiln_upscale_alpha``)."""

    #: Through the graph as a grey image: crisp sprite edges, twice the work.
    GRAPH = 0
    #: Bilinear (half-pixel centres; wraps on seamless axes).
    BILINEAR = 1


#: Each enum's C constant prefix: the C name of a member is prefix + member name.
C_PREFIXES: dict[type[IntEnum], str] = {
    Status: "KILN_STATUS_",
    LogLevel: "KILN_LOG_LEVEL_",
    Scheduler: "KILN_SCHEDULER_",
    NoiseGenerator: "KILN_NOISE_GENERATOR_",
    JobState: "KILN_JOB_STATE_",
    JobEventKind: "KILN_JOB_EVENT_KIND_",
    Provider: "KILN_PROVIDER_",
    Graph: "KILN_GRAPH_",
    Residency: "KILN_RESIDENCY_",
    GpuMath: "KILN_GPU_MATH_",
    Seamless: "KILN_SEAMLESS_",
    Quantization: "KILN_QUANTIZATION_",
    Attention: "KILN_ATTENTION_",
    NormalConvention: "KILN_NORMAL_CONVENTION_",
    CellColor: "KILN_CELL_COLOR_",
    Matte: "KILN_MATTE_",
    ControlPreprocess: "KILN_CONTROL_PREPROCESS_",
    UpscaleAlpha: "KILN_UPSCALE_ALPHA_",
}
