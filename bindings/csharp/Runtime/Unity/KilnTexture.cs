// Unity only: fills RGBA32 Texture2D objects from Kiln. Unity's raw texture data starts
// with the bottom row and Kiln writes top-down with an unsigned pitch, so the rows are
// flipped by KilnPixels (plain C#, tested under Mono outside Unity).
#if UNITY_5_3_OR_NEWER
using System;
using UnityEngine;

namespace Kiln
{
    /// <summary>Texture2D helpers. Call them on the main thread (Unity's rule for textures).</summary>
    public static class KilnTexture
    {
        /// <summary>A new RGBA32 texture of the job's image; the job must have succeeded.</summary>
        public static Texture2D ToTexture(KilnJob job, bool mipChain = false, bool linear = false)
        {
            int w, h;
            job.ImageSize(out w, out h);
            var tex = new Texture2D(w, h, TextureFormat.RGBA32, mipChain, linear);
            Fill(tex, job.CopyImageBottomUp(), w, h);
            return tex;
        }

        /// <summary>Copies a succeeded job's image into <c>texture</c> (RGBA32, the image's size).</summary>
        public static void CopyTo(KilnJob job, Texture2D texture)
        {
            int w, h;
            job.ImageSize(out w, out h);
            Fill(texture, job.CopyImageBottomUp(), w, h);
        }

        /// <summary>Copies a Kiln image into <c>texture</c> (RGBA32, the image's size).</summary>
        public static void CopyTo(KilnImage image, Texture2D texture)
        {
            Fill(texture, image.ToArrayBottomUp(), image.Width, image.Height);
        }

        /// <summary>
        /// Generates straight into <c>texture</c>, blocking the calling thread for the whole
        /// generation: for editor tools. A game submits a job and polls it instead.
        /// </summary>
        public static void GenerateInto(KilnModel model, KilnGenerateSettings settings, Texture2D texture)
        {
            if (settings.Width != 0 && settings.Width != texture.width || settings.Height != 0 && settings.Height != texture.height)
                throw new ArgumentException("the texture is " + texture.width + "x" + texture.height + " but the request asks for " + settings.Width + "x" + settings.Height);
            KilnGenerateSettings request = settings.Clone();
            request.Width = (uint)texture.width;
            request.Height = (uint)texture.height;
            var pixels = new byte[texture.width * texture.height * 4];
            model.GenerateInto(request, pixels);
            KilnPixels.FlipRowsInPlace(pixels, texture.width * 4, texture.height);
            Fill(texture, pixels, texture.width, texture.height);
        }

        static void Fill(Texture2D texture, byte[] bottomUp, int width, int height)
        {
            if (texture.format != TextureFormat.RGBA32) throw new ArgumentException("Kiln fills RGBA32 textures; this one is " + texture.format);
            if (texture.width != width || texture.height != height) throw new ArgumentException("the texture is " + texture.width + "x" + texture.height + ", the image " + width + "x" + height);
            texture.LoadRawTextureData(bottomUp);
            texture.Apply();
        }
    }
}
#endif
