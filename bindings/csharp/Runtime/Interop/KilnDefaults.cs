// Default option structs from the library's own *_init functions. A newer library's
// struct may be larger than the one this binding was built with (fields are only
// appended), and *_init writes the whole of it, so it writes into a generous scratch
// buffer; the binding then keeps its own prefix and sends its own struct_size, which
// every Kiln version since that layout accepts.
using System;
using System.Runtime.InteropServices;

namespace Kiln.Interop
{
    /// <summary>Option structs filled with the library's defaults.</summary>
    public static class KilnDefaults
    {
        const int Scratch = 4096;

        // The init functions are called directly, not through a delegate: IL2CPP need not
        // support delegates bound to extern methods.
        static IntPtr Begin()
        {
            IntPtr buf = Marshal.AllocHGlobal(Scratch);
            for (int i = 0; i < Scratch; i += 8) Marshal.WriteInt64(buf, i, 0);
            return buf;
        }

        static T End<T>(IntPtr buf) where T : struct
        {
            try
            {
                uint librarySize = (uint)Marshal.ReadInt32(buf);
                if (librarySize > Scratch)
                    throw new KilnException(KilnStatus.StructSizeMismatch, typeof(T).Name + ": the library's struct is " + librarySize + " bytes, more than this binding's scratch buffer");
                // Our layout, whatever the library's: it reads only our fields.
                Marshal.WriteInt32(buf, Marshal.SizeOf(typeof(T)));
                return (T)Marshal.PtrToStructure(buf, typeof(T));
            }
            finally
            {
                Marshal.FreeHGlobal(buf);
            }
        }

        /// <summary><c>kiln_runtime_options_init</c>.</summary>
        public static KilnRuntimeOptions RuntimeOptions() { IntPtr b = Begin(); KilnNative.kiln_runtime_options_init(b); return End<KilnRuntimeOptions>(b); }
        /// <summary><c>kiln_model_load_options_init</c>.</summary>
        public static KilnModelLoadOptions ModelLoadOptions() { IntPtr b = Begin(); KilnNative.kiln_model_load_options_init(b); return End<KilnModelLoadOptions>(b); }
        /// <summary><c>kiln_generate_options_init</c>.</summary>
        public static KilnGenerateOptions GenerateOptions() { IntPtr b = Begin(); KilnNative.kiln_generate_options_init(b); return End<KilnGenerateOptions>(b); }
        /// <summary><c>kiln_job_options_init</c>.</summary>
        public static KilnJobOptions JobOptions() { IntPtr b = Begin(); KilnNative.kiln_job_options_init(b); return End<KilnJobOptions>(b); }
        /// <summary><c>kiln_sprite_options_init</c>.</summary>
        public static KilnSpriteOptions SpriteOptions() { IntPtr b = Begin(); KilnNative.kiln_sprite_options_init(b); return End<KilnSpriteOptions>(b); }
        /// <summary><c>kiln_pixel_art_options_init</c>.</summary>
        public static KilnPixelArtOptions PixelArtOptions() { IntPtr b = Begin(); KilnNative.kiln_pixel_art_options_init(b); return End<KilnPixelArtOptions>(b); }
        /// <summary><c>kiln_lora_init</c>.</summary>
        public static KilnLora Lora() { IntPtr b = Begin(); KilnNative.kiln_lora_init(b); return End<KilnLora>(b); }
        /// <summary><c>kiln_embedding_init</c>.</summary>
        public static KilnEmbedding Embedding() { IntPtr b = Begin(); KilnNative.kiln_embedding_init(b); return End<KilnEmbedding>(b); }
        /// <summary><c>kiln_control_init</c>.</summary>
        public static KilnControl Control() { IntPtr b = Begin(); KilnNative.kiln_control_init(b); return End<KilnControl>(b); }
        /// <summary><c>kiln_material_options_init</c>.</summary>
        public static KilnMaterialOptions MaterialOptions() { IntPtr b = Begin(); KilnNative.kiln_material_options_init(b); return End<KilnMaterialOptions>(b); }
        /// <summary><c>kiln_upscale_options_init</c>.</summary>
        public static KilnUpscaleOptions UpscaleOptions() { IntPtr b = Begin(); KilnNative.kiln_upscale_options_init(b); return End<KilnUpscaleOptions>(b); }
    }
}
