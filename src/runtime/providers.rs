//! Execution providers: which hardware back end runs each graph, chosen loudly.
//!
//! The caller lists providers in order of preference. For every graph Kiln
//! registers, in that order, each requested provider that is compiled into
//! this build (cargo features `cuda`, `tensorrt`, `directml`, `coreml`) and
//! present in the loaded ONNX Runtime; ONNX Runtime then places each node on
//! the first registered provider that supports it, and on the CPU otherwise.
//! What was registered, and why anything was skipped, is recorded per graph
//! and logged. If nothing but the CPU is left and the caller asked for it,
//! loading fails with `ProviderUnavailable` instead of silently running on
//! the CPU (ONNX Runtime's own behaviour, and a common complaint).
use std::ffi::{c_char, CStr};

use ort::session::builder::SessionBuilder;

use crate::error::{Error, ErrorKind, Result};

/// An execution provider. Values match `kiln_provider` in the C header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Provider {
    /// ONNX Runtime's CPU provider (always available).
    Cpu = 0,
    /// NVIDIA CUDA (`onnxruntime-gpu`).
    Cuda = 1,
    /// NVIDIA TensorRT (`onnxruntime-gpu` with TensorRT libraries).
    TensorRt = 2,
    /// DirectML on Windows (`onnxruntime-directml`).
    DirectMl = 3,
    /// Apple CoreML.
    CoreMl = 4,
}

impl Provider {
    /// Every provider Kiln knows, in value order.
    pub const ALL: [Provider; 5] = [Self::Cpu, Self::Cuda, Self::TensorRt, Self::DirectMl, Self::CoreMl];

    /// From the C value.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// From the short name the CLI and the test variables use: `cpu`,
    /// `cuda`, `tensorrt`, `directml` or `coreml`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.short_name() == name)
    }

    /// A comma-separated list of short names, best first (`cuda,cpu`), as
    /// `--provider` and `KILN_TEST_PROVIDERS` take it; spaces around names
    /// and empty entries are ignored. The error names the unknown entry.
    pub fn list_from_names(list: &str) -> std::result::Result<Vec<Provider>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| Self::from_name(n).ok_or_else(|| format!("unknown execution provider {n:?} (cpu, cuda, tensorrt, directml, coreml)")))
            .collect()
    }

    /// The short name [`Provider::from_name`] reads.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            other => other.feature(),
        }
    }

    /// ONNX Runtime's name, e.g. `CUDAExecutionProvider`.
    pub fn ort_name(self) -> &'static str {
        match self {
            Self::Cpu => "CPUExecutionProvider",
            Self::Cuda => "CUDAExecutionProvider",
            Self::TensorRt => "TensorrtExecutionProvider",
            Self::DirectMl => "DmlExecutionProvider",
            Self::CoreMl => "CoreMLExecutionProvider",
        }
    }

    /// The cargo feature that compiles it in.
    fn feature(self) -> &'static str {
        match self {
            Self::Cpu => "",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
            Self::DirectMl => "directml",
            Self::CoreMl => "coreml",
        }
    }

    /// Whether this build of Kiln can register it.
    pub fn compiled_in(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Cuda => cfg!(feature = "cuda"),
            Self::TensorRt => cfg!(feature = "tensorrt"),
            Self::DirectMl => cfg!(feature = "directml"),
            Self::CoreMl => cfg!(feature = "coreml"),
        }
    }
}

/// How a runtime picks providers.
#[derive(Debug, Clone, Default)]
pub struct ProviderPolicy {
    /// Preferred providers, best first. Empty = CPU only.
    pub preferred: Vec<Provider>,
    /// GPU index for CUDA/TensorRT, adapter index for DirectML.
    pub device_id: i32,
    /// Fail instead of falling back to the CPU when none of `preferred` registers.
    pub require: bool,
    /// Reduced-precision GPU math: fast (the default) or exact.
    pub gpu_math: GpuMath,
    /// Most bytes of GPU memory the CUDA provider's arena may hold per
    /// session (`gpu_mem_limit`); 0 = no limit (ONNX Runtime's default).
    pub gpu_memory_limit: usize,
    /// Run the U-Net as a graph specialised to each job's size and batch:
    /// symbolic dimensions fixed and shape sub-graphs folded to constants, so
    /// a CUDA session has no node left on the CPU (see `model::static_unet`).
    pub static_unet: bool,
    /// Capture the specialised U-Net in a CUDA graph and replay it each step
    /// (ONNX Runtime's `enable_cuda_graph`, inputs and outputs bound at fixed
    /// device addresses). Implies `static_unet`; only the CUDA provider uses it.
    pub cuda_graph: bool,
    /// Keep the latents where the U-Net runs between steps: the U-Net's input
    /// and output, the latents and the scheduler's history are tensors on the
    /// U-Net's device, the guidance combine and the scheduler step run there
    /// as a small ONNX graph, and only the final latents (and the latents of
    /// steps whose preview was asked for) come back to the host. For the CUDA
    /// and CPU providers and the schedulers whose step is linear (see
    /// `pipeline::device_loop`); other requests run the host loop. Off by
    /// default.
    pub device_latents: bool,
    /// Test switch, not a setting: with `device_latents`, bind the U-Net's
    /// inputs and output once at fixed addresses and update them by copy, as
    /// CUDA graph replay needs, on any provider; so CI checks that path on the
    /// CPU. With `cuda_graph` on a CUDA session that path is taken anyway.
    #[doc(hidden)]
    pub fixed_unet_buffers: bool,
}

/// Whether GPU providers may trade float32 accuracy for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuMath {
    /// ONNX Runtime's default: CUDA convolutions and matrix products use TF32
    /// tensor cores (10-bit mantissa inputs), about 2.8x faster for an SD 1.5
    /// U-Net on an H200, with images about 1e-3 away from a float32 CPU run.
    #[default]
    Fast,
    /// Full float32 (CUDA `use_tf32=0`): results match the CPU and the
    /// reference within Kiln's parity bounds; for parity checks and bakes that
    /// must reproduce CPU output.
    Exact,
}

impl GpuMath {
    /// `fast` or `exact`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "fast" => Some(Self::Fast),
            "exact" => Some(Self::Exact),
            _ => None,
        }
    }

    /// The name [`GpuMath::from_name`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Exact => "exact",
        }
    }
}

/// What one graph got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderChoice {
    /// Providers registered for the graph, in order; the CPU always follows.
    pub registered: Vec<Provider>,
    /// Why requested providers were skipped (empty if none were).
    pub skipped: Vec<String>,
    /// The GPU math mode in force when a CUDA provider was registered; `None`
    /// when no provider it applies to runs the graph.
    pub gpu_math: Option<GpuMath>,
}

impl ProviderChoice {
    /// The provider that gets first pick of the graph's nodes.
    pub fn primary(&self) -> Provider {
        self.registered.first().copied().unwrap_or(Provider::Cpu)
    }

    /// One line for logs and `kiln_model_graph_provider`.
    pub fn describe(&self) -> String {
        let mut s = self.primary().ort_name().to_string();
        if let Some(math) = self.gpu_math {
            s.push_str(match math {
                GpuMath::Fast => " [gpu math fast: TF32]",
                GpuMath::Exact => " [gpu math exact: float32]",
            });
        }
        if !self.skipped.is_empty() {
            s.push_str(" (");
            s.push_str(&self.skipped.join("; "));
            s.push(')');
        }
        s
    }
}

/// The providers the loaded ONNX Runtime library was built with.
pub fn available_in_runtime() -> Vec<String> {
    let api = ort::api();
    let mut list: *mut *mut c_char = std::ptr::null_mut();
    let mut count = 0i32;
    // SAFETY: GetAvailableProviders fills an array that ReleaseAvailableProviders frees.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut list, &mut count);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
            return Vec::new();
        }
        if list.is_null() {
            return Vec::new();
        }
        let names = (0..count.max(0) as usize)
            .map(|i| CStr::from_ptr(*list.add(i)).to_string_lossy().into_owned())
            .collect();
        let _ = (api.ReleaseAvailableProviders)(list, count);
        names
    }
}

/// Whether graphs under `policy` run on the CPU provider alone: no provider
/// it asks for besides the CPU is compiled into this build and present in the
/// loaded ONNX Runtime (registration itself may still fail later).
pub(crate) fn cpu_only(policy: &ProviderPolicy) -> bool {
    let available = available_in_runtime();
    policy.preferred.iter().all(|&p| p == Provider::Cpu || !p.compiled_in() || !available.iter().any(|a| a == p.ort_name()))
}

/// Registers the policy's providers on `builder` for graph `graph`.
///
/// `cuda_graph` asks the CUDA provider to capture and replay the graph; only a
/// graph whose nodes all run on the GPU and whose inputs and outputs are bound
/// at fixed device addresses may ask (the specialised U-Net).
pub(crate) fn register(builder: &mut SessionBuilder, policy: &ProviderPolicy, graph: &str, cuda_graph: bool) -> Result<ProviderChoice> {
    let available = available_in_runtime();
    let mut choice = ProviderChoice { registered: Vec::new(), skipped: Vec::new(), gpu_math: None };
    for &p in &policy.preferred {
        if p == Provider::Cpu || choice.registered.contains(&p) {
            continue;
        }
        if !p.compiled_in() {
            choice.skipped.push(format!(
                "{}: not compiled into this Kiln build (cargo feature `{}`)",
                p.ort_name(),
                p.feature()
            ));
            continue;
        }
        if !available.iter().any(|a| a == p.ort_name()) {
            choice.skipped.push(format!(
                "{}: the loaded ONNX Runtime does not include it (it has {})",
                p.ort_name(),
                available.join(", ")
            ));
            continue;
        }
        match register_one(builder, p, policy, cuda_graph) {
            Ok(()) => {
                choice.registered.push(p);
                if p == Provider::Cuda {
                    choice.gpu_math = Some(policy.gpu_math);
                }
            }
            Err(e) => choice.skipped.push(format!("{}: registration failed: {e}", p.ort_name())),
        }
    }
    let wanted_gpu = policy.preferred.iter().any(|&p| p != Provider::Cpu);
    if policy.require && wanted_gpu && choice.registered.is_empty() {
        return Err(Error::new(
            ErrorKind::Provider,
            format!("{graph}: none of the requested execution providers is usable: {}", choice.skipped.join("; ")),
        ));
    }
    Ok(choice)
}

#[allow(unused_variables)]
fn register_one(builder: &mut SessionBuilder, p: Provider, policy: &ProviderPolicy, cuda_graph: bool) -> std::result::Result<(), String> {
    #[allow(unused_imports)]
    use ort::ep::ExecutionProvider;
    let device_id = policy.device_id;
    match p {
        #[cfg(feature = "cuda")]
        Provider::Cuda => {
            let mut ep = ort::ep::CUDA::default().with_device_id(device_id).with_tf32(policy.gpu_math == GpuMath::Fast);
            if policy.gpu_memory_limit > 0 {
                ep = ep.with_memory_limit(policy.gpu_memory_limit);
            }
            if cuda_graph {
                ep = ep.with_cuda_graph(true);
            }
            ep.register(builder).map_err(|e| e.to_string())
        }
        #[cfg(feature = "tensorrt")]
        Provider::TensorRt => ort::ep::TensorRT::default().with_device_id(device_id).register(builder).map_err(|e| e.to_string()),
        #[cfg(feature = "directml")]
        Provider::DirectMl => ort::ep::DirectML::default().with_device_id(device_id).register(builder).map_err(|e| e.to_string()),
        #[cfg(feature = "coreml")]
        Provider::CoreMl => ort::ep::CoreML::default().register(builder).map_err(|e| e.to_string()),
        _ => Err("not compiled in".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::Provider;

    #[test]
    fn short_names_round_trip_and_unknown_ones_are_none() {
        for p in Provider::ALL {
            assert_eq!(Provider::from_name(p.short_name()), Some(p));
        }
        assert_eq!(Provider::from_name("CUDA"), None);
        assert_eq!(Provider::from_name(""), None);
        assert_eq!(Provider::list_from_names(" cuda, cpu,"), Ok(vec![Provider::Cuda, Provider::Cpu]));
        assert!(Provider::list_from_names("cuda,gpu").unwrap_err().contains("\"gpu\""));
    }
}
