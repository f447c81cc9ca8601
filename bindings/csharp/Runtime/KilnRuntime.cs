using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using Kiln.Interop;

namespace Kiln
{
    /// <summary>Keeps managed arrays pinned while a C call reads them (strings, pixels, lists).</summary>
    internal sealed class Pins : IDisposable
    {
        readonly List<GCHandle> handles = new List<GCHandle>();

        internal IntPtr Pin(object array)
        {
            if (array == null) return IntPtr.Zero;
            var h = GCHandle.Alloc(array, GCHandleType.Pinned);
            handles.Add(h);
            return h.AddrOfPinnedObject();
        }

        internal IntPtr PinString(string s) { return Pin(Utf8.ToNative(s)); }

        readonly List<SafeHandle> borrowed = new List<SafeHandle>();

        /// <summary>The raw pointer of a Kiln handle, kept from being released until Dispose.</summary>
        internal IntPtr Borrow(SafeHandle handle)
        {
            if (handle == null) return IntPtr.Zero;
            bool added = false;
            handle.DangerousAddRef(ref added);
            if (added) borrowed.Add(handle);
            return handle.DangerousGetHandle();
        }

        public void Dispose()
        {
            foreach (var h in handles) h.Free();
            handles.Clear();
            foreach (var h in borrowed) h.DangerousRelease();
            borrowed.Clear();
        }
    }

    /// <summary>Settings for <see cref="KilnRuntime"/>; unset values keep Kiln's defaults.</summary>
    public sealed class KilnRuntimeSettings
    {
        /// <summary>Path of the ONNX Runtime library; null searches (ORT_DYLIB_PATH, beside libkiln, ...).</summary>
        public string OnnxRuntimePath;
        /// <summary>Threads per graph; 0 = all cores but one.</summary>
        public uint IntraOpThreads;
        /// <summary>Threads for independent graph branches; 0 = 1.</summary>
        public uint InterOpThreads;
        /// <summary>Let ONNX Runtime's threads spin while idle (steals cycles from a game).</summary>
        public bool AllowSpinning;
        /// <summary>Receives log lines on the thread that logs; must be thread-safe and quick.</summary>
        public Action<KilnLogLevel, string> Log;
        /// <summary>Least severe level delivered to <see cref="Log"/>.</summary>
        public KilnLogLevel LogLevel = KilnLogLevel.Info;
        /// <summary>Worker threads for jobs; 0 = 1 (the pool is process-wide).</summary>
        public uint JobWorkers;
        /// <summary>Execution providers, best first; null = CPU only.</summary>
        public KilnProvider[] Providers;
        /// <summary>GPU or adapter index.</summary>
        public int DeviceId;
        /// <summary>Fail model loads instead of falling back to the CPU.</summary>
        public bool RequireProvider;
        /// <summary>Which graphs stay loaded.</summary>
        public KilnResidency Residency = KilnResidency.AllResident;
        /// <summary>Prompt-embedding cache entries per model; null = Kiln's default (32).</summary>
        public uint? EmbeddingCacheEntries;
        /// <summary>Folder for ONNX Runtime's optimized graphs; null = none.</summary>
        public string GraphCacheDir;
        /// <summary>Load a model's graphs one after another on the calling thread.</summary>
        public bool SequentialLoad;
        /// <summary>Fast (TF32, default) or exact (float32) CUDA math.</summary>
        public KilnGpuMath GpuMath = KilnGpuMath.Fast;
        /// <summary>Bytes each CUDA session's arena may hold; 0 = no cap. Too little fails jobs with OUT_OF_MEMORY.</summary>
        public ulong GpuMemoryLimit;
        /// <summary>Run the U-Net specialised to each job's size and batch (shapes folded; nothing left on the CPU under CUDA).</summary>
        public bool StaticUnet;
        /// <summary>With CUDA: capture the specialised U-Net in a CUDA graph and replay it each step (implies <see cref="StaticUnet"/>).</summary>
        public bool CudaGraph;
        /// <summary>Keep latents and the scheduler step on the U-Net's device between steps (falls back to the host loop where it cannot run).</summary>
        public bool DeviceLatents;
    }

    /// <summary>A loaded ONNX Runtime plus settings (C: <c>kiln_runtime</c>). Thread-safe.</summary>
    public sealed class KilnRuntime : IDisposable
    {
        /// <summary>The owned native handle.</summary>
        public readonly KilnRuntimeHandle Handle;

        /// <summary>Loads ONNX Runtime (once per process) and creates a runtime.</summary>
        /// <exception cref="KilnException">RUNTIME_LOAD_FAILED and the paths tried, or a bad setting.</exception>
        public KilnRuntime(KilnRuntimeSettings settings = null)
        {
            if (settings == null) settings = new KilnRuntimeSettings();
            KilnRuntimeOptions o = KilnDefaults.RuntimeOptions();
            o.intra_op_threads = settings.IntraOpThreads;
            o.inter_op_threads = settings.InterOpThreads;
            o.allow_spinning = settings.AllowSpinning ? 1u : 0u;
            o.log_level = (uint)settings.LogLevel;
            o.job_workers = settings.JobWorkers;
            o.device_id = settings.DeviceId;
            o.require_provider = settings.RequireProvider ? 1u : 0u;
            o.residency = (uint)settings.Residency;
            if (settings.EmbeddingCacheEntries.HasValue) o.embedding_cache_entries = settings.EmbeddingCacheEntries.Value;
            o.sequential_load = settings.SequentialLoad ? 1u : 0u;
            o.gpu_math = (uint)settings.GpuMath;
            o.gpu_memory_limit = settings.GpuMemoryLimit;
            o.static_unet = settings.StaticUnet ? 1u : 0u;
            o.cuda_graph = settings.CudaGraph ? 1u : 0u;
            o.device_latents = settings.DeviceLatents ? 1u : 0u;
            LogSink sink = settings.Log != null ? new LogSink(settings.Log) : null;
            IntPtr raw;
            uint status;
            try
            {
                using (var pins = new Pins())
                {
                    o.onnxruntime_path = pins.PinString(settings.OnnxRuntimePath);
                    o.graph_cache_dir = pins.PinString(settings.GraphCacheDir);
                    if (settings.Providers != null)
                    {
                        var list = new uint[settings.Providers.Length];
                        for (int i = 0; i < list.Length; i++) list[i] = (uint)settings.Providers[i];
                        o.providers = pins.Pin(list);
                        o.providers_len = new UIntPtr((uint)list.Length);
                    }
                    if (sink != null)
                    {
                        o.log_callback.Value = KilnTrampolines.LogPointer;
                        o.log_user_data = sink.UserData;
                    }
                    status = KilnNative.kiln_runtime_create(ref o, out raw);
                }
            }
            catch
            {
                if (sink != null) sink.Release();
                throw;
            }
            if (status != 0)
            {
                var error = KilnStatusNames.Error(status);
                if (sink != null) sink.Release();
                throw new KilnException(error.Status, error.Message);
            }
            Handle = new KilnRuntimeHandle(raw, sink);
        }

        /// <summary>The loaded ONNX Runtime's version, e.g. "1.31.1".</summary>
        public string OnnxRuntimeVersion
        {
            get
            {
                string v;
                KilnStatusNames.Check(Utf8.ReadString((byte[] b, UIntPtr n, out UIntPtr l) => KilnNative.kiln_runtime_onnxruntime_version(Handle, b, n, out l), out v));
                return v;
            }
        }

        /// <summary>The path ONNX Runtime was loaded from.</summary>
        public string OnnxRuntimePath
        {
            get
            {
                string v;
                KilnStatusNames.Check(Utf8.ReadString((byte[] b, UIntPtr n, out UIntPtr l) => KilnNative.kiln_runtime_onnxruntime_path(Handle, b, n, out l), out v));
                return v;
            }
        }

        /// <summary>Whether the loaded ONNX Runtime includes <c>provider</c>.</summary>
        public bool ProviderAvailable(KilnProvider provider)
        {
            uint available;
            KilnStatusNames.Check(KilnNative.kiln_runtime_provider_available(Handle, (uint)provider, out available));
            return available != 0;
        }

        /// <summary>Kiln's version as (major &lt;&lt; 16) | (minor &lt;&lt; 8) | patch.</summary>
        public static uint LibraryVersion { get { return KilnNative.kiln_version(); } }
        /// <summary>Kiln's version string, e.g. "0.1.0".</summary>
        public static string LibraryVersionString { get { return Utf8.FromNative(KilnNative.kiln_version_string()); } }

        /// <summary>Destroys the runtime; models loaded from it stay valid.</summary>
        public void Dispose() { Handle.Dispose(); }
    }
}
