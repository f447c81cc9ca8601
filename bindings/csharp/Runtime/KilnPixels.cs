// Row order. Kiln writes rows top-down; Unity's Texture2D raw data (and OpenGL) is
// bottom-up. Kiln's row pitch is unsigned, so the flip is done here, in plain C# that
// the Mono tests run, and the Unity helper only calls it.
using System;

namespace Kiln
{
    /// <summary>RGBA8 pixel-buffer helpers.</summary>
    public static class KilnPixels
    {
        /// <summary>Reverses the order of <c>height</c> rows of <c>rowBytes</c> bytes in place.</summary>
        public static void FlipRowsInPlace(byte[] pixels, int rowBytes, int height)
        {
            if (pixels == null) throw new ArgumentNullException("pixels");
            if (rowBytes < 0 || height < 0 || (long)rowBytes * height > pixels.Length)
                throw new ArgumentException("rows " + rowBytes + " x " + height + " do not fit a buffer of " + pixels.Length + " bytes");
            var tmp = new byte[rowBytes];
            for (int top = 0, bottom = height - 1; top < bottom; top++, bottom--)
            {
                Buffer.BlockCopy(pixels, top * rowBytes, tmp, 0, rowBytes);
                Buffer.BlockCopy(pixels, bottom * rowBytes, pixels, top * rowBytes, rowBytes);
                Buffer.BlockCopy(tmp, 0, pixels, bottom * rowBytes, rowBytes);
            }
        }

        /// <summary>Copies top-down RGBA8 rows (pitch <c>srcPitch</c>) to a tightly packed bottom-up buffer.</summary>
        public static byte[] ToBottomUp(byte[] topDown, int width, int height, int srcPitch)
        {
            int row = checked(width * 4);
            if (srcPitch == 0) srcPitch = row;
            if (srcPitch < row || (height > 0 && (long)srcPitch * (height - 1) + row > topDown.Length))
                throw new ArgumentException("a " + width + "x" + height + " image with pitch " + srcPitch + " does not fit " + topDown.Length + " bytes");
            var dst = new byte[checked(row * height)];
            for (int y = 0; y < height; y++)
                Buffer.BlockCopy(topDown, y * srcPitch, dst, (height - 1 - y) * row, row);
            return dst;
        }
    }
}
