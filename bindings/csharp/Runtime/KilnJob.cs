using System;
using System.Runtime.InteropServices;
using Kiln.Interop;

namespace Kiln
{
    /// <summary>How to run a job.</summary>
    public sealed class KilnJobSettings
    {
        /// <summary>Higher runs first; equal priorities run in submission order.</summary>
        public int Priority;
        /// <summary>A preview every this many U-Net calls (and at the last); 0 = none. Upscale, model and upscaler load jobs make no previews.</summary>
        public uint PreviewInterval;
        /// <summary>
        /// Optional event handler. It runs on a Kiln thread (the job's worker; a model load's
        /// progress also comes from the threads that open its graphs), one call at a time per job, never the main thread:
        /// do not touch engine objects there (poll instead). Exceptions it throws are caught,
        /// kept in <see cref="KilnJob.HandlerException"/> and sent to <see cref="KilnCallbacks"/>.
        /// A blocking generation started here holds that worker until it ends; on the same
        /// model while CUDA graph replay runs with device latents it fails with
        /// <c>KilnStatus.Busy</c> instead (the running job holds the U-Net's fixed buffers).
        /// </summary>
        public Action<KilnJobEventArgs> OnEvent;
    }

    /// <summary>One job event (C: <c>kiln_job_event</c>), copied out of Kiln's borrowed struct.</summary>
    public sealed class KilnJobEventArgs
    {
        /// <summary>What happened.</summary>
        public readonly KilnJobEventKind Kind;
        /// <summary>The job's id.</summary>
        public readonly ulong JobId;
        /// <summary>U-Net calls finished (progress) or shown (preview); graph runs (tiles) for an upscale job.</summary>
        public readonly uint Step;
        /// <summary>U-Net calls in total; graph runs for an upscale job.</summary>
        public readonly uint TotalSteps;
        /// <summary>How the job ended (Finished events).</summary>
        public readonly KilnJobState State;
        /// <summary>Preview width (Preview events).</summary>
        public readonly int PreviewWidth;
        /// <summary>Preview height (Preview events).</summary>
        public readonly int PreviewHeight;
        /// <summary>Preview RGBA8, tightly packed, rows top-down; null for other kinds.</summary>
        public readonly byte[] PreviewPixels;

        internal KilnJobEventArgs(KilnJobEvent e)
        {
            Kind = (KilnJobEventKind)e.kind;
            JobId = e.job;
            Step = e.step;
            TotalSteps = e.total_steps;
            State = (KilnJobState)e.state;
            if (e.pixels != IntPtr.Zero)
            {
                PreviewWidth = (int)e.width;
                PreviewHeight = (int)e.height;
                int row = PreviewWidth * 4;
                long pitch = (long)e.row_pitch.ToUInt64();
                PreviewPixels = new byte[row * PreviewHeight];
                for (int y = 0; y < PreviewHeight; y++)
                    Marshal.Copy(new IntPtr(e.pixels.ToInt64() + y * pitch), PreviewPixels, y * row, row);
            }
        }
    }

    /// <summary>A job's state and progress (C: <c>kiln_job_progress</c>).</summary>
    public struct KilnJobStatus
    {
        /// <summary>Where the job is.</summary>
        public KilnJobState State;
        /// <summary>U-Net calls finished; graph runs (tiles) for an upscale job; KiB of the graph files whose sessions are made for a load job (a model, LoRA switch, seamless view or upscaler), all of <see cref="TotalSteps"/> once it succeeded.</summary>
        public uint Step;
        /// <summary>U-Net calls in total; graph runs for an upscale job (known from submission on). A load job: 1 until it knows which graphs it opens, then their files' size in KiB (graph and external weights, which tracks load time); 1 throughout when it opens none (per-stage residency, a LoRA set fed to slots).</summary>
        public uint TotalSteps;
        /// <summary>Step of the newest preview; 0 while none.</summary>
        public uint PreviewStep;
        /// <summary>Newest preview's width; 0 while none.</summary>
        public int PreviewWidth;
        /// <summary>Newest preview's height; 0 while none.</summary>
        public int PreviewHeight;
        /// <summary>True once the job succeeded, failed or was cancelled.</summary>
        public bool Ended { get { return State == KilnJobState.Succeeded || State == KilnJobState.Failed || State == KilnJobState.Cancelled; } }
    }

    /// <summary>
    /// A queued generation, texture helper or upscale (a Kiln job id; <see cref="KilnModel.Submit"/>,
    /// <see cref="KilnModel.SubmitExtendTexture"/>, <see cref="KilnModel.SubmitMakeTileable"/>,
    /// <see cref="KilnUpscaler.Submit"/>), a model load, LoRA switch or seamless view
    /// (<see cref="KilnModel.SubmitLoad(KilnRuntime, string, KilnJobSettings)"/>,
    /// <see cref="KilnModel.SubmitWithLoras"/>, <see cref="KilnModel.SubmitWithAdapters"/>,
    /// <see cref="KilnModel.SubmitSeamless"/>), or an upscaler load
    /// (<see cref="KilnUpscaler.SubmitLoad"/>). Poll it once a frame from the main thread; copy
    /// the image (or take the model or upscaler) once it succeeded.
    /// Dispose cancels it if it is still running and frees it.
    /// </summary>
    public sealed class KilnJob : IDisposable
    {
        readonly JobCallbackState state;
        // Orders TryTakeModel's and TryTakeUpscaler's log leases before Release gives the job's own back.
        readonly object gate = new object();
        int disposed;

        /// <summary>Kiln's job id.</summary>
        public readonly ulong Id;

        internal KilnJob(ulong id, JobCallbackState state)
        {
            Id = id;
            this.state = state;
        }

        /// <summary>A <c>kiln_job_submit*</c> call with all but the job options and the id bound.</summary>
        internal delegate uint NativeSubmit(ref KilnJobOptions jobOptions, out ulong id);

        /// <summary>
        /// The body of every submit: the job options for <c>jobSettings</c> and their callback
        /// state (the job leases <c>sink</c>), <c>call</c>, and the job. When <c>call</c> throws
        /// (a disposed handle, a NUL in a string) or returns an error, Kiln queued nothing and never
        /// saw user_data: the state is abandoned and the exception, or the status, thrown.
        /// </summary>
        internal static KilnJob Submit(KilnJobSettings jobSettings, LogSink sink, NativeSubmit call)
        {
            KilnJobOptions jo;
            JobCallbackState state = Prepare(jobSettings, sink, out jo);
            ulong id;
            uint status;
            try
            {
                status = call(ref jo, out id);
            }
            catch
            {
                state.Abandon();
                throw;
            }
            return Accept(state, status, id);
        }

        /// <summary>
        /// The job options for <c>jobSettings</c> (null = defaults), with the callback state that
        /// travels as their <c>user_data</c>.
        /// </summary>
        static JobCallbackState Prepare(KilnJobSettings jobSettings, LogSink sink, out KilnJobOptions jo)
        {
            if (jobSettings == null) jobSettings = new KilnJobSettings();
            // The job may log after its model or upscaler handle is gone: it holds its own lease.
            var state = new JobCallbackState(jobSettings.OnEvent, sink != null ? sink.AddRef() : null);
            jo = KilnDefaults.JobOptions();
            jo.priority = jobSettings.Priority;
            jo.preview_interval = jobSettings.PreviewInterval;
            // Always our trampoline: its Finished event tells the binding when Kiln is done
            // with user_data, so the GCHandle is freed exactly then.
            jo.callback.Value = KilnTrampolines.JobEventPointer;
            jo.user_data = state.UserData;
            return state;
        }

        /// <summary>
        /// The job a submit call returned, or (status not OK: Kiln queued nothing and never saw
        /// user_data) the state abandoned and the status thrown. Called right after the submit,
        /// on the same thread, so the message is that call's.
        /// </summary>
        static KilnJob Accept(JobCallbackState state, uint status, ulong id)
        {
            if (status != 0)
            {
                var e = KilnStatusNames.Error(status);
                state.Abandon();
                throw new KilnException(e.Status, e.Message);
            }
            state.Submitted(id);
            return new KilnJob(id, state);
        }

        /// <summary>The last exception your event handler threw, or null.</summary>
        public Exception HandlerException { get { return state.HandlerException; } }

        /// <summary>State and progress, without blocking (cheap enough for every frame).</summary>
        public KilnJobStatus Poll()
        {
            KilnJobStatus s;
            KilnError e = TryPoll(out s);
            if (!e.Ok) throw new KilnException(e.Status, e.Message);
            return s;
        }

        /// <summary>As <see cref="Poll"/>, returning the status instead of throwing.</summary>
        public KilnError TryPoll(out KilnJobStatus status)
        {
            var p = new KilnJobProgress { struct_size = (uint)Marshal.SizeOf(typeof(KilnJobProgress)) };
            uint s = KilnNative.kiln_job_poll(Id, ref p);
            status = new KilnJobStatus
            {
                State = (KilnJobState)p.state,
                Step = p.step,
                TotalSteps = p.total_steps,
                PreviewStep = p.preview_step,
                PreviewWidth = (int)p.preview_width,
                PreviewHeight = (int)p.preview_height,
            };
            return KilnStatusNames.Error(s);
        }

        /// <summary>Blocks up to <c>timeoutMs</c> for the job to end (tools and bakes; a game polls).</summary>
        public KilnJobState Wait(uint timeoutMs)
        {
            uint st;
            KilnStatusNames.Check(KilnNative.kiln_job_wait(Id, timeoutMs, out st));
            return (KilnJobState)st;
        }

        /// <summary>Asks the job to stop; a running one stops within one graph call (one tile for an upscale).</summary>
        public void Cancel() { KilnStatusNames.Check(KilnNative.kiln_job_cancel(Id)); }

        /// <summary>The job's own error message; empty unless it failed or was cancelled.</summary>
        public string ErrorMessage
        {
            get
            {
                string v;
                KilnStatusNames.Check(Utf8.ReadString((byte[] b, UIntPtr n, out UIntPtr l) => KilnNative.kiln_job_error_message(Id, b, n, out l), out v));
                return v;
            }
        }

        /// <summary>Width and height of a succeeded job's image.</summary>
        public void ImageSize(out int width, out int height)
        {
            uint w, h;
            KilnStatusNames.Check(KilnNative.kiln_job_image_size(Id, out w, out h));
            width = (int)w;
            height = (int)h;
        }

        /// <summary>
        /// Copies a succeeded job's image into <c>pixels</c> (rows top-down, pitch 0 = width × 4).
        /// Returns false with KILN_STATUS_BUSY while it runs; other failures are in the error too.
        /// </summary>
        public KilnError TryCopyImage(byte[] pixels, int rowPitch = 0)
        {
            uint len = pixels == null ? 0u : (uint)pixels.Length;
            return KilnStatusNames.Error(KilnNative.kiln_job_copy_image(Id, pixels, new UIntPtr(len), new UIntPtr((uint)rowPitch)));
        }

        /// <summary>The succeeded job's image, tightly packed, rows top-down.</summary>
        public byte[] CopyImage()
        {
            int w, h;
            ImageSize(out w, out h);
            var pixels = new byte[w * h * 4];
            KilnError e = TryCopyImage(pixels);
            if (!e.Ok) throw new KilnException(e.Status, e.Message);
            return pixels;
        }

        /// <summary>The succeeded job's image, tightly packed, rows bottom-up (Unity's Texture2D order).</summary>
        public byte[] CopyImageBottomUp()
        {
            int w, h;
            ImageSize(out w, out h);
            byte[] pixels = CopyImage();
            KilnPixels.FlipRowsInPlace(pixels, w * 4, h);
            return pixels;
        }

        /// <summary>
        /// A new model handle (C: <c>kiln_job_model</c>) from a succeeded model job
        /// (<see cref="KilnModel.SubmitLoad(KilnRuntime, string, KilnJobSettings)"/>,
        /// <see cref="KilnModel.SubmitWithLoras"/>, <see cref="KilnModel.SubmitWithAdapters"/>,
        /// <see cref="KilnModel.SubmitSeamless"/>): each call gives a <see cref="KilnModel"/> of its own, disposed independently of the job
        /// and of each other (each outlives the job's Dispose). With the runtime's log handler, as
        /// <see cref="KilnModel.Load(KilnRuntime, string)"/>'s models have.
        /// </summary>
        /// <exception cref="KilnException">BUSY (queued or running), INVALID_ARGUMENT (the job failed, was cancelled, or made an image or an upscaler).</exception>
        /// <exception cref="ObjectDisposedException">The job was disposed.</exception>
        public KilnModel TakeModel()
        {
            KilnModel model;
            KilnError e = TryTakeModel(out model);
            if (!e.Ok) throw new KilnException(e.Status, e.Message);
            return model;
        }

        /// <summary>As <see cref="TakeModel"/>, returning the status instead of throwing (BUSY = not yet); <c>model</c> is null unless it is OK.</summary>
        /// <exception cref="ObjectDisposedException">The job was disposed.</exception>
        public KilnError TryTakeModel(out KilnModel model)
        {
            return TryTake(KilnNative.kiln_job_model, (raw, sink) => new KilnModel(raw, sink), out model);
        }

        /// <summary>The native call that hands out a new handle to what a job made.</summary>
        delegate uint TakeCall(ulong job, out IntPtr raw);

        /// <summary>
        /// The body of <see cref="TryTakeModel"/> and <see cref="TryTakeUpscaler"/>: a new handle from
        /// <c>take</c>, wrapped by <c>wrap</c> with a log lease of its own (what it wraps may log after
        /// the runtime and this job are gone), taken while the job's still stands and released again
        /// when there is nothing to take.
        /// </summary>
        KilnError TryTake<T>(TakeCall take, Func<IntPtr, LogSink, T> wrap, out T made) where T : class
        {
            made = null;
            LogSink sink;
            lock (gate)
            {
                if (disposed != 0) throw new ObjectDisposedException("KilnJob");
                sink = state.Sink != null ? state.Sink.AddRef() : null;
            }
            IntPtr raw;
            uint status = take(Id, out raw);
            // The finalizer must not free the id during the call.
            GC.KeepAlive(this);
            KilnError error = KilnStatusNames.Error(status);
            if (status == 0) made = wrap(raw, sink);
            else if (sink != null) sink.Release();
            return error;
        }

        /// <summary>
        /// A new upscaler handle (C: <c>kiln_job_upscaler</c>) from a succeeded
        /// <see cref="KilnUpscaler.SubmitLoad"/> job: each call gives a <see cref="KilnUpscaler"/> of
        /// its own, disposed independently of the job and of each other (each outlives the job's
        /// Dispose). With the runtime's log handler, as <see cref="KilnUpscaler.Load"/>'s upscalers have.
        /// </summary>
        /// <exception cref="KilnException">BUSY (queued or running), INVALID_ARGUMENT (the job failed, was cancelled, or made an image or a model).</exception>
        /// <exception cref="ObjectDisposedException">The job was disposed.</exception>
        public KilnUpscaler TakeUpscaler()
        {
            KilnUpscaler upscaler;
            KilnError e = TryTakeUpscaler(out upscaler);
            if (!e.Ok) throw new KilnException(e.Status, e.Message);
            return upscaler;
        }

        /// <summary>As <see cref="TakeUpscaler"/>, returning the status instead of throwing (BUSY = not yet); <c>upscaler</c> is null unless it is OK.</summary>
        /// <exception cref="ObjectDisposedException">The job was disposed.</exception>
        public KilnError TryTakeUpscaler(out KilnUpscaler upscaler)
        {
            return TryTake(KilnNative.kiln_job_upscaler, (raw, sink) => new KilnUpscaler(raw, sink), out upscaler);
        }

        /// <summary>Copies the newest preview (size from <see cref="Poll"/>); BUSY while there is none.</summary>
        public KilnError TryCopyPreview(byte[] pixels, out uint step, int rowPitch = 0)
        {
            uint len = pixels == null ? 0u : (uint)pixels.Length;
            return KilnStatusNames.Error(KilnNative.kiln_job_copy_preview(Id, pixels, new UIntPtr(len), new UIntPtr((uint)rowPitch), out step));
        }

        /// <summary>
        /// Cancels every job of this process that has not finished and waits, up to
        /// <c>timeoutMs</c>, until Kiln has delivered each one's Finished event, after which
        /// Kiln never calls managed code for it again. Call it before the managed side goes
        /// away while jobs may run (Unity: the Editor's domain reload; KilnEditorReload does).
        /// Returns how many jobs had still not finished.
        /// </summary>
        public static int CancelAll(uint timeoutMs)
        {
            JobCallbackState[] jobs = JobCallbackState.Live();
            foreach (JobCallbackState s in jobs)
                if (!s.Finished) KilnNative.kiln_job_cancel(s.Id);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (true)
            {
                int running = 0;
                foreach (JobCallbackState s in jobs) if (!s.Finished) running++;
                if (running == 0 || clock.ElapsedMilliseconds >= timeoutMs) return running;
                System.Threading.Thread.Sleep(1);
            }
        }

        /// <summary>
        /// Releases the job. One still queued or running is cancelled, and its id is freed
        /// when Kiln reports it finished (Kiln may still be calling the handler until then).
        /// </summary>
        public void Dispose()
        {
            Release();
            GC.SuppressFinalize(this);
        }

        /// <summary>Releases a job that was never disposed.</summary>
        ~KilnJob() { Release(); }

        void Release()
        {
            lock (gate)
            {
                if (disposed != 0) return;
                disposed = 1;
            }
            if (!state.Finished) KilnNative.kiln_job_cancel(Id);
            state.Release();
        }
    }
}
