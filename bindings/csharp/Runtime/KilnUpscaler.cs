using System;
using System.Runtime.InteropServices;
using Kiln.Interop;

namespace Kiln
{
    /// <summary>
    /// A loaded super-resolution graph (C: <c>kiln_upscaler</c>): ESRGAN, Real-ESRGAN, SwinIR, ...
    /// exported to ONNX. Thread-safe (its graph runs one window at a time); free it with Dispose.
    /// </summary>
    public sealed class KilnUpscaler : IDisposable
    {
        /// <summary>The owned native handle.</summary>
        public readonly KilnUpscalerHandle Handle;

        /// <summary>Owns <c>raw</c>; <c>sink</c> is a log lease of the upscaler's own (released with the handle).</summary>
        internal KilnUpscaler(IntPtr raw, LogSink sink) { Handle = new KilnUpscalerHandle(raw, sink); }

        /// <summary>
        /// Loads a folder holding <c>model.onnx</c> (and optionally <c>config.json</c>), or an
        /// ONNX file (settings, if any, in the <c>.json</c> of the same name beside it). Runs
        /// with the runtime's providers, threads and logging; either may be disposed first.
        /// </summary>
        /// <exception cref="KilnException">MODEL_NOT_FOUND, MODEL_INVALID (not an upscaler, bad settings), IO, INFERENCE_FAILED.</exception>
        public static KilnUpscaler Load(KilnRuntime runtime, string path)
        {
            KilnUpscaler upscaler;
            KilnError error = TryLoad(runtime, path, out upscaler);
            if (!error.Ok) throw new KilnException(error.Status, error.Message);
            return upscaler;
        }

        /// <summary>As <see cref="Load"/>, returning the status instead of throwing.</summary>
        public static KilnError TryLoad(KilnRuntime runtime, string path, out KilnUpscaler upscaler)
        {
            if (runtime == null) throw new ArgumentNullException("runtime");
            upscaler = null;
            // The upscaler may log after the runtime handle is gone: it holds its own lease.
            LogSink sink = runtime.Handle.Sink != null ? runtime.Handle.Sink.AddRef() : null;
            IntPtr raw;
            uint status;
            try
            {
                status = KilnNative.kiln_upscaler_load(runtime.Handle, Utf8.ToNative(path), out raw);
            }
            catch
            {
                // A NUL in the path or a disposed runtime: Kiln never saw the call.
                if (sink != null) sink.Release();
                throw;
            }
            KilnError error = KilnStatusNames.Error(status);
            if (status == 0) upscaler = new KilnUpscaler(raw, sink);
            else if (sink != null) sink.Release();
            return error;
        }

        /// <summary>
        /// <see cref="Load"/> as a job on Kiln's worker threads (C: <c>kiln_job_submit_upscaler_load</c>),
        /// so a game loads a super-resolution graph without blocking its frame loop or starting a
        /// thread: returns at once; poll the job and take the upscaler with
        /// <see cref="KilnJob.TakeUpscaler"/> once it succeeded. <c>path</c> is checked and copied
        /// here, the graph read by the job. Its <see cref="KilnJobStatus.Step"/> counts KiB of the
        /// graph once its session is made; it makes no previews. <see cref="KilnJob.Cancel"/> stops a queued
        /// load before it starts; a running one stops inside the graph session ONNX Runtime is
        /// creating and ends <see cref="KilnJobState.Cancelled"/> without an upscaler. The job holds
        /// what it needs of the runtime and its own log lease, so <c>runtime</c> may be disposed once
        /// this returns.
        /// </summary>
        /// <exception cref="KilnException">MODEL_NOT_FOUND (no graph file there), ...; no job is queued. The job's own errors are <see cref="Load"/>'s.</exception>
        /// <exception cref="ObjectDisposedException">The runtime was disposed; no job is queued.</exception>
        public static KilnJob SubmitLoad(KilnRuntime runtime, string path, KilnJobSettings jobSettings = null)
        {
            if (runtime == null) throw new ArgumentNullException("runtime");
            using (var pins = new Pins())
            {
                // A disposed runtime throws here, before its log sink is leased to the job.
                pins.Borrow(runtime.Handle);
                // The job (and each upscaler taken from it) may log after the runtime handle is gone.
                return KilnJob.Submit(jobSettings, runtime.Handle.Sink, (ref KilnJobOptions jo, out ulong id) =>
                    KilnNative.kiln_job_submit_upscaler_load(runtime.Handle, Utf8.ToNative(path), ref jo, out id));
            }
        }

        /// <summary>Output pixels per input pixel along each axis (2, 4, ...).</summary>
        public int Scale
        {
            get
            {
                uint scale;
                KilnStatusNames.Check(KilnNative.kiln_upscaler_scale(Handle, out scale));
                return (int)scale;
            }
        }

        /// <summary>
        /// Upscales <c>image</c> by <see cref="Scale"/> into a new image (<c>image</c> is unchanged),
        /// tile by tile; <c>options</c> null = defaults (<see cref="KilnDefaults.UpscaleOptions"/>:
        /// 256-pixel tiles, 16 pixels of context, not seamless, alpha through the graph). Blocking
        /// and heavy (ESRGAN: about 8 s for 256x256 to 1024x1024 on two CPU cores): queue it with
        /// <see cref="Submit"/> or call it from a worker thread, never the game's main thread.
        /// <see cref="Cancel"/> from another thread stops it.
        /// </summary>
        /// <exception cref="KilnException">CANCELLED, INVALID_ARGUMENT (unknown seamless or alpha, context over 1024), INVALID_SIZE (result over 16384 a side), INFERENCE_FAILED, OUT_OF_MEMORY, ...; the upscaler stays usable.</exception>
        public KilnImage Upscale(KilnImage image, KilnUpscaleOptions? options = null)
        {
            if (image == null) throw new ArgumentNullException("image");
            KilnUpscaleOptions o = options ?? KilnDefaults.UpscaleOptions();
            o.struct_size = (uint)Marshal.SizeOf(typeof(KilnUpscaleOptions));
            IntPtr raw;
            uint status;
            using (var pins = new Pins())
            {
                // A disposed image throws here, before the call: Mono's marshaller, failing on the
                // second handle, would keep the reference it had taken on the first (this
                // upscaler), which then could never be freed.
                pins.Borrow(image.Handle);
                status = KilnNative.kiln_upscaler_upscale(Handle, image.Handle, ref o, out raw);
            }
            KilnStatusNames.Check(status);
            return new KilnImage(raw);
        }

        /// <summary>
        /// <see cref="Upscale"/> as a job on Kiln's worker threads: returns at once; poll it every
        /// frame and copy its image once it succeeded. Its <see cref="KilnJobStatus.Step"/> and
        /// <see cref="KilnJobStatus.TotalSteps"/> count graph runs (tiles; twice as many when alpha
        /// goes through the graph), known from submission on; it makes no previews
        /// (<see cref="KilnJobSettings.PreviewInterval"/> is ignored). The job copies <c>image</c>
        /// and holds what it needs of this upscaler, so both may be disposed once this returns.
        /// <see cref="KilnJob.Cancel"/> and <see cref="Cancel"/> stop it within one graph run.
        /// </summary>
        /// <exception cref="KilnException">INVALID_ARGUMENT (unknown seamless or alpha, context over 1024), INVALID_SIZE (result over 16384 a side), ...; no job is queued. The job's own errors are <see cref="Upscale"/>'s.</exception>
        public KilnJob Submit(KilnImage image, KilnUpscaleOptions? options = null, KilnJobSettings jobSettings = null)
        {
            if (image == null) throw new ArgumentNullException("image");
            KilnUpscaleOptions o = options ?? KilnDefaults.UpscaleOptions();
            o.struct_size = (uint)Marshal.SizeOf(typeof(KilnUpscaleOptions));
            return KilnJob.Submit(jobSettings, Handle.Sink, (ref KilnJobOptions jo, out ulong id) =>
            {
                using (var pins = new Pins())
                {
                    // A disposed image throws here, before the call: Mono's marshaller, failing on the
                    // second handle, would keep the reference it had taken on the first (this
                    // upscaler), which then could never be freed.
                    pins.Borrow(image.Handle);
                    return KilnNative.kiln_job_submit_upscale(Handle, image.Handle, ref o, ref jo, out id);
                }
            });
        }

        /// <summary>
        /// Stops every <see cref="Upscale"/> on this upscaler running on other threads, and every
        /// running job from <see cref="Submit"/> on it, within one graph run: each call throws
        /// <see cref="KilnException"/> with <see cref="KilnStatus.Cancelled"/>, each job ends
        /// <see cref="KilnJobState.Cancelled"/>. Queued jobs and calls that start afterwards run
        /// normally. Safe from any thread.
        /// </summary>
        public void Cancel()
        {
            KilnStatusNames.Check(KilnNative.kiln_upscaler_cancel(Handle));
        }

        /// <summary>
        /// Frees the upscaler (once any <see cref="Upscale"/> still running on another thread
        /// returns). Jobs already submitted go on: each holds the graph until it ends.
        /// </summary>
        public void Dispose() { Handle.Dispose(); }
    }
}
