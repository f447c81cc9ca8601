using System;
using Kiln.Interop;

namespace Kiln
{
    /// <summary>An RGBA8 sRGB image owned by Kiln, rows top-down (C: <c>kiln_image</c>). Immutable.</summary>
    public sealed class KilnImage : IDisposable
    {
        /// <summary>The owned native handle.</summary>
        public readonly KilnImageHandle Handle;

        internal KilnImage(IntPtr raw) { Handle = new KilnImageHandle(raw); }

        /// <summary>Copies caller pixels (RGBA8, top-down, pitch 0 = width × 4) into a new Kiln image.</summary>
        public static KilnImage Create(uint width, uint height, byte[] pixels, uint rowPitch = 0)
        {
            IntPtr raw;
            uint len = pixels == null ? 0u : (uint)pixels.Length;
            KilnStatusNames.Check(KilnNative.kiln_image_create(width, height, pixels, new UIntPtr(len), new UIntPtr(rowPitch), out raw));
            return new KilnImage(raw);
        }

        /// <summary>Width in pixels.</summary>
        public int Width { get { return (int)KilnNative.kiln_image_width(Handle); } }
        /// <summary>Height in pixels.</summary>
        public int Height { get { return (int)KilnNative.kiln_image_height(Handle); } }

        /// <summary>Copies the pixels into <c>dst</c> with a row pitch (0 = width × 4), rows top-down.</summary>
        public void CopyTo(byte[] dst, int rowPitch = 0)
        {
            uint len = dst == null ? 0u : (uint)dst.Length;
            KilnStatusNames.Check(KilnNative.kiln_image_copy(Handle, dst, new UIntPtr(len), new UIntPtr((uint)rowPitch)));
        }

        /// <summary>The pixels, tightly packed, rows top-down.</summary>
        public byte[] ToArray()
        {
            var dst = new byte[Width * Height * 4];
            CopyTo(dst);
            return dst;
        }

        /// <summary>The pixels, tightly packed, rows bottom-up (Unity's Texture2D order).</summary>
        public byte[] ToArrayBottomUp()
        {
            var dst = ToArray();
            KilnPixels.FlipRowsInPlace(dst, Width * 4, Height);
            return dst;
        }

        /// <summary>Writes the image as a PNG with Kiln's encoder.</summary>
        public void WritePng(string path)
        {
            if (path == null) throw new ArgumentNullException("path");
            KilnStatusNames.Check(KilnNative.kiln_image_write_png(Handle, Utf8.ToNative(path)));
        }

        /// <summary>How visible the wrap seam is along <c>axis</c> (X or Y); about 1 or below tiles.</summary>
        public float SeamScore(KilnSeamless axis)
        {
            float score;
            KilnStatusNames.Check(KilnNative.kiln_image_seam_score(Handle, (uint)axis, out score));
            return score;
        }

        /// <summary>A sprite keyed out of a flat background; <c>options</c> null = defaults.</summary>
        public KilnImage MakeSprite(out KilnRect bbox, KilnSpriteOptions? options = null)
        {
            KilnSpriteOptions o = options ?? KilnDefaults.SpriteOptions();
            o.struct_size = (uint)System.Runtime.InteropServices.Marshal.SizeOf(typeof(KilnSpriteOptions));
            IntPtr raw;
            KilnStatusNames.Check(KilnNative.kiln_image_make_sprite(Handle, ref o, out raw, out bbox));
            return new KilnImage(raw);
        }

        /// <summary>Pixel art (grid, reduced colours); <c>options</c> null = defaults. Palettes: use KilnNative.</summary>
        public KilnImage PixelArt(KilnPixelArtOptions? options = null)
        {
            KilnPixelArtOptions o = options ?? KilnDefaults.PixelArtOptions();
            o.struct_size = (uint)System.Runtime.InteropServices.Marshal.SizeOf(typeof(KilnPixelArtOptions));
            IntPtr raw;
            KilnStatusNames.Check(KilnNative.kiln_image_pixel_art(Handle, ref o, out raw));
            return new KilnImage(raw);
        }

        /// <summary>Height and normal maps of a colour texture; <c>options</c> null = defaults.</summary>
        public void MaterialMaps(out KilnImage height, out KilnImage normal, KilnMaterialOptions? options = null)
        {
            KilnMaterialOptions o = options ?? KilnDefaults.MaterialOptions();
            o.struct_size = (uint)System.Runtime.InteropServices.Marshal.SizeOf(typeof(KilnMaterialOptions));
            IntPtr h, n;
            KilnStatusNames.Check(KilnNative.kiln_image_material_maps(Handle, ref o, out h, out n));
            height = new KilnImage(h);
            normal = new KilnImage(n);
        }

        /// <summary>Canny edges as OpenCV's <c>cv2.Canny(gray, low, high)</c> finds them: a ControlNet control image.</summary>
        public KilnImage Canny(float low = 100f, float high = 200f)
        {
            IntPtr raw;
            KilnStatusNames.Check(KilnNative.kiln_image_canny(Handle, low, high, out raw));
            return new KilnImage(raw);
        }

        /// <summary>This height map (bright = high) as a depth-ControlNet image: gray, stretched to 0..255.</summary>
        public KilnImage HeightToDepth()
        {
            IntPtr raw;
            KilnStatusNames.Check(KilnNative.kiln_image_height_to_depth(Handle, out raw));
            return new KilnImage(raw);
        }

        /// <summary>Frees the image.</summary>
        public void Dispose() { Handle.Dispose(); }
    }
}
