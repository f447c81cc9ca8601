// Every function of include/kiln.h, one DllImport each, named exactly as in C.
// Conventions: Cdecl always; `const char *` in is a NUL-terminated UTF-8 byte[] (see
// Utf8.cs; never CharSet.Ansi, which is the ANSI code page on Windows .NET); handles in
// are SafeHandles (the marshaller keeps them alive and un-released for the call); handles
// out are `out IntPtr`, wrapped by the caller; size_t is UIntPtr; `*_init` functions take
// an IntPtr to a buffer (see KilnDefaults: a newer library may write a larger struct).
using System;
using System.Runtime.InteropServices;

namespace Kiln.Interop
{
    /// <summary>Job event callback (C: <c>kiln_job_callback</c>); runs on a Kiln worker thread.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    public delegate void KilnJobCallback(IntPtr userData, IntPtr jobEvent);

    /// <summary>Log callback (C: <c>kiln_log_fn</c>); runs on whichever thread logs.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    public delegate void KilnLogCallback(IntPtr userData, uint level, IntPtr message, UIntPtr messageLen);

    /// <summary>The raw C API. Prefer the wrappers (<see cref="Kiln.KilnRuntime"/> and friends).</summary>
    public static class KilnNative
    {
#if UNITY_IOS && !UNITY_EDITOR
        /// <summary>iOS links Kiln's static library into the player: symbols resolve in-process.</summary>
        public const string Library = "__Internal";
#else
        /// <summary>kiln.dll, libkiln.so or libkiln.dylib, found by the runtime's plugin search.</summary>
        public const string Library = "kiln";
#endif
        const CallingConvention Cc = CallingConvention.Cdecl;

        /// <summary>The header version this binding mirrors (KILN_VERSION); compare with kiln_version().</summary>
        public const uint HeaderVersion = (0 << 16) | (1 << 8) | 0;
        /// <summary>KILN_VERSION_STRING of the header this binding mirrors.</summary>
        public const string HeaderVersionString = "0.1.0";

        // Errors and versions.
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_last_error_message([In, Out] byte[] buf, UIntPtr buf_len, out UIntPtr len_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern IntPtr kiln_status_name(uint status);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_version();
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern IntPtr kiln_version_string();
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_providers_compiled();

        // Runtime.
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_runtime_options_init(IntPtr options);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_runtime_create(ref KilnRuntimeOptions options, out IntPtr runtime_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_runtime_destroy(IntPtr runtime);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_runtime_onnxruntime_version(KilnRuntimeHandle runtime, [In, Out] byte[] buf, UIntPtr buf_len, out UIntPtr len_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_runtime_onnxruntime_path(KilnRuntimeHandle runtime, [In, Out] byte[] buf, UIntPtr buf_len, out UIntPtr len_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_runtime_provider_available(KilnRuntimeHandle runtime, uint provider, out uint available_out);

        // Model.
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_load(KilnRuntimeHandle runtime, byte[] model_dir, out IntPtr model_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_model_load_options_init(IntPtr options);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_load_with(KilnRuntimeHandle runtime, byte[] model_dir, ref KilnModelLoadOptions options, out IntPtr model_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_model_free(IntPtr model);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_get_info(KilnModelHandle model, ref KilnModelInfo info_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_graph_provider(KilnModelHandle model, uint graph, [In, Out] byte[] buf, UIntPtr buf_len, out UIntPtr len_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_seamless(KilnModelHandle model, uint axes, out IntPtr model_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_lora_init(IntPtr lora);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_with_loras(KilnModelHandle model, [In] KilnLora[] loras, UIntPtr count, out IntPtr model_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_embedding_init(IntPtr embedding);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_with_adapters(KilnModelHandle model, [In] KilnLora[] loras, UIntPtr lora_count, [In] KilnEmbedding[] embeddings, UIntPtr embedding_count, out IntPtr model_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_lora_count(KilnModelHandle model, out UIntPtr count_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_lora_text_encoder_scale(KilnModelHandle model, UIntPtr index, out float scale_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_lora_get(KilnModelHandle model, UIntPtr index, out float scale_out, [In, Out] byte[] path_buf, UIntPtr path_buf_len, out UIntPtr path_len_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_generate_options_init(IntPtr options);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_generate(KilnModelHandle model, ref KilnGenerateOptions options, out IntPtr image_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_generate_into(KilnModelHandle model, ref KilnGenerateOptions options, [In, Out] byte[] pixels_out, UIntPtr pixels_len, UIntPtr row_pitch);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_extend_texture(KilnModelHandle model, ref KilnGenerateOptions options, uint left, uint right, uint top, uint bottom, out IntPtr image_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_make_tileable(KilnModelHandle model, ref KilnGenerateOptions options, uint band, out IntPtr image_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_model_make_sprite(KilnModelHandle model, KilnImageHandle image, ref KilnSpriteOptions options, out IntPtr image_out, out KilnRect bbox_out);

        // Images.
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_image_width(KilnImageHandle image);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_image_height(KilnImageHandle image);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern IntPtr kiln_image_pixels(KilnImageHandle image);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_image_copy(KilnImageHandle image, [In, Out] byte[] pixels_out, UIntPtr pixels_len, UIntPtr row_pitch);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_image_write_png(KilnImageHandle image, byte[] path);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_image_free(IntPtr image);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_image_create(uint width, uint height, byte[] pixels, UIntPtr pixels_len, UIntPtr row_pitch, out IntPtr image_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_sprite_options_init(IntPtr options);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_image_make_sprite(KilnImageHandle image, ref KilnSpriteOptions options, out IntPtr image_out, out KilnRect bbox_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_pixel_art_options_init(IntPtr options);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_image_pixel_art(KilnImageHandle image, ref KilnPixelArtOptions options, out IntPtr image_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_material_options_init(IntPtr options);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_image_material_maps(KilnImageHandle image, ref KilnMaterialOptions options, out IntPtr height_out, out IntPtr normal_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_image_seam_score(KilnImageHandle image, uint axis, out float score_out);

        // ControlNet (issue 17).
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_control_init(IntPtr control);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_image_canny(KilnImageHandle image, float low, float high, out IntPtr edges_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_image_height_to_depth(KilnImageHandle image, out IntPtr depth_out);

        // Upscaler (super-resolution graphs). kiln_upscaler_upscale blocks (kiln_job_submit_upscale
        // queues it); kiln_upscaler_cancel may be called from any other thread while it runs.
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_upscale_options_init(IntPtr options);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_upscaler_load(KilnRuntimeHandle runtime, byte[] path, out IntPtr upscaler_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_upscaler_free(IntPtr upscaler);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_upscaler_scale(KilnUpscalerHandle upscaler, out uint scale_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_upscaler_upscale(KilnUpscalerHandle upscaler, KilnImageHandle image, ref KilnUpscaleOptions options, out IntPtr image_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_upscaler_cancel(KilnUpscalerHandle upscaler);

        // Jobs (ids are generation-counted u64s: a stale id is a status, never a crash).
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern void kiln_job_options_init(IntPtr options);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_submit(KilnModelHandle model, ref KilnGenerateOptions options, ref KilnJobOptions job_options, out ulong job_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_submit_upscaled(KilnModelHandle model, ref KilnGenerateOptions options, KilnUpscalerHandle upscaler, ref KilnUpscaleOptions upscale_options, ref KilnJobOptions job_options, out ulong job_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_submit_extend_texture(KilnModelHandle model, ref KilnGenerateOptions options, uint left, uint right, uint top, uint bottom, ref KilnJobOptions job_options, out ulong job_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_submit_make_tileable(KilnModelHandle model, ref KilnGenerateOptions options, uint band, ref KilnJobOptions job_options, out ulong job_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_submit_upscale(KilnUpscalerHandle upscaler, KilnImageHandle image, ref KilnUpscaleOptions options, ref KilnJobOptions job_options, out ulong job_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_submit_model_load(KilnRuntimeHandle runtime, byte[] model_dir, ref KilnModelLoadOptions options, ref KilnJobOptions job_options, out ulong job_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_submit_with_adapters(KilnModelHandle model, [In] KilnLora[] loras, UIntPtr lora_count, [In] KilnEmbedding[] embeddings, UIntPtr embedding_count, ref KilnJobOptions job_options, out ulong job_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_submit_seamless(KilnModelHandle model, uint axes, ref KilnJobOptions job_options, out ulong job_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_submit_upscaler_load(KilnRuntimeHandle runtime, byte[] path, ref KilnJobOptions job_options, out ulong job_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_poll(ulong job, ref KilnJobProgress progress_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_wait(ulong job, uint timeout_ms, out uint state_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_cancel(ulong job);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_error_message(ulong job, [In, Out] byte[] buf, UIntPtr buf_len, out UIntPtr len_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_image_size(ulong job, out uint width_out, out uint height_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_copy_image(ulong job, [In, Out] byte[] pixels_out, UIntPtr pixels_len, UIntPtr row_pitch);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_copy_preview(ulong job, [In, Out] byte[] pixels_out, UIntPtr pixels_len, UIntPtr row_pitch, out uint step_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_model(ulong job, out IntPtr model_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_upscaler(ulong job, out IntPtr upscaler_out);
        [DllImport(Library, CallingConvention = Cc, ExactSpelling = true)]
        public static extern uint kiln_job_free(ulong job);
    }
}
