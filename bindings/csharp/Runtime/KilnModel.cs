using System;
using System.Runtime.InteropServices;
using Kiln.Interop;

namespace Kiln
{
    /// <summary>A loaded model (C: <c>kiln_model</c>). Thread-safe; free it with Dispose.</summary>
    public sealed class KilnModel : IDisposable
    {
        /// <summary>The owned native handle.</summary>
        public readonly KilnModelHandle Handle;

        /// <summary>Owns <c>raw</c>; <c>sink</c> is a log lease of the model's own (released with the handle).</summary>
        internal KilnModel(IntPtr raw, LogSink sink) { Handle = new KilnModelHandle(raw, sink); }

        /// <summary>Loads a diffusers/optimum ONNX model folder.</summary>
        /// <exception cref="KilnException">MODEL_NOT_FOUND, MODEL_INVALID, UNSUPPORTED, ... with the file named.</exception>
        public static KilnModel Load(KilnRuntime runtime, string modelDir)
        {
            KilnModel model;
            KilnError error = TryLoad(runtime, modelDir, KilnSeamless.None, null, out model);
            if (!error.Ok) throw new KilnException(error.Status, error.Message);
            return model;
        }

        /// <summary>
        /// Loads a model as a seamless view, with a matting graph, with int8 weights, with its
        /// attention as exported or fused and/or with LoRA slots (<c>kiln_model_load_options</c>:
        /// <c>seamless</c>, <c>matting_path</c>, <c>quantization</c>, <c>attention</c>, <c>lora_slots</c>).
        /// <see cref="KilnQuantization.Int8"/> stores the text encoders' and U-Net's matrix-product
        /// weights as int8 (less memory; pictures close to but not equal to the float model's).
        /// <see cref="KilnAttention.Auto"/> (the default) runs each attention layer of the U-Net and
        /// ControlNets as one fused ONNX Runtime node when the graphs run on the CPU provider;
        /// <see cref="KilnAttention.Exported"/> runs the graphs as exported; pictures differ by float
        /// rounding only (<see cref="KilnModelInfo.fused_attention"/> counts the fused layers).
        /// <c>loraSlots</c> gives the U-Net and text encoders a LoRA slot beside every adaptable layer:
        /// <see cref="WithLoras"/> and <see cref="WithAdapters"/> of such a model feed plain low-rank
        /// LoRAs at run time instead of merging them (no new session and no second copy of the weights
        /// per LoRA set; pictures the merged ones' to float rounding; LoHa, LoKr, full diffs, DoRA and
        /// embeddings are merged as without slots); its plain pictures are those of a model loaded
        /// without, bit for bit (<see cref="KilnModelInfo.lora_slots"/> counts the slotted U-Net layers).
        /// </summary>
        /// <exception cref="KilnException">INVALID_ARGUMENT (an unknown seamless, quantization or attention value), UNSUPPORTED (LoRA slots with the runtime's static U-Net or CUDA graphs), MODEL_NOT_FOUND, ...</exception>
        public static KilnModel Load(KilnRuntime runtime, string modelDir, KilnSeamless seamless, string mattingPath = null, KilnQuantization quantization = KilnQuantization.None, KilnAttention attention = KilnAttention.Auto, bool loraSlots = false)
        {
            KilnModel model;
            KilnError error = TryLoad(runtime, modelDir, seamless, mattingPath, quantization, attention, loraSlots, out model);
            if (!error.Ok) throw new KilnException(error.Status, error.Message);
            return model;
        }

        /// <summary>As <see cref="Load(KilnRuntime, string, KilnSeamless, string, KilnQuantization, KilnAttention, bool)"/> with the weights as exported and the default attention (auto), returning the status instead of throwing.</summary>
        public static KilnError TryLoad(KilnRuntime runtime, string modelDir, KilnSeamless seamless, string mattingPath, out KilnModel model)
        {
            return TryLoad(runtime, modelDir, seamless, mattingPath, KilnQuantization.None, out model);
        }

        /// <summary>As <see cref="Load(KilnRuntime, string, KilnSeamless, string, KilnQuantization, KilnAttention, bool)"/> with the default attention (auto), returning the status instead of throwing.</summary>
        public static KilnError TryLoad(KilnRuntime runtime, string modelDir, KilnSeamless seamless, string mattingPath, KilnQuantization quantization, out KilnModel model)
        {
            return TryLoad(runtime, modelDir, seamless, mattingPath, quantization, KilnAttention.Auto, out model);
        }

        /// <summary>As <see cref="Load(KilnRuntime, string, KilnSeamless, string, KilnQuantization, KilnAttention, bool)"/> without LoRA slots, returning the status instead of throwing.</summary>
        public static KilnError TryLoad(KilnRuntime runtime, string modelDir, KilnSeamless seamless, string mattingPath, KilnQuantization quantization, KilnAttention attention, out KilnModel model)
        {
            return TryLoad(runtime, modelDir, seamless, mattingPath, quantization, attention, false, out model);
        }

        /// <summary>As <see cref="Load(KilnRuntime, string, KilnSeamless, string, KilnQuantization, KilnAttention, bool)"/>, returning the status instead of throwing.</summary>
        public static KilnError TryLoad(KilnRuntime runtime, string modelDir, KilnSeamless seamless, string mattingPath, KilnQuantization quantization, KilnAttention attention, bool loraSlots, out KilnModel model)
        {
            if (runtime == null) throw new ArgumentNullException("runtime");
            model = null;
            // The model may log after the runtime handle is gone: it holds its own lease.
            LogSink sink = runtime.Handle.Sink != null ? runtime.Handle.Sink.AddRef() : null;
            IntPtr raw;
            uint status;
            if (seamless == KilnSeamless.None && mattingPath == null && quantization == KilnQuantization.None && attention == KilnAttention.Auto && !loraSlots)
            {
                status = KilnNative.kiln_model_load(runtime.Handle, Utf8.ToNative(modelDir), out raw);
            }
            else
            {
                KilnModelLoadOptions o = KilnDefaults.ModelLoadOptions();
                o.seamless = (uint)seamless;
                o.quantization = (uint)quantization;
                o.attention = (uint)attention;
                o.lora_slots = loraSlots ? 1u : 0u;
                using (var pins = new Pins())
                {
                    o.matting_path = pins.PinString(mattingPath);
                    status = KilnNative.kiln_model_load_with(runtime.Handle, Utf8.ToNative(modelDir), ref o, out raw);
                }
            }
            KilnError error = KilnStatusNames.Error(status);
            if (status == 0) model = new KilnModel(raw, sink);
            else if (sink != null) sink.Release();
            return error;
        }

        /// <summary>
        /// <see cref="Load(KilnRuntime, string)"/> as a job on Kiln's worker threads, so a game loads
        /// a model without blocking its frame loop or starting a thread: returns at once; poll the
        /// job and take the model with <see cref="KilnJob.TakeModel"/> once it succeeded.
        /// </summary>
        /// <exception cref="KilnException">MODEL_NOT_FOUND (the folder does not exist), ...; no job is queued. The job's own errors are <see cref="Load(KilnRuntime, string)"/>'s.</exception>
        public static KilnJob SubmitLoad(KilnRuntime runtime, string modelDir, KilnJobSettings jobSettings = null)
        {
            return SubmitLoad(runtime, modelDir, KilnSeamless.None, null, jobSettings);
        }

        /// <summary>
        /// <see cref="Load(KilnRuntime, string, KilnSeamless, string, KilnQuantization, KilnAttention, bool)"/> as a job (C:
        /// <c>kiln_job_submit_model_load</c>): the folder and options are checked and copied here,
        /// the files read by the job. Its <see cref="KilnJobStatus.Step"/> counts KiB of the graphs
        /// whose sessions are made, as each is (see <see cref="KilnJobStatus.TotalSteps"/>); it makes no previews. <see cref="KilnJob.Cancel"/> stops a queued
        /// load before it starts; a running one stops inside the graph session ONNX Runtime is
        /// creating and ends <see cref="KilnJobState.Cancelled"/> without a model. The job holds its own log
        /// lease, so <c>runtime</c> may be disposed once this returns.
        /// </summary>
        /// <exception cref="KilnException">MODEL_NOT_FOUND (the folder does not exist), INVALID_ARGUMENT (an unknown seamless value), ...; no job is queued. The job's own errors are <see cref="Load(KilnRuntime, string, KilnSeamless, string, KilnQuantization, KilnAttention, bool)"/>'s.</exception>
        /// <exception cref="ObjectDisposedException">The runtime was disposed; no job is queued.</exception>
        public static KilnJob SubmitLoad(KilnRuntime runtime, string modelDir, KilnSeamless seamless, string mattingPath = null, KilnJobSettings jobSettings = null)
        {
            return SubmitLoad(runtime, modelDir, seamless, mattingPath, KilnQuantization.None, jobSettings);
        }

        /// <summary>
        /// <see cref="Load(KilnRuntime, string, KilnSeamless, string, KilnQuantization, KilnAttention, bool)"/> as a job:
        /// as <see cref="SubmitLoad(KilnRuntime, string, KilnSeamless, string, KilnJobSettings)"/>,
        /// with the weights stored as <c>quantization</c> says and the default attention (auto).
        /// </summary>
        /// <exception cref="KilnException">MODEL_NOT_FOUND (the folder does not exist), INVALID_ARGUMENT (an unknown seamless or quantization value), ...; no job is queued.</exception>
        /// <exception cref="ObjectDisposedException">The runtime was disposed; no job is queued.</exception>
        public static KilnJob SubmitLoad(KilnRuntime runtime, string modelDir, KilnSeamless seamless, string mattingPath, KilnQuantization quantization, KilnJobSettings jobSettings = null)
        {
            return SubmitLoad(runtime, modelDir, seamless, mattingPath, quantization, KilnAttention.Auto, jobSettings);
        }

        /// <summary>
        /// <see cref="Load(KilnRuntime, string, KilnSeamless, string, KilnQuantization, KilnAttention, bool)"/> as a job:
        /// as <see cref="SubmitLoad(KilnRuntime, string, KilnSeamless, string, KilnJobSettings)"/>,
        /// with the weights stored as <c>quantization</c> says, the attention run as <c>attention</c> says
        /// and no LoRA slots.
        /// </summary>
        /// <exception cref="KilnException">MODEL_NOT_FOUND (the folder does not exist), INVALID_ARGUMENT (an unknown seamless, quantization or attention value), ...; no job is queued.</exception>
        /// <exception cref="ObjectDisposedException">The runtime was disposed; no job is queued.</exception>
        public static KilnJob SubmitLoad(KilnRuntime runtime, string modelDir, KilnSeamless seamless, string mattingPath, KilnQuantization quantization, KilnAttention attention, KilnJobSettings jobSettings = null)
        {
            return SubmitLoad(runtime, modelDir, seamless, mattingPath, quantization, attention, false, jobSettings);
        }

        /// <summary>
        /// <see cref="Load(KilnRuntime, string, KilnSeamless, string, KilnQuantization, KilnAttention, bool)"/> as a job:
        /// as <see cref="SubmitLoad(KilnRuntime, string, KilnSeamless, string, KilnJobSettings)"/>,
        /// with the weights stored as <c>quantization</c> says, the attention run as <c>attention</c> says
        /// and LoRA slots where <c>loraSlots</c> is true.
        /// </summary>
        /// <exception cref="KilnException">MODEL_NOT_FOUND (the folder does not exist), INVALID_ARGUMENT (an unknown seamless, quantization or attention value), ...; no job is queued.</exception>
        /// <exception cref="ObjectDisposedException">The runtime was disposed; no job is queued.</exception>
        public static KilnJob SubmitLoad(KilnRuntime runtime, string modelDir, KilnSeamless seamless, string mattingPath, KilnQuantization quantization, KilnAttention attention, bool loraSlots, KilnJobSettings jobSettings = null)
        {
            if (runtime == null) throw new ArgumentNullException("runtime");
            KilnModelLoadOptions o = KilnDefaults.ModelLoadOptions();
            o.seamless = (uint)seamless;
            o.quantization = (uint)quantization;
            o.attention = (uint)attention;
            o.lora_slots = loraSlots ? 1u : 0u;
            using (var pins = new Pins())
            {
                // A disposed runtime throws here, before its log sink is leased to the job.
                pins.Borrow(runtime.Handle);
                // The job (and each model taken from it) may log after the runtime handle is gone.
                return KilnJob.Submit(jobSettings, runtime.Handle.Sink, (ref KilnJobOptions jo, out ulong id) =>
                {
                    o.matting_path = pins.PinString(mattingPath);
                    return KilnNative.kiln_job_submit_model_load(runtime.Handle, Utf8.ToNative(modelDir), ref o, ref jo, out id);
                });
            }
        }

        /// <summary>Facts about the model (native size, size multiple, the <see cref="KilnQuantization"/> it was loaded with in <c>quantization</c>, the number of U-Net attention layers that run fused in <c>fused_attention</c>, the number of U-Net layers with a LoRA slot in <c>lora_slots</c>, ...).</summary>
        public KilnModelInfo Info
        {
            get
            {
                var info = new KilnModelInfo { struct_size = (uint)Marshal.SizeOf(typeof(KilnModelInfo)) };
                KilnStatusNames.Check(KilnNative.kiln_model_get_info(Handle, ref info));
                return info;
            }
        }

        /// <summary>Which execution provider runs <c>graph</c>, and why any requested one was skipped.</summary>
        public string GraphProvider(KilnGraph graph)
        {
            string v;
            KilnStatusNames.Check(Utf8.ReadString((byte[] b, UIntPtr n, out UIntPtr l) => KilnNative.kiln_model_graph_provider(Handle, (uint)graph, b, n, out l), out v));
            return v;
        }

        /// <summary>A new model handle whose images tile along <c>axes</c>.</summary>
        public KilnModel Seamless(KilnSeamless axes)
        {
            LogSink sink = Handle.Sink != null ? Handle.Sink.AddRef() : null;
            IntPtr raw;
            uint status = KilnNative.kiln_model_seamless(Handle, (uint)axes, out raw);
            if (status != 0)
            {
                var e = KilnStatusNames.Error(status);
                if (sink != null) sink.Release();
                throw new KilnException(e.Status, e.Message);
            }
            return new KilnModel(raw, sink);
        }

        /// <summary>
        /// <see cref="Seamless"/> as a job on Kiln's worker threads (C:
        /// <c>kiln_job_submit_seamless</c>): returns at once; the job ends with the view whose
        /// images tile along <c>axes</c>, taken with <see cref="KilnJob.TakeModel"/> once it
        /// succeeded. Making a view rewrites the U-Net's and VAE decoder's convolutions and
        /// creates their sessions (seconds for an SD 1.5 model), so a game switching between
        /// tileable textures and ordinary images asks for one without blocking its frame loop; a
        /// view this model already has (or its own axes) is ready at once. Progress (KiB of the
        /// graphs it remakes) and cancel as for <see cref="SubmitLoad(KilnRuntime, string, KilnSeamless, string, KilnJobSettings)"/>:
        /// a cancel stops the rewrite or the session being created. This model stays usable
        /// meanwhile; the job holds what it needs of it, so it may be disposed once this returns.
        /// </summary>
        /// <exception cref="KilnException">INVALID_ARGUMENT (<c>axes</c> not a <see cref="KilnSeamless"/> value), ...; no job is queued. The job's own errors are <see cref="Seamless"/>'.</exception>
        /// <exception cref="ObjectDisposedException">This model was disposed; no job is queued.</exception>
        public KilnJob SubmitSeamless(KilnSeamless axes, KilnJobSettings jobSettings = null)
        {
            using (var pins = new Pins())
            {
                // A disposed model throws here, before its log sink is leased to the job.
                pins.Borrow(Handle);
                return KilnJob.Submit(jobSettings, Handle.Sink, (ref KilnJobOptions jo, out ulong id) =>
                    KilnNative.kiln_job_submit_seamless(Handle, (uint)axes, ref jo, out id));
            }
        }

        /// <summary>
        /// A new model handle with these LoRAs merged into the original weights (a switch, not a
        /// stack: no LoRAs gives the plain weights back). This model is unchanged; dispose the new
        /// one independently. On a model loaded with LoRA slots (<c>loraSlots</c> of
        /// <see cref="Load(KilnRuntime, string, KilnSeamless, string, KilnQuantization, KilnAttention, bool)"/>)
        /// plain low-rank LoRAs are fed to its slots instead (milliseconds, no weight copy).
        /// </summary>
        /// <exception cref="KilnException">ADAPTER_MISMATCH (made for another model), MODEL_INVALID, MODEL_NOT_FOUND, UNSUPPORTED, ...</exception>
        public KilnModel WithLoras(params KilnLoraSpec[] loras)
        {
            return WithAdapters(loras, null);
        }

        /// <summary>As <see cref="WithLoras"/>, with textual-inversion embeddings too.</summary>
        public KilnModel WithAdapters(KilnLoraSpec[] loras, KilnEmbeddingSpec[] embeddings)
        {
            LogSink sink = Handle.Sink != null ? Handle.Sink.AddRef() : null;
            IntPtr raw;
            uint status;
            using (var pins = new Pins())
            {
                KilnLora[] c = NativeLoras(loras, pins);
                KilnEmbedding[] e = NativeEmbeddings(embeddings, pins);
                if (e == null)
                    status = KilnNative.kiln_model_with_loras(Handle, c, (UIntPtr)(c == null ? 0 : c.Length), out raw);
                else
                    status = KilnNative.kiln_model_with_adapters(Handle, c, (UIntPtr)(c == null ? 0 : c.Length), e, (UIntPtr)e.Length, out raw);
            }
            if (status != 0)
            {
                var err = KilnStatusNames.Error(status);
                if (sink != null) sink.Release();
                throw new KilnException(err.Status, err.Message);
            }
            return new KilnModel(raw, sink);
        }

        /// <summary>
        /// <see cref="WithLoras"/> as a job on Kiln's worker threads, so a game switches LoRAs
        /// without blocking its frame loop: returns at once; take the new model with
        /// <see cref="KilnJob.TakeModel"/> once the job succeeded. This model stays usable meanwhile.
        /// </summary>
        /// <exception cref="KilnException">INVALID_ARGUMENT (a non-finite scale, ...), ...; no job is queued. The job's own errors are <see cref="WithLoras"/>'s.</exception>
        public KilnJob SubmitWithLoras(KilnLoraSpec[] loras, KilnJobSettings jobSettings = null)
        {
            return SubmitWithAdapters(loras, null, jobSettings);
        }

        /// <summary>
        /// <see cref="WithAdapters"/> as a job (C: <c>kiln_job_submit_with_adapters</c>): the lists
        /// and their strings are checked and copied here, the files read by the job. Progress (KiB of
        /// the graphs it remakes), cancel and the model as for <see cref="SubmitLoad(KilnRuntime, string, KilnSeamless, string, KilnJobSettings)"/>.
        /// The job holds what it needs of this model, so it may be disposed once this returns.
        /// </summary>
        /// <exception cref="KilnException">INVALID_ARGUMENT (a non-finite scale, ...), ...; no job is queued. The job's own errors (a missing or mismatched file) are <see cref="WithAdapters"/>'.</exception>
        /// <exception cref="ObjectDisposedException">This model was disposed; no job is queued.</exception>
        public KilnJob SubmitWithAdapters(KilnLoraSpec[] loras, KilnEmbeddingSpec[] embeddings, KilnJobSettings jobSettings = null)
        {
            using (var pins = new Pins())
            {
                // A disposed model throws here, before its log sink is leased to the job.
                pins.Borrow(Handle);
                return KilnJob.Submit(jobSettings, Handle.Sink, (ref KilnJobOptions jo, out ulong id) =>
                {
                    KilnLora[] c = NativeLoras(loras, pins);
                    KilnEmbedding[] e = NativeEmbeddings(embeddings, pins);
                    return KilnNative.kiln_job_submit_with_adapters(Handle, c, (UIntPtr)(c == null ? 0 : c.Length),
                        e, (UIntPtr)(e == null ? 0 : e.Length), ref jo, out id);
                });
            }
        }

        /// <summary>The <c>kiln_lora</c> list for <c>loras</c>, strings pinned in <c>pins</c>; null for none.</summary>
        static KilnLora[] NativeLoras(KilnLoraSpec[] loras, Pins pins)
        {
            if (loras == null || loras.Length == 0) return null;
            var c = new KilnLora[loras.Length];
            for (int i = 0; i < loras.Length; i++)
            {
                c[i] = KilnDefaults.Lora();
                c[i].path = pins.PinString(loras[i].Path);
                c[i].scale = loras[i].Scale;
                if (loras[i].TextEncoderScale.HasValue)
                {
                    c[i].has_text_encoder_scale = 1;
                    c[i].text_encoder_scale = loras[i].TextEncoderScale.Value;
                }
            }
            return c;
        }

        /// <summary>The <c>kiln_embedding</c> list for <c>embeddings</c>, strings pinned in <c>pins</c>; null for none.</summary>
        static KilnEmbedding[] NativeEmbeddings(KilnEmbeddingSpec[] embeddings, Pins pins)
        {
            if (embeddings == null || embeddings.Length == 0) return null;
            var e = new KilnEmbedding[embeddings.Length];
            for (int i = 0; i < embeddings.Length; i++)
            {
                e[i] = KilnDefaults.Embedding();
                e[i].path = pins.PinString(embeddings[i].Path);
                e[i].token = pins.PinString(embeddings[i].Token);
            }
            return e;
        }

        /// <summary>
        /// The LoRAs merged into this handle, in order (empty for a plain model). Each one's
        /// <see cref="KilnLoraSpec.TextEncoderScale"/> is the strength its text-encoder modules
        /// were merged with (see <see cref="LoraTextEncoderScale"/>).
        /// </summary>
        public KilnLoraSpec[] Loras
        {
            get
            {
                UIntPtr count;
                KilnStatusNames.Check(KilnNative.kiln_model_lora_count(Handle, out count));
                var result = new KilnLoraSpec[(int)count];
                for (int i = 0; i < result.Length; i++)
                {
                    float scale = 0;
                    UIntPtr index = (UIntPtr)i;
                    string path;
                    KilnStatusNames.Check(Utf8.ReadString((byte[] b, UIntPtr n, out UIntPtr l) => KilnNative.kiln_model_lora_get(Handle, index, out scale, b, n, out l), out path));
                    float textEncoderScale;
                    KilnStatusNames.Check(KilnNative.kiln_model_lora_text_encoder_scale(Handle, index, out textEncoderScale));
                    result[i] = new KilnLoraSpec(path, scale, textEncoderScale);
                }
                return result;
            }
        }

        /// <summary>
        /// The strength LoRA <c>index</c> (0-based, as in <see cref="Loras"/>) merges its
        /// text-encoder modules with: its own <see cref="KilnLoraSpec.TextEncoderScale"/> when it
        /// was given one, else its <see cref="KilnLoraSpec.Scale"/>.
        /// </summary>
        /// <exception cref="KilnException">INVALID_ARGUMENT (index out of range).</exception>
        public float LoraTextEncoderScale(int index)
        {
            if (index < 0) throw new ArgumentOutOfRangeException("index");
            float scale;
            KilnStatusNames.Check(KilnNative.kiln_model_lora_text_encoder_scale(Handle, (UIntPtr)index, out scale));
            return scale;
        }

        /// <summary>Generates an image, blocking this thread (use <see cref="Submit"/> in a game).</summary>
        public KilnImage Generate(KilnGenerateSettings settings)
        {
            if (settings == null) throw new ArgumentNullException("settings");
            IntPtr raw;
            uint status;
            using (var pins = new Pins())
            {
                KilnGenerateOptions o = settings.ToNative(pins);
                status = KilnNative.kiln_model_generate(Handle, ref o, out raw);
            }
            KilnStatusNames.Check(status);
            return new KilnImage(raw);
        }

        /// <summary>Generates straight into <c>pixels</c> (RGBA8 rows top-down, pitch 0 = width × 4), blocking.</summary>
        public void GenerateInto(KilnGenerateSettings settings, byte[] pixels, int rowPitch = 0)
        {
            KilnError e = TryGenerateInto(settings, pixels, rowPitch);
            if (!e.Ok) throw new KilnException(e.Status, e.Message);
        }

        /// <summary>As <see cref="GenerateInto"/>, returning the status instead of throwing.</summary>
        public KilnError TryGenerateInto(KilnGenerateSettings settings, byte[] pixels, int rowPitch = 0)
        {
            if (settings == null) throw new ArgumentNullException("settings");
            if (rowPitch < 0) throw new ArgumentOutOfRangeException("rowPitch");
            uint len = pixels == null ? 0u : (uint)pixels.Length;
            uint status;
            using (var pins = new Pins())
            {
                KilnGenerateOptions o = settings.ToNative(pins);
                status = KilnNative.kiln_model_generate_into(Handle, ref o, pixels, new UIntPtr(len), new UIntPtr((uint)rowPitch));
            }
            return KilnStatusNames.Error(status);
        }

        /// <summary>
        /// Extends <c>settings.InitImage</c> by the given pixels on each side (the border is
        /// inpainted, the original pixels kept exactly); blocking (a game queues it with
        /// <see cref="SubmitExtendTexture"/>). The new size must be a multiple of the model's
        /// <c>size_multiple</c>.
        /// </summary>
        public KilnImage ExtendTexture(KilnGenerateSettings settings, uint left, uint right, uint top, uint bottom)
        {
            if (settings == null) throw new ArgumentNullException("settings");
            IntPtr raw;
            uint status;
            using (var pins = new Pins())
            {
                KilnGenerateOptions o = settings.ToNative(pins);
                status = KilnNative.kiln_model_extend_texture(Handle, ref o, left, right, top, bottom, out raw);
            }
            KilnStatusNames.Check(status);
            return new KilnImage(raw);
        }

        /// <summary>
        /// Makes <c>settings.InitImage</c> tile: offset by half its size, a band <c>band</c>
        /// pixels wide around the seams inpainted with the seamless view; blocking (a game queues
        /// it with <see cref="SubmitMakeTileable"/>).
        /// </summary>
        public KilnImage MakeTileable(KilnGenerateSettings settings, uint band)
        {
            if (settings == null) throw new ArgumentNullException("settings");
            IntPtr raw;
            uint status;
            using (var pins = new Pins())
            {
                KilnGenerateOptions o = settings.ToNative(pins);
                status = KilnNative.kiln_model_make_tileable(Handle, ref o, band, out raw);
            }
            KilnStatusNames.Check(status);
            return new KilnImage(raw);
        }

        /// <summary>
        /// A sprite cut out of <c>image</c> with the model's matting graph, or by chroma key
        /// for a model without one (<c>options.matte</c> AUTO, the default); null = defaults.
        /// </summary>
        public KilnImage MakeSprite(KilnImage image, out KilnRect bbox, KilnSpriteOptions? options = null)
        {
            if (image == null) throw new ArgumentNullException("image");
            KilnSpriteOptions o = options ?? KilnDefaults.SpriteOptions();
            o.struct_size = (uint)Marshal.SizeOf(typeof(KilnSpriteOptions));
            IntPtr raw;
            uint status;
            using (var pins = new Pins())
            {
                // A disposed image throws here, before the call: Mono's marshaller, failing on the
                // second handle, would keep the reference it had taken on the first (this model),
                // which then could never be freed.
                pins.Borrow(image.Handle);
                status = KilnNative.kiln_model_make_sprite(Handle, image.Handle, ref o, out raw, out bbox);
            }
            KilnStatusNames.Check(status);
            return new KilnImage(raw);
        }

        /// <summary>Queues a generation on Kiln's worker threads and returns at once; poll it every frame.</summary>
        public KilnJob Submit(KilnGenerateSettings settings, KilnJobSettings jobSettings = null)
        {
            return SubmitWith(settings, jobSettings,
                (ref KilnGenerateOptions o, ref KilnJobOptions jo, out ulong id) => KilnNative.kiln_job_submit(Handle, ref o, ref jo, out id));
        }

        /// <summary>
        /// A generation and its upscale as one job (what <see cref="Submit"/> makes, upscaled by
        /// <c>upscaler</c> as <see cref="KilnUpscaler.Submit"/> would upscale it), so a game asks
        /// once for a 2K or 4K texture; returns at once. The upscale wraps on this model's seamless
        /// axes (a <see cref="Seamless"/> view's, or those it was loaded with):
        /// <c>upscaleOptions.seamless</c> is ignored, since the image tiles exactly along those;
        /// <c>upscaleOptions</c> null = defaults (<see cref="KilnDefaults.UpscaleOptions"/>).
        /// <see cref="KilnJobStatus.Step"/> and <see cref="KilnJobStatus.TotalSteps"/> count the
        /// U-Net calls and then the upscale's graph runs (tiles) in one count that only goes up,
        /// the total known from submission on (raised at the first step by schedulers that call
        /// the U-Net more than once a step: PNDM's warm-up, Heun). Previews come from the
        /// generation. The job holds what it needs of this model and the upscaler, so both may be
        /// disposed once this returns; <see cref="KilnJob.Cancel"/> stops either part within one
        /// graph call.
        /// </summary>
        /// <exception cref="KilnException">INVALID_SIZE (a size this model cannot generate, a result over 16384 a side), INVALID_ARGUMENT (unknown alpha, context over 1024, ...), and <see cref="Submit"/>'s; no job is queued.</exception>
        /// <exception cref="ObjectDisposedException">This model or the upscaler was disposed; no job is queued.</exception>
        public KilnJob SubmitUpscaled(KilnGenerateSettings settings, KilnUpscaler upscaler, KilnUpscaleOptions? upscaleOptions = null, KilnJobSettings jobSettings = null)
        {
            if (upscaler == null) throw new ArgumentNullException("upscaler");
            KilnUpscaleOptions uo = upscaleOptions ?? KilnDefaults.UpscaleOptions();
            uo.struct_size = (uint)Marshal.SizeOf(typeof(KilnUpscaleOptions));
            // The upscaler is borrowed before the call: a disposed one throws there, because
            // Mono's marshaller, failing on the second handle, would keep the reference it had
            // taken on the first (this model), which then could never be freed.
            return SubmitWith(settings, jobSettings,
                (ref KilnGenerateOptions o, ref KilnJobOptions jo, out ulong id) =>
                    KilnNative.kiln_job_submit_upscaled(Handle, ref o, upscaler.Handle, ref uo, ref jo, out id),
                upscaler.Handle);
        }

        /// <summary>
        /// <see cref="ExtendTexture"/> as a job: queued on Kiln's worker threads, returns at once
        /// (progress, previews, cancel and the image as for <see cref="Submit"/>). The arguments are
        /// checked here, and the picture and settings copied before it returns.
        /// </summary>
        /// <exception cref="KilnException">INVALID_ARGUMENT (no init image, ...), INVALID_SIZE (a new size off the model's multiple), and <see cref="Submit"/>'s; no job is queued.</exception>
        public KilnJob SubmitExtendTexture(KilnGenerateSettings settings, uint left, uint right, uint top, uint bottom, KilnJobSettings jobSettings = null)
        {
            return SubmitWith(settings, jobSettings,
                (ref KilnGenerateOptions o, ref KilnJobOptions jo, out ulong id) =>
                    KilnNative.kiln_job_submit_extend_texture(Handle, ref o, left, right, top, bottom, ref jo, out id));
        }

        /// <summary>
        /// <see cref="MakeTileable"/> as a job: queued on Kiln's worker threads, returns at once
        /// (progress, previews, cancel and the image as for <see cref="Submit"/>). The arguments are
        /// checked here, and the picture and settings copied before it returns.
        /// </summary>
        /// <exception cref="KilnException">INVALID_ARGUMENT (no init image, band 0 or too wide, ...) and <see cref="Submit"/>'s; no job is queued.</exception>
        public KilnJob SubmitMakeTileable(KilnGenerateSettings settings, uint band, KilnJobSettings jobSettings = null)
        {
            return SubmitWith(settings, jobSettings,
                (ref KilnGenerateOptions o, ref KilnJobOptions jo, out ulong id) =>
                    KilnNative.kiln_job_submit_make_tileable(Handle, ref o, band, ref jo, out id));
        }

        /// <summary>A <c>kiln_job_submit*</c> call with the model and its own arguments bound.</summary>
        private delegate uint SubmitCall(ref KilnGenerateOptions options, ref KilnJobOptions jobOptions, out ulong id);

        /// <summary>
        /// The shared body of the submits: the job options and their callback state, the settings
        /// marshalled for the call, <c>borrow</c> (a second handle the call takes, or null) kept
        /// open across it, and the job (or the status thrown, with nothing queued).
        /// </summary>
        private KilnJob SubmitWith(KilnGenerateSettings settings, KilnJobSettings jobSettings, SubmitCall call, SafeHandle borrow = null)
        {
            if (settings == null) throw new ArgumentNullException("settings");
            return KilnJob.Submit(jobSettings, Handle.Sink, (ref KilnJobOptions jo, out ulong id) =>
            {
                using (var pins = new Pins())
                {
                    // A disposed second handle throws here, before the call (see SubmitUpscaled).
                    pins.Borrow(borrow);
                    KilnGenerateOptions o = settings.ToNative(pins);
                    return call(ref o, ref jo, out id);
                }
            });
        }

        /// <summary>Frees the model (jobs already submitted finish safely).</summary>
        public void Dispose() { Handle.Dispose(); }
    }

    /// <summary>One LoRA for <see cref="KilnModel.WithLoras"/>: a <c>.safetensors</c> path and its strength.</summary>
    public struct KilnLoraSpec
    {
        /// <summary>Path of the LoRA file (kohya-ss or diffusers/PEFT layout).</summary>
        public string Path;
        /// <summary>Multiplies the LoRA's delta: 1 = as trained, 0 = off, negative = inverted.</summary>
        public float Scale;
        /// <summary>
        /// The text encoders' strength (ComfyUI's strength_clip; <see cref="Scale"/> is then the
        /// U-Net's strength_model): 0 leaves the text encoders as they are; must be finite.
        /// null (the default): <see cref="Scale"/> for every module.
        /// </summary>
        public float? TextEncoderScale;
        /// <summary>A LoRA at <c>path</c> with strength <c>scale</c>.</summary>
        public KilnLoraSpec(string path, float scale = 1f) { Path = path; Scale = scale; TextEncoderScale = null; }
        /// <summary>A LoRA at <c>path</c>: U-Net modules at <c>scale</c>, text-encoder modules at <c>textEncoderScale</c> (null = <c>scale</c>).</summary>
        public KilnLoraSpec(string path, float scale, float? textEncoderScale) { Path = path; Scale = scale; TextEncoderScale = textEncoderScale; }
    }

    /// <summary>One textual-inversion embedding for <see cref="KilnModel.WithAdapters"/>.</summary>
    public struct KilnEmbeddingSpec
    {
        /// <summary>Path of the embedding's <c>.safetensors</c> file.</summary>
        public string Path;
        /// <summary>The prompt word for it; null = the file's own.</summary>
        public string Token;
        /// <summary>An embedding at <c>path</c>, used as <c>token</c> (null = the file's own).</summary>
        public KilnEmbeddingSpec(string path, string token = null) { Path = path; Token = token; }
    }
}
