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
        delegate void Init(IntPtr p);

        static T Fill<T>(Init init) where T : struct
        {
            IntPtr buf = Marshal.AllocHGlobal(Scratch);
            try
            {
                for (int i = 0; i < Scratch; i += 8) Marshal.WriteInt64(buf, i, 0);
                init(buf);
                uint librarySize = (uint)Marshal.ReadInt32(buf);
                int ours = Marshal.SizeOf(typeof(T));
                if (librarySize > Scratch)
                    throw new KilnException(KilnStatus.StructSizeMismatch, typeof(T).Name + ": the library's struct is " + librarySize + " bytes, more than this binding's scratch buffer");
                // Our layout, whatever the library's: it reads only our fields.
                Marshal.WriteInt32(buf, ours);
                return (T)Marshal.PtrToStructure(buf, typeof(T));
            }
            finally
            {
                Marshal.FreeHGlobal(buf);
            }
        }

        /// <summary><c>kiln_runtime_options_init</c>.</summary>
        public static KilnRuntimeOptions RuntimeOptions() { return Fill<KilnRuntimeOptions>(KilnNative.kiln_runtime_options_init); }
        /// <summary><c>kiln_model_load_options_init</c>.</summary>
        public static KilnModelLoadOptions ModelLoadOptions() { return Fill<KilnModelLoadOptions>(KilnNative.kiln_model_load_options_init); }
        /// <summary><c>kiln_generate_options_init</c>.</summary>
        public static KilnGenerateOptions GenerateOptions() { return Fill<KilnGenerateOptions>(KilnNative.kiln_generate_options_init); }
        /// <summary><c>kiln_job_options_init</c>.</summary>
        public static KilnJobOptions JobOptions() { return Fill<KilnJobOptions>(KilnNative.kiln_job_options_init); }
        /// <summary><c>kiln_sprite_options_init</c>.</summary>
        public static KilnSpriteOptions SpriteOptions() { return Fill<KilnSpriteOptions>(KilnNative.kiln_sprite_options_init); }
        /// <summary><c>kiln_pixel_art_options_init</c>.</summary>
        public static KilnPixelArtOptions PixelArtOptions() { return Fill<KilnPixelArtOptions>(KilnNative.kiln_pixel_art_options_init); }
        /// <summary><c>kiln_material_options_init</c>.</summary>
        public static KilnMaterialOptions MaterialOptions() { return Fill<KilnMaterialOptions>(KilnNative.kiln_material_options_init); }
    }
}
