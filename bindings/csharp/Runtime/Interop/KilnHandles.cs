// One SafeHandle per Kiln handle: the marshaller AddRefs a SafeHandle for the length of
// every call it is passed to, so disposing it on another thread cannot free the object
// under a running call, and a forgotten handle is still freed by the finalizer.
using System;
using System.Runtime.InteropServices;

namespace Kiln.Interop
{
    /// <summary>Owns a <c>kiln_runtime *</c>; released with <c>kiln_runtime_destroy</c>.</summary>
    public sealed class KilnRuntimeHandle : SafeHandle
    {
        internal LogSink Sink;
        /// <summary>An empty handle (the marshaller's constructor).</summary>
        public KilnRuntimeHandle() : base(IntPtr.Zero, true) { }
        internal KilnRuntimeHandle(IntPtr raw, LogSink sink) : base(IntPtr.Zero, true) { SetHandle(raw); Sink = sink; }
        /// <inheritdoc/>
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        /// <inheritdoc/>
        protected override bool ReleaseHandle()
        {
            KilnNative.kiln_runtime_destroy(handle);
            if (Sink != null) Sink.Release();
            return true;
        }
    }

    /// <summary>Owns a <c>kiln_model *</c>; released with <c>kiln_model_free</c>.</summary>
    public sealed class KilnModelHandle : SafeHandle
    {
        internal LogSink Sink;
        /// <summary>An empty handle (the marshaller's constructor).</summary>
        public KilnModelHandle() : base(IntPtr.Zero, true) { }
        internal KilnModelHandle(IntPtr raw, LogSink sink) : base(IntPtr.Zero, true) { SetHandle(raw); Sink = sink; }
        /// <inheritdoc/>
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        /// <inheritdoc/>
        protected override bool ReleaseHandle()
        {
            KilnNative.kiln_model_free(handle);
            if (Sink != null) Sink.Release();
            return true;
        }
    }

    /// <summary>Owns a <c>kiln_image *</c>; released with <c>kiln_image_free</c>.</summary>
    public sealed class KilnImageHandle : SafeHandle
    {
        /// <summary>An empty handle (the marshaller's constructor).</summary>
        public KilnImageHandle() : base(IntPtr.Zero, true) { }
        internal KilnImageHandle(IntPtr raw) : base(IntPtr.Zero, true) { SetHandle(raw); }
        /// <inheritdoc/>
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        /// <inheritdoc/>
        protected override bool ReleaseHandle()
        {
            KilnNative.kiln_image_free(handle);
            return true;
        }
    }

    /// <summary>Owns a <c>kiln_upscaler *</c>; released with <c>kiln_upscaler_free</c>.</summary>
    public sealed class KilnUpscalerHandle : SafeHandle
    {
        internal LogSink Sink;
        /// <summary>An empty handle (the marshaller's constructor).</summary>
        public KilnUpscalerHandle() : base(IntPtr.Zero, true) { }
        internal KilnUpscalerHandle(IntPtr raw, LogSink sink) : base(IntPtr.Zero, true) { SetHandle(raw); Sink = sink; }
        /// <inheritdoc/>
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        /// <inheritdoc/>
        protected override bool ReleaseHandle()
        {
            KilnNative.kiln_upscaler_free(handle);
            if (Sink != null) Sink.Release();
            return true;
        }
    }
}
